package sms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// DefaultTwilioURL is Twilio's API.
const DefaultTwilioURL = "https://api.twilio.com"

// TwilioConfig configures a Twilio gateway: Twilio itself, or any gateway
// that speaks its Messages API.
type TwilioConfig struct {
	// BaseURL is the API's base URL, scheme and host (and a path prefix,
	// if any): https, or plain http to a loopback address only. Default
	// DefaultTwilioURL.
	BaseURL string
	// AccountSID and AuthToken are the account's credentials (HTTP basic
	// authentication). Required. The token is never logged.
	AccountSID, AuthToken string
	// From is the sender: a phone number of the account (E.164) or an
	// alphanumeric sender id. Exactly one of From and MessagingServiceSID
	// is required.
	From string
	// MessagingServiceSID names a messaging service, which picks the
	// sender itself.
	MessagingServiceSID string
	// HTTPClient makes the requests; nil means a client of the gateway's
	// own, which follows no redirects. Timeouts come from the Sender.
	HTTPClient *http.Client
}

// Twilio hands messages to a Twilio-compatible Messages API:
// POST {BaseURL}/2010-04-01/Accounts/{AccountSID}/Messages.json with the
// form fields To, Body, and From or MessagingServiceSid. 2xx (201) means
// the gateway took the message.
type Twilio struct {
	endpoint   string
	sid, token string
	from, mss  string
	client     *http.Client
}

// NewTwilio returns a Twilio gateway, or an error naming every problem
// with cfg.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultTwilioURL
	}
	var errs []error
	u, err := checkURL(cfg.BaseURL)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.AccountSID == "" {
		errs = append(errs, errors.New("no account SID"))
	} else if strings.ContainsAny(cfg.AccountSID, "/?#% ") {
		errs = append(errs, fmt.Errorf("account SID %q has characters an SID does not", cfg.AccountSID))
	}
	if cfg.AuthToken == "" {
		errs = append(errs, errors.New("no auth token"))
	}
	if (cfg.From == "") == (cfg.MessagingServiceSID == "") {
		errs = append(errs, errors.New("want exactly one of a sender (From) and a messaging service SID"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sms: twilio: %w", err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newHTTPClient(DefaultWorkers)
	}
	return &Twilio{
		endpoint: strings.TrimSuffix(u.String(), "/") + "/2010-04-01/Accounts/" + url.PathEscape(cfg.AccountSID) + "/Messages.json",
		sid:      cfg.AccountSID,
		token:    cfg.AuthToken,
		from:     cfg.From,
		mss:      cfg.MessagingServiceSID,
		client:   cfg.HTTPClient,
	}, nil
}

// Name returns "twilio".
func (t *Twilio) Name() string { return "twilio" }

// Send implements Gateway.
func (t *Twilio) Send(ctx context.Context, m Message) error {
	form := url.Values{"To": {m.Phone}, "Body": {m.Text}}
	if t.mss != "" {
		form.Set("MessagingServiceSid", t.mss)
	} else {
		form.Set("From", t.from)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("sms: twilio: %w", err)
	}
	req.SetBasicAuth(t.sid, t.token)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	status, header, body, err := roundTrip(t.client, req)
	if err != nil {
		return fmt.Errorf("sms: twilio: %w", err)
	}
	if status/100 == 2 {
		return nil
	}
	return twilioError(status, header, body)
}

// twilioConfigCodes are Twilio error codes of a 400 answer that are about
// the request's sender or credentials, not about the number: the
// operator's to fix.
var twilioConfigCodes = map[int]bool{
	20003: true, // authentication failed
	21212: true, // invalid From number
	21602: true, // message body required
	21603: true, // From required
	21606: true, // From is not an SMS-capable number of the account
}

// twilioError classifies a Twilio answer that did not take the message.
// Twilio refuses a number with 400 and an error code (21211 invalid To,
// 21408 region not enabled, 21610 unsubscribed, 21614 not a mobile …).
func twilioError(status int, header http.Header, body []byte) *GatewayError {
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e) // a body that is not Twilio's JSON leaves e zero
	ge := &GatewayError{Status: status, Message: cut(e.Message), RetryAfter: retryAfter(header)}
	if e.Code != 0 {
		ge.Code = strconv.Itoa(e.Code)
	}
	ge.Class = classify(status, status == http.StatusBadRequest && !twilioConfigCodes[e.Code])
	return ge
}
