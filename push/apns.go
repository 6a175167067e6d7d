package push

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
)

// APNsConfig configures the APNs provider, with token-based
// authentication (a .p8 signing key from the Apple developer account).
type APNsConfig struct {
	// Key is the .p8 signing key (PEM, PKCS#8). Required; never logged.
	Key []byte
	// KeyID is the key's 10-character id. Required.
	KeyID string
	// TeamID is the developer team's 10-character id. Required.
	TeamID string
	// Topic is the app's bundle id (apns-topic). Required.
	Topic string
	// Production selects api.push.apple.com; false selects the sandbox
	// (development builds of the app).
	Production bool
	// Host replaces the service's address, such as
	// "https://127.0.0.1:8443" for a test server. Default: by Production.
	Host string
	// TLS is the TLS configuration towards the service; nil means the
	// system's roots. Tests trust their own server with it.
	TLS *tls.Config
	// Expiration is how long APNs keeps trying a push to a device that is
	// off. Default 24 hours.
	Expiration time.Duration
	// Now is the clock for expirations; nil means time.Now.
	Now func() time.Time
}

// APNs pushes to Apple devices through the APNs HTTP/2 API.
type APNs struct {
	client     *apns2.Client
	topic      string
	expiration time.Duration
	now        func() time.Time
}

// NewAPNs returns the APNs provider, or an error naming every problem
// with cfg (never the key's bytes).
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	var errs []error
	key, err := token.AuthKeyFromBytes(cfg.Key)
	if err != nil {
		errs = append(errs, errors.New("the signing key is not a PKCS#8 EC key in PEM (.p8)"))
	}
	for _, f := range []struct{ name, v string }{{"key id", cfg.KeyID}, {"team id", cfg.TeamID}, {"topic (bundle id)", cfg.Topic}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("no %s", f.name))
		}
	}
	if cfg.Expiration < 0 {
		errs = append(errs, fmt.Errorf("negative expiration %v", cfg.Expiration))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("push: apns: %w", err)
	}
	if cfg.Expiration == 0 {
		cfg.Expiration = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID})
	if cfg.Production {
		c.Production()
	} else {
		c.Development()
	}
	if cfg.Host != "" {
		c.Host = cfg.Host
	}
	tlsConfig := cfg.TLS
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	// apns2's own transport dials with a configuration of its own; this
	// one takes ours, with the same HTTP/2 health checks.
	c.HTTPClient = &http.Client{Transport: &http2.Transport{TLSClientConfig: tlsConfig, ReadIdleTimeout: apns2.ReadIdleTimeout}}
	return &APNs{client: c, topic: cfg.Topic, expiration: cfg.Expiration, now: cfg.Now}, nil
}

// Name returns "apns".
func (a *APNs) Name() string { return "apns" }

// apnsPayload is the body of an APNs push ([S-19-5]).
type apnsPayload struct {
	APS    apnsAPS     `json:"aps"`
	Parley payloadData `json:"parley"`
}

type apnsAPS struct {
	Alert          apnsAlert `json:"alert"`
	Badge          uint64    `json:"badge"`
	Sound          string    `json:"sound"`
	MutableContent int       `json:"mutable-content"`
}

type apnsAlert struct {
	LocKey  string   `json:"loc-key"`
	LocArgs []string `json:"loc-args"`
}

// payloadData is what a push says, in the APNs payload's "parley" and in
// the webhook's body.
type payloadData struct {
	Count  uint64 `json:"count"`
	Sender uint64 `json:"sender,omitempty"`
	Group  uint64 `json:"group,omitempty"`
}

func dataOf(n Notification) payloadData {
	d := payloadData{Count: n.Count}
	if n.ShowSender {
		d.Sender, d.Group = n.Sender, n.Group
	}
	return d
}

// Send implements Provider.
func (a *APNs) Send(ctx context.Context, n Notification) error {
	count := strconv.FormatUint(n.Count, 10)
	res, err := a.client.PushWithContext(ctx, &apns2.Notification{
		DeviceToken: n.Token,
		Topic:       a.topic,
		CollapseID:  "parley",
		Priority:    apns2.PriorityHigh,
		PushType:    apns2.PushTypeAlert,
		Expiration:  a.now().Add(a.expiration),
		Payload: apnsPayload{
			APS: apnsAPS{
				Alert: apnsAlert{LocKey: "PARLEY_NEW_MESSAGES", LocArgs: []string{count}},
				Badge: n.Count, Sound: "default", MutableContent: 1,
			},
			Parley: dataOf(n),
		},
	})
	if err != nil {
		return fmt.Errorf("push: apns: %w", err)
	}
	if res.Sent() {
		return nil
	}
	invalid := res.StatusCode == http.StatusGone || res.Reason == apns2.ReasonBadDeviceToken || res.Reason == apns2.ReasonUnregistered
	return &Error{Provider: "apns", Status: res.StatusCode, Reason: cut(res.Reason), Class: classify(res.StatusCode, invalid)}
}
