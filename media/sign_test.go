package media

import (
	"testing"
	"time"
)

// TestSignatureExample holds spec.md's MEDIA_UPLOAD_SLOT and
// MEDIA_DOWNLOAD_URL examples, made with the key 00 01 … 1f, to the code.
func TestSignatureExample(t *testing.T) {
	key := make([]byte, KeyLen)
	for i := range key {
		key[i] = byte(i)
	}
	s := signer{key: key}
	id, err := ParseID("3f9a2c710ed488b561c207ae934d1bf0")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, sig := s.sign(opUpload, id, 4101, 1795698340); sig != "UeP3BYjpfq5Tmr6qtfIg2mP4L-IQz4MW1Ujm0h6a4ic" {
		t.Errorf("upload signature %s", sig)
	}
	if _, _, sig := s.sign(opDownload, id, 4102, 1795615540); sig != "lpjUt0pvmbKxjjyvao2PMi0bn7LwM08qjx9xGVTQvac" {
		t.Errorf("download signature %s", sig)
	}
	now := time.Unix(1795615000, 0)
	u, exp, sig := s.sign(opUpload, id, 4101, 1795615540)
	if u != "4101" {
		t.Fatalf("user %q", u)
	}
	for _, c := range []struct {
		name        string
		op          string
		id          ID
		u, exp, sig string
		now         time.Time
		wantError   error
	}{
		{"valid", opUpload, id, u, exp, sig, now, nil},
		{"expired", opUpload, id, u, exp, sig, time.Unix(1795615540, 0), errExpired},
		{"other op", opDownload, id, u, exp, sig, now, errBadSignature},
		{"other id", opUpload, NewID(), u, exp, sig, now, errBadSignature},
		{"other user", opUpload, id, "4102", exp, sig, now, errBadSignature},
		{"padded user", opUpload, id, "04101", exp, sig, now, errBadSignature},
		{"no user", opUpload, id, "", exp, sig, now, errBadSignature},
		{"later expiry", opUpload, id, u, "1795615541", sig, now, errBadSignature},
		{"padded expiry", opUpload, id, u, "0" + exp, sig, now, errBadSignature},
		{"no signature", opUpload, id, u, exp, "", now, errBadSignature},
		{"bad base64", opUpload, id, u, exp, "!!", now, errBadSignature},
		{"truncated", opUpload, id, u, exp, sig[:40], now, errBadSignature},
	} {
		user, err := s.verify(c.op, c.id, c.u, c.exp, c.sig, c.now)
		if err != c.wantError || (err == nil && user != 4101) {
			t.Errorf("%s: %d %v, want %v", c.name, user, err, c.wantError)
		}
	}
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h                   string
		off, n              int64
		satisfiable, single bool
	}{
		{"bytes=0-9", 0, 10, true, true},
		{"bytes=90-", 90, 10, true, true},
		{"bytes=-5", 95, 5, true, true},
		{"bytes=-500", 0, 100, true, true},
		{"bytes=50-1000", 50, 50, true, true},
		{"bytes=100-", 0, 0, false, true},
		{"bytes=-0", 0, 0, false, true},
		{"bytes=5-4", 0, 0, false, false},
		{"bytes=1-2,4-5", 0, 0, false, false},
		{"bytes=x-", 0, 0, false, false},
		{"pages=1-2", 0, 0, false, false},
	} {
		off, n, sat, ok := parseRange(c.h, 100)
		if off != c.off || n != c.n || sat != c.satisfiable || ok != c.single {
			t.Errorf("%q: %d %d %v %v", c.h, off, n, sat, ok)
		}
	}
	for _, c := range []struct {
		h      string
		start  int64
		ranged bool
		code   int32
	}{
		{"", 0, false, 0},
		{"bytes 10-99/100", 10, true, 0},
		{"bytes 10-98/100", 0, false, int32(codeSizeMismatch)},
		{"bytes 10-99/101", 0, false, int32(codeSizeMismatch)},
		{"bytes 10-99", 0, false, int32(codeInvalidArgument)},
		{"bytes */100", 0, false, int32(codeInvalidArgument)},
		{"items 1-2/100", 0, false, int32(codeInvalidArgument)},
	} {
		start, ranged, code := parseContentRange(c.h, 100)
		if start != c.start || ranged != c.ranged || int32(code) != c.code {
			t.Errorf("%q: %d %v %v", c.h, start, ranged, code)
		}
	}
}
