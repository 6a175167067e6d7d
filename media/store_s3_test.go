package media

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// newS3Store starts an S3-compatible server on loopback for the test and
// returns a store in a bucket of it. The server is gofakes3, an S3 API
// implementation in Go from the module proxy, so the test needs nothing
// installed: the S3Store speaks the real S3 protocol (SigV4-signed path-
// style requests, multipart uploads, ranged GETs, listings) to it over
// TCP and TLS.
func newS3Store(t *testing.T) *S3Store {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("parley-media"); err != nil {
		t.Fatal(err)
	}
	// Over TLS, as a production store would be: minio-go then sends
	// plain signed payloads rather than aws-chunked streaming ones.
	srv := httptest.NewTLSServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	st, err := NewS3Store(S3Config{
		Endpoint:  srv.Listener.Addr().String(),
		Bucket:    "parley-media",
		Prefix:    "blobs/",
		AccessKey: "parley",
		SecretKey: "parley-secret",
		Region:    "us-east-1",
		Transport: srv.Client().Transport,
		PartSize:  5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestS3StoreMultipart(t *testing.T) {
	e := newEnv(t, "s3", nil)
	data := randomBytes(42, 12<<20+12345) // above PartSize: a multipart upload
	id := e.upload(data)
	if got := e.download(id); string(got) != string(data) {
		t.Fatal("download differs")
	}
	u := e.mustDownloadURL(id)
	r := e.get(u.Url, map[string]string{"Range": "bytes=6000000-6000099"})
	if r.status != 206 || string(r.body) != string(data[6000000:6000100]) {
		t.Fatalf("range: %d, %d bytes", r.status, len(r.body))
	}
}

func TestS3StoreConfig(t *testing.T) {
	_, err := NewS3Store(S3Config{Endpoint: "https://x", AccessKey: "a"})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"scheme", "no S3 bucket", "go together"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
