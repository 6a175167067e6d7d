package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// serviceRequester is a MediaRequester that calls a media.Service directly,
// as the server does for a logged-in connection.
type serviceRequester struct {
	svc  *media.Service
	user uint64
}

type replyChan chan []byte

func (r replyChan) Reply(b []byte) { r <- bytes.Clone(b) }

func (s serviceRequester) ask(up *pb.MediaUpload, down *pb.MediaDownload) (codec.Frame, error) {
	ch := make(replyChan, 1)
	if up != nil {
		s.svc.Upload(s.user, up, ch)
	} else {
		s.svc.Download(s.user, down, ch)
	}
	b := <-ch
	f, _, _, err := codec.Parse(b, protocol.MaxFrameBody)
	if err != nil {
		return f, err
	}
	if f.Kind == protocol.KindError {
		var e pb.Error
		if err := codec.ParseProto(f.Body, &e); err != nil {
			return f, err
		}
		return f, &ServerError{Code: e.Code, RetryAfter: time.Duration(e.RetryAfterMs) * time.Millisecond}
	}
	return f, nil
}

func (s serviceRequester) RequestUploadSlot(_ context.Context, req MediaUploadRequest) (MediaUploadSlot, error) {
	m := &pb.MediaUpload{Rid: 1, Type: req.Type, Size: uint64(req.Size), Sha256: req.SHA256[:]}
	if req.Resume != nil {
		m.Resume = req.Resume[:]
	}
	f, err := s.ask(m, nil)
	if err != nil {
		return MediaUploadSlot{}, err
	}
	var a pb.MediaUploadSlot
	if err := codec.ParseProto(f.Body, &a); err != nil {
		return MediaUploadSlot{}, err
	}
	return MediaUploadSlot{ID: MediaID(a.Id), Stored: a.Stored, URL: a.Url, TTL: time.Duration(a.ExpiresInS) * time.Second, Offset: int64(a.Offset)}, nil
}

func (s serviceRequester) RequestDownloadURL(_ context.Context, id MediaID) (MediaDownloadURL, error) {
	f, err := s.ask(nil, &pb.MediaDownload{Rid: 2, Id: id[:]})
	if err != nil {
		return MediaDownloadURL{}, err
	}
	var a pb.MediaDownloadUrl
	if err := codec.ParseProto(f.Body, &a); err != nil {
		return MediaDownloadURL{}, err
	}
	return MediaDownloadURL{URL: a.Url, TTL: time.Duration(a.ExpiresInS) * time.Second, Size: int64(a.Size), SHA256: [32]byte(a.Sha256), Type: a.Type}, nil
}

// flaky cuts the first PUT body after putAfter bytes and the first GET
// response after getAfter bytes, like a network that drops; with busy, it
// answers the first PUT and the first GET itself with 429
// MEDIA_TOO_MANY_TRANSFERS, as a server whose user share is taken.
type flaky struct {
	rt                 http.RoundTripper
	putAfter, getAfter int64
	busy               bool
	mu                 sync.Mutex
	puts, gets, heads  int
}

type cutBody struct {
	r io.ReadCloser
	n int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("network cut")
	}
	n, err := c.r.Read(p[:min(int64(len(p)), c.n)])
	c.n -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }

func (f *flaky) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	var cutPut, cutGet bool
	switch req.Method {
	case http.MethodPut:
		f.puts++
		cutPut = f.puts == 1 && f.putAfter > 0
	case http.MethodGet:
		f.gets++
		cutGet = f.gets == 1 && f.getAfter > 0
	case http.MethodHead:
		f.heads++
	}
	f.mu.Unlock()
	if f.busy && ((req.Method == http.MethodPut && f.puts == 1) || (req.Method == http.MethodGet && f.gets == 1)) {
		h := http.Header{}
		h.Set("Parley-Error", strconv.Itoa(int(protocol.CodeMediaTooManyTransfers)))
		h.Set("Retry-After", "0")
		return &http.Response{StatusCode: http.StatusTooManyRequests, Status: "429 Too Many Requests", Header: h,
			Body: io.NopCloser(strings.NewReader("MEDIA_TOO_MANY_TRANSFERS\n")), Request: req}, nil
	}
	if cutPut {
		req = req.Clone(req.Context())
		req.Body = &cutBody{r: req.Body, n: f.putAfter}
	}
	res, err := f.rt.RoundTrip(req)
	if err == nil && cutGet {
		res.Body = &cutBody{r: res.Body, n: f.getAfter}
	}
	return res, err
}

func newMediaEnv(t *testing.T, fl *flaky) *Media {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := media.Open(media.Config{Dir: t.TempDir(), BaseURL: "https://" + ln.Addr().String(), SweepInterval: -1, IdleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	svc.Start()
	srv := httptest.NewUnstartedServer(svc.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		if err := svc.Close(); err != nil {
			t.Error(err)
		}
	})
	fl.rt = srv.Client().Transport
	return &Media{
		Requester: serviceRequester{svc: svc, user: 1},
		HTTP:      &http.Client{Transport: fl},
		Backoff:   func(int) time.Duration { return 20 * time.Millisecond },
	}
}

func mediaBytes(n int) []byte {
	r := rand.New(rand.NewPCG(9, 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestMediaResume: an upload and a download cut in the middle complete
// from where they stopped.
func TestMediaResume(t *testing.T) {
	fl := &flaky{putAfter: 1 << 20, getAfter: 1 << 20}
	m := newMediaEnv(t, fl)
	data := mediaBytes(3<<20 + 5)
	sum := sha256.Sum256(data)
	ctx := context.Background()
	var slotted MediaRef
	m.OnSlot = func(r MediaRef) { slotted = r }
	ref, err := m.UploadMedia(ctx, pb.ContentType_CONTENT_VIDEO, bytes.NewReader(data), int64(len(data)), sum)
	if err != nil {
		t.Fatal(err)
	}
	if slotted != ref || fl.puts < 2 || fl.heads < 1 {
		t.Fatalf("ref %v slotted %v; %d PUTs, %d HEADs: the upload was not resumed", ref, slotted, fl.puts, fl.heads)
	}
	var buf bytes.Buffer
	u, err := m.DownloadMedia(ctx, ref.ID, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) || u.Size != int64(len(data)) || u.Type != pb.ContentType_CONTENT_VIDEO || fl.gets != 2 {
		t.Fatalf("download: %d bytes, %d GETs", buf.Len(), fl.gets)
	}

	// The same bytes again: stored, no transfer.
	puts := fl.puts
	again, err := m.UploadMedia(ctx, pb.ContentType_CONTENT_VIDEO, bytes.NewReader(data), int64(len(data)), sum)
	if err != nil || again.ID == ref.ID || fl.puts != puts {
		t.Fatalf("dedupe: %v %v, %d PUTs", again, err, fl.puts-puts)
	}

	// A download into a file continues a partial file.
	path := filepath.Join(t.TempDir(), "media")
	if err := os.WriteFile(path, data[:12345], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DownloadMediaFile(ctx, ref.ID, path); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatal("file differs")
	}
	// A partial file that does not match is refused and reset.
	if err := os.WriteFile(path, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DownloadMediaFile(ctx, ref.ID, path); !errors.Is(err, ErrMediaCorrupt) {
		t.Fatalf("corrupt partial file: %v", err)
	}
}

// TestMediaTooManyTransfers: MEDIA_TOO_MANY_TRANSFERS is waited out, on
// upload and download ([S-14-18]).
func TestMediaTooManyTransfers(t *testing.T) {
	fl := &flaky{busy: true}
	m := newMediaEnv(t, fl)
	data := mediaBytes(1000)
	ref, err := m.UploadMedia(context.Background(), pb.ContentType_CONTENT_IMAGE, bytes.NewReader(data), 1000, sha256.Sum256(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := m.DownloadMedia(context.Background(), ref.ID, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("download: %v", err)
	}
	if fl.puts != 2 || fl.gets != 2 {
		t.Fatalf("%d PUTs, %d GETs", fl.puts, fl.gets)
	}
}

// TestMediaRefusals: a wrong hash is final and reported with its code.
func TestMediaRefusals(t *testing.T) {
	m := newMediaEnv(t, &flaky{})
	data := mediaBytes(1000)
	bad := sha256.Sum256([]byte("other"))
	_, err := m.UploadMedia(context.Background(), pb.ContentType_CONTENT_IMAGE, bytes.NewReader(data), 1000, bad)
	if CodeOf(err) != protocol.CodeMediaHashMismatch {
		t.Fatalf("wrong hash: %v", err)
	}
	_, err = m.UploadMedia(context.Background(), pb.ContentType_CONTENT_IMAGE, bytes.NewReader(data), 17<<20, bad)
	if CodeOf(err) != protocol.CodeMediaTooLarge {
		t.Fatalf("oversize: %v", err)
	}
}
