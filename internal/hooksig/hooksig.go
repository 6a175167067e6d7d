// Package hooksig signs the HTTP requests Parley's webhooks send (the SMS
// webhook gateway and the push webhook provider share one scheme,
// docs/operations.md): an HMAC-SHA256 under a shared secret over a Unix
// timestamp, a ".", and the body. Its functions are pure and safe for
// concurrent use.
package hooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
)

// Request headers of a signed webhook request.
const (
	// HeaderTimestamp carries the request's time, Unix seconds; the
	// signature covers it.
	HeaderTimestamp = "Parley-Timestamp"
	// HeaderSignature carries "v1=" and the hex HMAC-SHA256, under the
	// shared secret, of the timestamp, a ".", and the body.
	HeaderSignature = "Parley-Signature"
)

// MinSecret is the shortest webhook secret accepted, in bytes.
const MinSecret = 16

// Sign returns HMAC-SHA256(secret, stamp "." body).
func Sign(secret []byte, stamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(stamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SetHeaders stamps h with the Unix time ts and signs body with secret.
func SetHeaders(h http.Header, secret []byte, ts int64, body []byte) {
	stamp := strconv.FormatInt(ts, 10)
	h.Set(HeaderTimestamp, stamp)
	h.Set(HeaderSignature, "v1="+hex.EncodeToString(Sign(secret, stamp, body)))
}
