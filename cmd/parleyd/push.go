package main

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/parley-im/parley/push"
)

// pushFlags configure the push providers (docs/operations.md, "Push
// notifications"). Each provider is on when its identifying flag is set.
type pushFlags struct {
	apnsKeyFile, apnsKeyID, apnsTeamID, apnsTopic *string
	apnsProduction                                *bool
	fcmKeyFile                                    *string
	webhook, webhookPrivate                       *bool
	webhookSecretFile                             *string
	interval                                      *time.Duration
	workers, queue, attempts                      *int
}

// addPushFlags defines the push flags on fs, with their defaults from the
// environment.
func addPushFlags(fs *flag.FlagSet) (*pushFlags, error) {
	var f pushFlags
	f.apnsKeyID = fs.String("apns-key-id", env("PARLEY_APNS_KEY_ID", ""), "APNs signing key `id` (10 characters); turns APNs pushes on")
	f.apnsKeyFile = fs.String("apns-key-file", env("PARLEY_APNS_KEY_FILE", ""), "`file` holding the APNs .p8 signing key (or set PARLEY_APNS_KEY to its PEM; never a flag)")
	f.apnsTeamID = fs.String("apns-team-id", env("PARLEY_APNS_TEAM_ID", ""), "Apple developer team `id` (10 characters)")
	f.apnsTopic = fs.String("apns-topic", env("PARLEY_APNS_TOPIC", ""), "the iOS app's bundle `id` (apns-topic)")
	f.apnsProduction = fs.Bool("apns-production", env("PARLEY_APNS_PRODUCTION", "") == "1", "push through APNs production (App Store and TestFlight builds); default: the sandbox")
	f.fcmKeyFile = fs.String("fcm-service-account-file", env("PARLEY_FCM_SERVICE_ACCOUNT_FILE", ""), "`file` holding the Firebase service account's JSON key (or set PARLEY_FCM_SERVICE_ACCOUNT to the JSON); turns FCM pushes on")
	f.webhook = fs.Bool("push-webhook", env("PARLEY_PUSH_WEBHOOK", "") == "1", "push to the UnifiedPush-compatible https endpoints devices register")
	f.webhookPrivate = fs.Bool("push-webhook-allow-private", env("PARLEY_PUSH_WEBHOOK_ALLOW_PRIVATE", "") == "1", "let registered webhook URLs reach loopback and private addresses (a distributor on your own network); off by default")
	f.webhookSecretFile = fs.String("push-webhook-secret-file", env("PARLEY_PUSH_WEBHOOK_SECRET_FILE", ""), "`file` holding the push webhook signing secret, at least 16 bytes (or set PARLEY_PUSH_WEBHOOK_SECRET; never a flag)")
	interval, err := envDuration("PARLEY_PUSH_INTERVAL", push.DefaultInterval)
	if err != nil {
		return nil, err
	}
	f.interval = fs.Duration("push-interval", interval, "least time between two pushes to one offline device: the messages in between go in one push")
	for _, d := range []struct {
		v         **int
		name, env string
		def       int
		usage     string
	}{
		{&f.workers, "push-workers", "PARLEY_PUSH_WORKERS", push.DefaultWorkers, "pushes handed to providers at once"},
		{&f.queue, "push-queue", "PARLEY_PUSH_QUEUE", push.DefaultQueue, "devices with a push pending before more wait on their shards"},
		{&f.attempts, "push-attempts", "PARLEY_PUSH_ATTEMPTS", push.DefaultAttempts, "attempts per push while the provider throttles or fails (then again an interval later)"},
	} {
		def, err := envInt(d.env, d.def)
		if err != nil {
			return nil, err
		}
		*d.v = fs.Int(d.name, def, d.usage)
	}
	return &f, nil
}

// config turns the flags into the node's push.Config; no provider set
// means no push. getenv reads the secrets' variables and readFile their
// files.
func (f *pushFlags) config(getenv func(string) string, readFile func(string) ([]byte, error)) (push.Config, error) {
	var errs []error
	cfg := push.Config{Interval: *f.interval, Workers: *f.workers, Queue: *f.queue, Attempts: *f.attempts}
	for _, c := range []struct {
		name string
		v    int
	}{{"--push-workers", *f.workers}, {"--push-queue", *f.queue}, {"--push-attempts", *f.attempts}} {
		if c.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want 1 or more", c.name, c.v))
		}
	}
	if *f.interval <= 0 {
		errs = append(errs, fmt.Errorf("--push-interval %v: want more than 0", *f.interval))
	}
	if *f.apnsKeyID != "" {
		key, err := secret("APNs signing key", *f.apnsKeyFile, "--apns-key-file", "PARLEY_APNS_KEY", getenv, readFile)
		if err != nil {
			errs = append(errs, err)
		}
		apns, err := push.NewAPNs(push.APNsConfig{Key: key, KeyID: *f.apnsKeyID, TeamID: *f.apnsTeamID, Topic: *f.apnsTopic, Production: *f.apnsProduction})
		if err != nil {
			errs = append(errs, err)
		} else {
			cfg.APNs = apns
		}
	} else if *f.apnsKeyFile != "" || *f.apnsTeamID != "" || *f.apnsTopic != "" {
		errs = append(errs, errors.New("--apns-key-file, --apns-team-id and --apns-topic need --apns-key-id"))
	}
	if *f.fcmKeyFile != "" || getenv("PARLEY_FCM_SERVICE_ACCOUNT") != "" {
		key, err := secret("FCM service-account key", *f.fcmKeyFile, "--fcm-service-account-file", "PARLEY_FCM_SERVICE_ACCOUNT", getenv, readFile)
		if err != nil {
			errs = append(errs, err)
		} else if fcm, err := push.NewFCM(push.FCMConfig{ServiceAccount: key}); err != nil {
			errs = append(errs, err)
		} else {
			cfg.FCM = fcm
		}
	}
	if *f.webhook {
		key, err := secret("push webhook secret", *f.webhookSecretFile, "--push-webhook-secret-file", "PARLEY_PUSH_WEBHOOK_SECRET", getenv, readFile)
		if err != nil {
			errs = append(errs, err)
		} else if wh, err := push.NewWebhook(push.WebhookConfig{Secret: key, AllowPrivate: *f.webhookPrivate}); err != nil {
			errs = append(errs, err)
		} else {
			cfg.Webhook = wh
		}
	} else if *f.webhookSecretFile != "" || *f.webhookPrivate {
		errs = append(errs, errors.New("--push-webhook-secret-file and --push-webhook-allow-private need --push-webhook"))
	}
	if err := errors.Join(errs...); err != nil {
		return push.Config{}, err
	}
	return cfg, nil
}
