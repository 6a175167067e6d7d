package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/parley-im/parley/sms"
)

// smsFlags choose and configure the verification-code sender
// (docs/operations.md, "SMS gateway").
type smsFlags struct {
	kind, url, sid, tokenFile, from, service, secretFile, text *string
	workers, queue, attempts                                   *int
	attemptTimeout, deadline                                   *time.Duration
}

// addSMSFlags defines the SMS flags on fs, with their defaults from the
// environment.
func addSMSFlags(fs *flag.FlagSet) (*smsFlags, error) {
	var f smsFlags
	f.kind = fs.String("sms", env("PARLEY_SMS", "log"), "verification code `sender`: log (the log, for development), twilio (a Twilio-compatible Messages API) or webhook (a signed POST)")
	f.url = fs.String("sms-url", env("PARLEY_SMS_URL", ""), "the gateway's `URL`: the API's base for twilio (default "+sms.DefaultTwilioURL+"), the endpoint for webhook; https, or http to loopback only")
	f.sid = fs.String("twilio-account-sid", env("PARLEY_TWILIO_ACCOUNT_SID", ""), "Twilio account `SID`")
	f.tokenFile = fs.String("twilio-auth-token-file", env("PARLEY_TWILIO_AUTH_TOKEN_FILE", ""), "`file` holding the Twilio auth token (or set PARLEY_TWILIO_AUTH_TOKEN; never a flag)")
	f.from = fs.String("sms-from", env("PARLEY_SMS_FROM", ""), "Twilio sender: a `number` of the account (E.164) or an alphanumeric sender id")
	f.service = fs.String("twilio-messaging-service-sid", env("PARLEY_TWILIO_MESSAGING_SERVICE_SID", ""), "Twilio messaging service `SID`, instead of --sms-from")
	f.secretFile = fs.String("webhook-secret-file", env("PARLEY_WEBHOOK_SECRET_FILE", ""), "`file` holding the webhook signing secret, at least 16 bytes (or set PARLEY_WEBHOOK_SECRET; never a flag)")
	f.text = fs.String("sms-text", env("PARLEY_SMS_TEXT", sms.DefaultText), "the message, with {code} where the code goes")
	for _, d := range []struct {
		v         **int
		name, env string
		def       int
		usage     string
	}{
		{&f.workers, "sms-workers", "PARLEY_SMS_WORKERS", sms.DefaultWorkers, "codes handed to the gateway at once"},
		{&f.queue, "sms-queue", "PARLEY_SMS_QUEUE", sms.DefaultQueue, "codes waiting for the gateway before more are refused (CODE_DELIVERY_FAILED)"},
		{&f.attempts, "sms-attempts", "PARLEY_SMS_ATTEMPTS", sms.DefaultAttempts, "attempts per code when the gateway is throttling, failing or slow"},
	} {
		def, err := envInt(d.env, d.def)
		if err != nil {
			return nil, err
		}
		*d.v = fs.Int(d.name, def, d.usage)
	}
	for _, d := range []struct {
		v         **time.Duration
		name, env string
		def       time.Duration
		usage     string
	}{
		{&f.attemptTimeout, "sms-attempt-timeout", "PARLEY_SMS_ATTEMPT_TIMEOUT", sms.DefaultAttemptTimeout, "how long one attempt may take"},
		{&f.deadline, "sms-deadline", "PARLEY_SMS_DEADLINE", sms.DefaultDeadline, "how long a code may take, all attempts together (at most 10s: clients wait that long)"},
	} {
		def, err := envDuration(d.env, d.def)
		if err != nil {
			return nil, err
		}
		*d.v = fs.Duration(d.name, def, d.usage)
	}
	return &f, nil
}

// config turns the flags into the node's sms.Config; its Gateway is nil
// for the log sender. getenv reads the secrets' variables and readFile
// their files.
func (f *smsFlags) config(getenv func(string) string, readFile func(string) ([]byte, error)) (sms.Config, error) {
	var errs []error
	for _, c := range []struct {
		name string
		v    int
	}{{"--sms-workers", *f.workers}, {"--sms-queue", *f.queue}, {"--sms-attempts", *f.attempts}} {
		if c.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want 1 or more", c.name, c.v))
		}
	}
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"--sms-attempt-timeout", *f.attemptTimeout}, {"--sms-deadline", *f.deadline}} {
		if c.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want more than 0", c.name, c.v))
		}
	}
	if !strings.Contains(*f.text, sms.CodePlaceholder) {
		errs = append(errs, fmt.Errorf("--sms-text %q: no %s where the code goes", *f.text, sms.CodePlaceholder))
	}
	// The flags that belong to one sender only.
	type named struct{ name, v string }
	twilioOnly := []named{{"--twilio-account-sid", *f.sid}, {"--twilio-auth-token-file", *f.tokenFile},
		{"--sms-from", *f.from}, {"--twilio-messaging-service-sid", *f.service}}
	webhookOnly := []named{{"--webhook-secret-file", *f.secretFile}}
	misplaced := func(flags []named, kind string) {
		for _, fl := range flags {
			if fl.v != "" {
				errs = append(errs, fmt.Errorf("%s is for --sms %s", fl.name, kind))
			}
		}
	}
	cfg := sms.Config{
		Text: *f.text, Workers: *f.workers, Queue: *f.queue, Attempts: *f.attempts,
		AttemptTimeout: *f.attemptTimeout, Deadline: *f.deadline,
	}
	switch *f.kind {
	case "log":
		if *f.url != "" {
			errs = append(errs, errors.New("--sms-url needs --sms twilio or webhook"))
		}
		misplaced(twilioOnly, "twilio")
		misplaced(webhookOnly, "webhook")
	case "twilio":
		misplaced(webhookOnly, "webhook")
		token, err := secret("Twilio auth token", *f.tokenFile, "--twilio-auth-token-file", "PARLEY_TWILIO_AUTH_TOKEN", getenv, readFile)
		if err != nil {
			errs = append(errs, err)
			token = []byte("(reported above)") // so that the other problems are reported too
		}
		tw, err := sms.NewTwilio(sms.TwilioConfig{BaseURL: *f.url, AccountSID: *f.sid, AuthToken: string(token), From: *f.from, MessagingServiceSID: *f.service})
		if err != nil {
			errs = append(errs, err)
		}
		cfg.Gateway = tw
	case "webhook":
		misplaced(twilioOnly, "twilio")
		key, err := secret("webhook secret", *f.secretFile, "--webhook-secret-file", "PARLEY_WEBHOOK_SECRET", getenv, readFile)
		if err != nil {
			errs = append(errs, err)
			key = make([]byte, sms.MinSecret) // so that the other problems are reported too
		}
		if *f.url == "" {
			errs = append(errs, errors.New("--sms webhook needs --sms-url"))
		} else if wh, err := sms.NewWebhook(sms.WebhookConfig{URL: *f.url, Secret: key}); err != nil {
			errs = append(errs, err)
		} else {
			cfg.Gateway = wh
		}
	default:
		errs = append(errs, fmt.Errorf("--sms %q: want log, twilio or webhook", *f.kind))
	}
	if err := errors.Join(errs...); err != nil {
		return sms.Config{}, err
	}
	return cfg, nil
}

// secret reads a credential from its file, or else from its environment
// variable; never from a flag, so it does not show in the process list.
// Surrounding white space (a file's final newline) is dropped.
func secret(what, file, flagName, envName string, getenv func(string) string, readFile func(string) ([]byte, error)) ([]byte, error) {
	fromEnv := getenv(envName)
	switch {
	case file != "" && fromEnv != "":
		return nil, fmt.Errorf("the %s comes from %s or from %s, not both", what, flagName, envName)
	case file != "":
		b, err := readFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		if b = []byte(strings.TrimSpace(string(b))); len(b) == 0 {
			return nil, fmt.Errorf("%s: %s is empty", flagName, file)
		}
		return b, nil
	case fromEnv != "":
		return []byte(strings.TrimSpace(fromEnv)), nil
	}
	return nil, fmt.Errorf("no %s: give %s or set %s", what, flagName, envName)
}

// oneLine joins the lines of a multi-line error (errors.Join) so that a
// bad configuration is reported on one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
