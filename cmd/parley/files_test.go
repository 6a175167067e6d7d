package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/parley-im/parley/protocol/pb"
)

// TestSealRoundTrip: every size, chunk boundaries included, comes back
// as it went in, with the ciphertext size sealedSize predicts.
func TestSealRoundTrip(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	for _, n := range []int{0, 1, sealChunk - 1, sealChunk, sealChunk + 1, 3*sealChunk + 17} {
		plain := make([]byte, n)
		rand.Read(plain)
		var enc bytes.Buffer
		if err := seal(&enc, bytes.NewReader(plain), int64(n), key); err != nil {
			t.Fatal(err)
		}
		if int64(enc.Len()) != sealedSize(int64(n)) {
			t.Errorf("%d bytes sealed to %d, sealedSize says %d", n, enc.Len(), sealedSize(int64(n)))
		}
		ref := fileRef{Size: int64(enc.Len())}
		if ref.plainSize() != int64(n) {
			t.Errorf("plainSize of %d = %d, want %d", enc.Len(), ref.plainSize(), n)
		}
		var dec bytes.Buffer
		if err := open(&dec, bytes.NewReader(enc.Bytes()), int64(enc.Len()), key); err != nil || !bytes.Equal(dec.Bytes(), plain) {
			t.Errorf("%d bytes: open: %v, equal %v", n, err, bytes.Equal(dec.Bytes(), plain))
		}
	}
}

// TestSealTamper: a flipped bit, a missing or repeated chunk, a cut or
// the wrong key all fail to open.
func TestSealTamper(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	plain := make([]byte, 2*sealChunk+100)
	var enc bytes.Buffer
	if err := seal(&enc, bytes.NewReader(plain), int64(len(plain)), key); err != nil {
		t.Fatal(err)
	}
	c := enc.Bytes()
	block := sealChunk + sealOverhead
	flipped := bytes.Clone(c)
	flipped[block+5] ^= 1
	otherKey := bytes.Clone(key)
	otherKey[0] ^= 1
	for name, tt := range map[string]struct {
		b   []byte
		key []byte
	}{
		"flipped":        {flipped, key},
		"cut after two":  {c[:2*block], key}, // the second chunk is not marked last
		"last dropped":   {append(bytes.Clone(c[:block]), c[2*block:]...), key},
		"chunk repeated": {append(bytes.Clone(c[:2*block]), c[block:]...), key},
		"wrong key":      {c, otherKey},
		"too short":      {c[:10], key},
	} {
		if err := open(&bytes.Buffer{}, bytes.NewReader(tt.b), int64(len(tt.b)), tt.key); !errors.Is(err, errOpen) {
			t.Errorf("%s: %v, want errOpen", name, err)
		}
	}
}

// TestFileRef: the body round-trips through JSON, malformed bodies are
// not files, and names are made safe.
func TestFileRef(t *testing.T) {
	good := `{"v":1,"id":"3f9a2c710ed488b561c207ae934d1bf0","key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","size":245824,` +
		`"sha256":"69f2db1d68c99cc68904af6c06b1818cb78f212243a96f20b2d987faaf58116a","name":"../../etc/passwd\u001b","mime":"text/plain"}`
	r, ok := parseFileRef([]byte(good))
	if !ok || r.mediaID()[0] != 0x3f || len(r.key()) != 32 || r.key()[31] != 31 || r.plainSize() != 245760 {
		t.Fatalf("parseFileRef = %+v, %v", r, ok)
	}
	if got := safeName(r.Name); got != "passwd_" {
		t.Errorf("safeName(%q) = %q", r.Name, got)
	}
	for _, bad := range []string{
		"hello", `{"v":2}`,
		strings.Replace(good, `"v":1`, `"v":2`, 1),
		strings.Replace(good, "3f9a2c71", "3f9a", 1),
		strings.Replace(good, `"size":245824`, `"size":3`, 1),
	} {
		if _, ok := parseFileRef([]byte(bad)); ok {
			t.Errorf("parseFileRef(%.40q) accepted", bad)
		}
	}
	for _, tt := range []struct {
		mime string
		size int64
		want pb.ContentType
	}{
		{"image/png", 1 << 20, pb.ContentType_CONTENT_IMAGE},
		{"image/png", 20 << 20, pb.ContentType_CONTENT_DOCUMENT}, // over the image limit
		{"video/mp4", 1 << 20, pb.ContentType_CONTENT_VIDEO},
		{"audio/ogg", 1 << 20, pb.ContentType_CONTENT_VOICE},
		{"application/pdf", 1 << 20, pb.ContentType_CONTENT_DOCUMENT},
	} {
		if got := contentTypeOf(tt.mime, tt.size); got != tt.want {
			t.Errorf("contentTypeOf(%s, %d) = %v, want %v", tt.mime, tt.size, got, tt.want)
		}
	}
	if got := describeFile(r, pb.ContentType_CONTENT_DOCUMENT); got != "[document passwd_, 240.0 KiB]" {
		t.Errorf("describeFile = %q", got)
	}
}
