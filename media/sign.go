package media

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// KeyLen is the length of the URL-signing key in bytes.
const KeyLen = 32

// Operations a URL is signed for: its "method". An upload URL is signed
// for PUT and serves PUT and HEAD (the upload's offset); a download URL is
// signed for GET and serves GET and HEAD.
const (
	opUpload   = "PUT"
	opDownload = "GET"
)

// Errors of verify; the handler maps them to MEDIA_BAD_SIGNATURE and
// MEDIA_URL_EXPIRED.
var (
	errBadSignature = errors.New("media: bad URL signature")
	errExpired      = errors.New("media: URL expired")
)

// signer signs and verifies media URLs with HMAC-SHA256 under the node's
// secret key. It is immutable and safe for concurrent use.
type signer struct{ key []byte }

// mac returns HMAC-SHA256(key, op "\n" id-hex "\n" user-decimal "\n"
// expiry-decimal).
func (s signer) mac(op string, id ID, user uint64, exp int64) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(op))
	m.Write([]byte{'\n'})
	m.Write([]byte(id.String()))
	m.Write([]byte{'\n'})
	m.Write(strconv.AppendUint(nil, user, 10))
	m.Write([]byte{'\n'})
	m.Write(strconv.AppendInt(nil, exp, 10))
	return m.Sum(nil)
}

// sign returns the u, exp and sig query values of a URL for op on id,
// issued to user, that stops working at exp (Unix seconds).
func (s signer) sign(op string, id ID, user uint64, exp int64) (userValue, expValue, sig string) {
	return strconv.FormatUint(user, 10), strconv.FormatInt(exp, 10), base64.RawURLEncoding.EncodeToString(s.mac(op, id, user, exp))
}

// verify checks the u, exp and sig query values of a URL for op on id at
// time now and returns the user the URL was issued to. The signature is
// checked first, in constant time, and only then the expiry, so an
// altered user or expiry is a bad signature.
func (s signer) verify(op string, id ID, userValue, expValue, sig string, now time.Time) (uint64, error) {
	user, err := strconv.ParseUint(userValue, 10, 64)
	if err != nil || userValue != strconv.FormatUint(user, 10) {
		return 0, errBadSignature
	}
	exp, err := strconv.ParseInt(expValue, 10, 64)
	if err != nil || expValue != strconv.FormatInt(exp, 10) {
		return 0, errBadSignature
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(op, id, user, exp)) {
		return 0, errBadSignature
	}
	if now.Unix() >= exp {
		return 0, errExpired
	}
	return user, nil
}

// loadOrCreateKey reads the signing key at path, creating it with fresh
// random bytes (mode 0600) if it does not exist.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != KeyLen {
			return nil, fmt.Errorf("media: key %s has %d bytes, want %d", path, len(key), KeyLen)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("media: %w", err)
	}
	key = make([]byte, KeyLen)
	_, _ = rand.Read(key)
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, key, 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	return key, syncDir(filepath.Dir(path))
}

// writeFileSync writes data to a new file at path and syncs it.
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory so a rename or create in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("media: sync %s: %w", dir, err)
	}
	return nil
}
