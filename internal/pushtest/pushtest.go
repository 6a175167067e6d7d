// Package pushtest is a fake push service for tests: one HTTP/2 TLS
// server on loopback that answers as APNs (POST /3/device/TOKEN), as the
// FCM HTTP v1 API (POST /v1/projects/P/messages:send, with its OAuth
// token endpoint at /token) and as a webhook endpoint (POST /hook/…), each
// as the real service does for a success, a bad token, throttling and an
// outage. It records every push it took and lets a test wait for them by
// event, never by sleeping; it also makes the credentials the providers
// need (an APNs .p8 key, an FCM service-account key).
//
// Threading: a Server's methods are safe for concurrent use; its handler
// runs on the HTTP server's goroutines. The helpers that take a
// testing.TB call Fatal and belong to the test's goroutine.
package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Mode is how the server answers pushes to one token.
type Mode uint8

// Modes.
const (
	OK        Mode = iota // take the push
	BadToken              // APNs 410 Unregistered, FCM 404 UNREGISTERED, webhook 410
	Throttled             // 429 with Retry-After: 1
	Down                  // 503
	Hang                  // answer nothing until Release (or the request is cancelled)
)

// Push is one push the server took.
type Push struct {
	Provider string // "apns", "fcm" or "webhook"
	Token    string
	Count    uint64
	Sender   uint64 // 0 when the push named none
	Group    uint64
	Header   http.Header
	Body     []byte
}

// Server is the fake push service.
type Server struct {
	srv    *httptest.Server
	secret []byte

	mu       sync.Mutex
	modes    map[string]Mode // guarded by mu; by token
	def      Mode            // guarded by mu; for other tokens
	pushes   []Push          // guarded by mu
	attempts map[string]int  // guarded by mu; requests per token
	changed  chan struct{}   // closed and replaced on every change; guarded by mu
	release  chan struct{}   // closed by Release
	released bool            // guarded by mu
}

// WebhookSecret is the secret the server checks webhook signatures with.
var WebhookSecret = []byte("pushtest webhook secret, 32 byte")

// Start starts a server on loopback and stops it when the test ends.
func Start(t testing.TB) *Server {
	s := &Server{secret: WebhookSecret, modes: map[string]Mode{}, attempts: map[string]int{},
		changed: make(chan struct{}), release: make(chan struct{})}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.EnableHTTP2 = true
	s.srv.StartTLS()
	t.Cleanup(func() {
		s.Release()
		s.srv.Close()
	})
	return s
}

// URL returns the server's base URL, https://127.0.0.1:port.
func (s *Server) URL() string { return s.srv.URL }

// WebhookURL returns a webhook endpoint of the server for one device.
func (s *Server) WebhookURL(name string) string { return s.srv.URL + "/hook/" + name }

// TLS returns a client TLS configuration that trusts the server.
func (s *Server) TLS() *tls.Config {
	return s.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

// CertPEM returns the server's certificate in PEM, for a process that
// should trust it (SSL_CERT_FILE).
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Client returns an HTTP client that trusts the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// SetMode sets how pushes to token are answered.
func (s *Server) SetMode(token string, m Mode) {
	s.mu.Lock()
	s.modes[token] = m
	s.mu.Unlock()
}

// SetDefault sets how pushes to tokens with no mode of their own are
// answered.
func (s *Server) SetDefault(m Mode) {
	s.mu.Lock()
	s.def = m
	s.mu.Unlock()
}

// Release answers every hanging request, and those to come, with 503.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.released {
		s.released = true
		close(s.release)
	}
}

// Pushes returns the pushes taken so far.
func (s *Server) Pushes() []Push {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Push(nil), s.pushes...)
}

// PushesTo returns the pushes taken for token.
func (s *Server) PushesTo(token string) []Push {
	var out []Push
	for _, p := range s.Pushes() {
		if p.Token == token {
			out = append(out, p)
		}
	}
	return out
}

// Attempts returns how many requests came for token, taken or not.
func (s *Server) Attempts(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[token]
}

// WaitFor waits until cond holds, re-checking it on every request the
// server gets, and fails the test after timeout.
func (s *Server) WaitFor(t testing.TB, timeout time.Duration, what string, cond func(s *Server) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond(s) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("pushtest: %s: not within %v (pushes %+v)", what, timeout, s.Pushes())
		}
	}
}

// note records a request for token and, when p is not nil, the push
// taken.
func (s *Server) note(token string, p *Push) {
	s.mu.Lock()
	s.attempts[token]++
	if p != nil {
		s.pushes = append(s.pushes, *p)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) mode(token string) Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.modes[token]; ok {
		return m
	}
	return s.def
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/token":
		s.serveToken(w, body)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/3/device/"):
		s.serveAPNs(w, r, body)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/projects/") && strings.HasSuffix(r.URL.Path, "/messages:send"):
		s.serveFCM(w, r, body)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/hook/"):
		s.serveWebhook(w, r, body)
	default:
		http.NotFound(w, r)
	}
}

// hang waits for Release or the request's end; it reports false when the
// request ended.
func (s *Server) hang(r *http.Request) bool {
	select {
	case <-s.release:
		return true
	case <-r.Context().Done():
		return false
	}
}

// serveToken answers the OAuth 2 JWT-bearer grant as Google's token
// endpoint does.
func (s *Server) serveToken(w http.ResponseWriter, body []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || form.Get("assertion") == "" {
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"access_token":"pushtest-access","token_type":"Bearer","expires_in":3600}`)
}

func (s *Server) serveAPNs(w http.ResponseWriter, r *http.Request, body []byte) {
	token := strings.TrimPrefix(r.URL.Path, "/3/device/")
	if !strings.HasPrefix(r.Header.Get("authorization"), "bearer ") || r.Header.Get("apns-topic") == "" {
		s.note(token, nil)
		apnsAnswer(w, http.StatusForbidden, "MissingProviderToken")
		return
	}
	switch s.mode(token) {
	case BadToken:
		s.note(token, nil)
		apnsAnswer(w, http.StatusGone, "Unregistered")
		return
	case Throttled:
		s.note(token, nil)
		apnsAnswer(w, http.StatusTooManyRequests, "TooManyRequests")
		return
	case Down:
		s.note(token, nil)
		apnsAnswer(w, http.StatusServiceUnavailable, "ServiceUnavailable")
		return
	case Hang:
		s.note(token, nil)
		if s.hang(r) {
			apnsAnswer(w, http.StatusServiceUnavailable, "ServiceUnavailable")
		}
		return
	}
	var p struct {
		Parley struct {
			Count  uint64 `json:"count"`
			Sender uint64 `json:"sender"`
			Group  uint64 `json:"group"`
		} `json:"parley"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		s.note(token, nil)
		apnsAnswer(w, http.StatusBadRequest, "PayloadEmpty")
		return
	}
	s.note(token, &Push{Provider: "apns", Token: token, Count: p.Parley.Count, Sender: p.Parley.Sender, Group: p.Parley.Group,
		Header: r.Header.Clone(), Body: body})
	w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000001")
	w.WriteHeader(http.StatusOK)
}

func apnsAnswer(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"reason":%q}`, reason)
}

func (s *Server) serveFCM(w http.ResponseWriter, r *http.Request, body []byte) {
	var m struct {
		Message struct {
			Token string            `json:"token"`
			Data  map[string]string `json:"data"`
		} `json:"message"`
	}
	_ = json.Unmarshal(body, &m)
	token := m.Message.Token
	if r.Header.Get("Authorization") != "Bearer pushtest-access" {
		s.note(token, nil)
		fcmAnswer(w, http.StatusUnauthorized, "UNAUTHENTICATED", "")
		return
	}
	switch s.mode(token) {
	case BadToken:
		s.note(token, nil)
		fcmAnswer(w, http.StatusNotFound, "NOT_FOUND", "UNREGISTERED")
		return
	case Throttled:
		s.note(token, nil)
		w.Header().Set("Retry-After", "1")
		fcmAnswer(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
		return
	case Down:
		s.note(token, nil)
		fcmAnswer(w, http.StatusServiceUnavailable, "UNAVAILABLE", "UNAVAILABLE")
		return
	case Hang:
		s.note(token, nil)
		if s.hang(r) {
			fcmAnswer(w, http.StatusServiceUnavailable, "UNAVAILABLE", "UNAVAILABLE")
		}
		return
	}
	count, _ := strconv.ParseUint(m.Message.Data["count"], 10, 64)
	sender, _ := strconv.ParseUint(m.Message.Data["sender"], 10, 64)
	group, _ := strconv.ParseUint(m.Message.Data["group"], 10, 64)
	s.note(token, &Push{Provider: "fcm", Token: token, Count: count, Sender: sender, Group: group, Header: r.Header.Clone(), Body: body})
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"name":"projects/pushtest/messages/1"}`)
}

func fcmAnswer(w http.ResponseWriter, status int, st, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	details := ""
	if code != "" {
		details = fmt.Sprintf(`,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":%q}]`, code)
	}
	_, _ = fmt.Fprintf(w, `{"error":{"code":%d,"message":"pushtest","status":%q%s}}`, status, st, details)
}

func (s *Server) serveWebhook(w http.ResponseWriter, r *http.Request, body []byte) {
	token := "https://" + r.Host + r.URL.Path
	stamp := r.Header.Get("Parley-Timestamp")
	sig, _ := hex.DecodeString(strings.TrimPrefix(r.Header.Get("Parley-Signature"), "v1="))
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(stamp + "."))
	m.Write(body)
	if !hmac.Equal(sig, m.Sum(nil)) {
		s.note(token, nil)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	switch s.mode(token) {
	case BadToken:
		s.note(token, nil)
		http.Error(w, "gone", http.StatusGone)
		return
	case Throttled:
		s.note(token, nil)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
		return
	case Down:
		s.note(token, nil)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case Hang:
		s.note(token, nil)
		if s.hang(r) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
		return
	}
	var p struct {
		Count  uint64 `json:"count"`
		Sender uint64 `json:"sender"`
		Group  uint64 `json:"group"`
	}
	_ = json.Unmarshal(body, &p)
	s.note(token, &Push{Provider: "webhook", Token: token, Count: p.Count, Sender: p.Sender, Group: p.Group, Header: r.Header.Clone(), Body: body})
	w.WriteHeader(http.StatusCreated)
}

// APNsKey returns a new .p8 signing key (PKCS#8 PEM of a P-256 key).
func APNsKey(t testing.TB) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ServiceAccount returns a service-account key for project whose
// token_uri is the server's token endpoint.
func (s *Server) ServiceAccount(t testing.TB, project string) []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": project, "private_key_id": "pushtest",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "parley@" + project + ".iam.gserviceaccount.com", "client_id": "1",
		"token_uri": s.srv.URL + "/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
