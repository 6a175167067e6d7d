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
	if _, sig := s.sign(opUpload, id, 1795698340); sig != "lTHSEEPVTjXpWMYRI-88Qia1B1YmKFN46RxxUuvIl90" {
		t.Errorf("upload signature %s", sig)
	}
	if _, sig := s.sign(opDownload, id, 1795615540); sig != "pX25_V8d1rR8KiAVbCzdI_LCriTc1J3oqiEsmKL5rkg" {
		t.Errorf("download signature %s", sig)
	}
	now := time.Unix(1795615000, 0)
	exp, sig := s.sign(opUpload, id, 1795615540)
	for _, c := range []struct {
		name      string
		op        string
		id        ID
		exp, sig  string
		now       time.Time
		wantError error
	}{
		{"valid", opUpload, id, exp, sig, now, nil},
		{"expired", opUpload, id, exp, sig, time.Unix(1795615540, 0), errExpired},
		{"other op", opDownload, id, exp, sig, now, errBadSignature},
		{"other id", opUpload, NewID(), exp, sig, now, errBadSignature},
		{"later expiry", opUpload, id, "1795615541", sig, now, errBadSignature},
		{"padded expiry", opUpload, id, "0" + exp, sig, now, errBadSignature},
		{"no signature", opUpload, id, exp, "", now, errBadSignature},
		{"bad base64", opUpload, id, exp, "!!", now, errBadSignature},
		{"truncated", opUpload, id, exp, sig[:40], now, errBadSignature},
	} {
		if err := s.verify(c.op, c.id, c.exp, c.sig, c.now); err != c.wantError {
			t.Errorf("%s: %v, want %v", c.name, err, c.wantError)
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
