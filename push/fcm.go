package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// fcmScope is the OAuth 2 scope of the FCM HTTP v1 API.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCMConfig configures the FCM provider (the HTTP v1 API with a
// service-account key).
type FCMConfig struct {
	// ServiceAccount is the service account's JSON key, as the Firebase
	// console downloads it. Required; never logged. Its project_id names
	// the project, and its token_uri where access tokens come from.
	ServiceAccount []byte
	// Endpoint replaces the API's base URL, such as
	// "https://127.0.0.1:8443" for a test server. Default
	// "https://fcm.googleapis.com".
	Endpoint string
	// HTTPClient makes the requests, the access-token ones included; nil
	// means a client of the provider's own. Tests trust their own server
	// with it.
	HTTPClient *http.Client
	// Now is the clock for Retry-After dates; nil means time.Now.
	Now func() time.Time
}

// FCM pushes to Android (and other Firebase) apps through the FCM HTTP v1
// API. Access tokens are made from the service-account key (a signed JWT
// exchanged at the key's token_uri) and reused until they expire.
type FCM struct {
	url    string
	tokens oauth2.TokenSource
	client *http.Client
	now    func() time.Time
}

// NewFCM returns the FCM provider, or an error naming every problem with
// cfg (never the key's content).
func NewFCM(cfg FCMConfig) (*FCM, error) {
	var errs []error
	var key struct {
		ProjectID string `json:"project_id"`
	}
	if err := json.Unmarshal(cfg.ServiceAccount, &key); err != nil {
		errs = append(errs, errors.New("the service-account key is not JSON"))
	} else if key.ProjectID == "" {
		errs = append(errs, errors.New("the service-account key names no project_id"))
	}
	jwt, err := google.JWTConfigFromJSON(cfg.ServiceAccount, fcmScope)
	if err != nil {
		errs = append(errs, errors.New("the service-account key is not a service account's (type, client_email, private_key)"))
	}
	if cfg.Endpoint != "" {
		if _, err := checkURL(cfg.Endpoint, true); err != nil {
			errs = append(errs, fmt.Errorf("endpoint: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("push: fcm: %w", err)
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "https://fcm.googleapis.com"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newHTTPClient(nil)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, cfg.HTTPClient)
	return &FCM{
		url:    strings.TrimSuffix(cfg.Endpoint, "/") + "/v1/projects/" + key.ProjectID + "/messages:send",
		tokens: jwt.TokenSource(ctx),
		client: cfg.HTTPClient,
		now:    cfg.Now,
	}, nil
}

// Name returns "fcm".
func (f *FCM) Name() string { return "fcm" }

// fcmRequest is the body of messages:send ([S-19-5]): a data message of
// high priority.
type fcmRequest struct {
	Message fcmMessage `json:"message"`
}

type fcmMessage struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android fcmAndroid        `json:"android"`
}

type fcmAndroid struct {
	Priority    string `json:"priority"`
	CollapseKey string `json:"collapse_key"`
	TTL         string `json:"ttl"`
}

// fcmError is the error body of the API.
type fcmError struct {
	Error struct {
		Status  string `json:"status"`
		Message string `json:"message"`
		Details []struct {
			ErrorCode string `json:"errorCode"`
		} `json:"details"`
	} `json:"error"`
}

// Send implements Provider.
func (f *FCM) Send(ctx context.Context, n Notification) error {
	data := map[string]string{"count": strconv.FormatUint(n.Count, 10)}
	if n.ShowSender {
		data["sender"] = strconv.FormatUint(n.Sender, 10)
		data["group"] = strconv.FormatUint(n.Group, 10)
	}
	body, err := json.Marshal(fcmRequest{Message: fcmMessage{
		Token: n.Token, Data: data,
		Android: fcmAndroid{Priority: "high", CollapseKey: "parley", TTL: "86400s"},
	}})
	if err != nil {
		return fmt.Errorf("push: fcm: %w", err)
	}
	tok, err := f.tokens.Token()
	if err != nil {
		// The token endpoint failed: retried, as the service being down.
		return &Error{Provider: "fcm", Reason: "access token: " + cut(oauthReason(err)), Class: ClassUnavailable}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push: fcm: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	tok.SetAuthHeader(req)
	res, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("push: fcm: %w", err)
	}
	answer := readAnswer(res.Body)
	_ = res.Body.Close()
	if res.StatusCode/100 == 2 {
		return nil
	}
	var e fcmError
	_ = json.Unmarshal(answer, &e)
	reason := e.Error.Status
	invalid := res.StatusCode == http.StatusNotFound
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" {
			reason = d.ErrorCode
		}
		if d.ErrorCode == "UNREGISTERED" {
			invalid = true
		}
	}
	return &Error{Provider: "fcm", Status: res.StatusCode, Reason: cut(reason), Class: classify(res.StatusCode, invalid),
		RetryAfter: retryAfter(res.Header, f.now())}
}

// oauthReason returns what may be logged of a token error: the OAuth
// error code, never the request (which holds the signed assertion).
func oauthReason(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return re.ErrorCode
		}
		if re.Response != nil {
			return re.Response.Status
		}
	}
	return "failed"
}
