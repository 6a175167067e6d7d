package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// net/http's keep-alive connections of the test clients close lazily.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		// pebble's background goroutines finish asynchronously after Close.
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2.(*DB).maybeScheduleCompaction"),
	)
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// replies is a Replier that hands each answer to the test.
type replies chan []byte

func (r replies) Reply(frames []byte) { r <- bytes.Clone(frames) }

// env is one media service behind a TLS test server.
type env struct {
	t     *testing.T
	svc   *Service
	srv   *httptest.Server
	http  *http.Client
	clock *clock
	cfg   Config
	// free is the free space the service sees (Config.FreeSpace), 1 TiB
	// unless a test sets it.
	free *atomic.Int64
}

// storeKind names a Store for a test: "fs" or "s3".
type storeKind string

func newEnv(t *testing.T, kind storeKind, tweak func(*Config)) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	free := new(atomic.Int64)
	free.Store(1 << 40)
	cfg := Config{
		Dir:           t.TempDir(),
		BaseURL:       "https://" + ln.Addr().String(),
		Now:           clk.Now,
		SweepInterval: -1,
		IdleTimeout:   2 * time.Second,
		FreeSpace:     func(string) (uint64, error) { return uint64(free.Load()), nil },
	}
	if kind == "s3" {
		cfg.Store = newS3Store(t)
	}
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc.Start()
	srv := httptest.NewUnstartedServer(svc.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	e := &env{t: t, svc: svc, srv: srv, http: srv.Client(), clock: clk, cfg: cfg, free: free}
	t.Cleanup(func() {
		srv.Close()
		if err := e.svc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

// restart closes the service and opens it again on the same directory
// and store, behind the same test server.
func (e *env) restart() {
	e.t.Helper()
	if err := e.svc.Close(); err != nil {
		e.t.Fatal(err)
	}
	svc, err := Open(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	svc.Start()
	e.svc = svc
	e.srv.Config.Handler = svc.Handler()
}

// forEachStore runs f as a subtest for each Store.
func forEachStore(t *testing.T, f func(t *testing.T, kind storeKind)) {
	for _, k := range []storeKind{"fs", "s3"} {
		t.Run(string(k), func(t *testing.T) { f(t, k) })
	}
}

// answer is a decoded answer to a slot or URL request.
type answer struct {
	slot  *pb.MediaUploadSlot
	url   *pb.MediaDownloadUrl
	err   *pb.Error
	frame []byte
}

func (a answer) code() pb.ErrorCode {
	if a.err == nil {
		return 0
	}
	return a.err.Code
}

func decodeAnswer(t *testing.T, b []byte) answer {
	t.Helper()
	f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
	if err != nil || n != len(b) {
		t.Fatalf("answer % x: n %d err %v", b, n, err)
	}
	a := answer{frame: b}
	switch f.Kind {
	case kindUploadSlot:
		a.slot = &pb.MediaUploadSlot{}
		err = codec.ParseProto(f.Body, a.slot)
	case kindDownloadURL:
		a.url = &pb.MediaDownloadUrl{}
		err = codec.ParseProto(f.Body, a.url)
	case protocol.KindError:
		a.err = &pb.Error{}
		err = codec.ParseProto(f.Body, a.err)
	default:
		t.Fatalf("answer of kind %v", f.Kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// request sends an upload or download request as user and waits for the
// answer.
func (e *env) request(user uint64, up *pb.MediaUpload, down *pb.MediaDownload) answer {
	e.t.Helper()
	r := make(replies, 1)
	var ok bool
	if up != nil {
		ok = e.svc.Upload(user, up, r)
	} else {
		ok = e.svc.Download(user, down, r)
	}
	if !ok {
		e.t.Fatal("queue full")
	}
	select {
	case b := <-r:
		return decodeAnswer(e.t, b)
	case <-time.After(10 * time.Second):
		e.t.Fatal("no answer")
	}
	return answer{}
}

func (e *env) slot(data []byte) answer {
	e.t.Helper()
	return e.slotAs(1, data)
}

// slotAs asks for an upload slot for data as user.
func (e *env) slotAs(user uint64, data []byte) answer {
	e.t.Helper()
	sum := sha256.Sum256(data)
	return e.request(user, &pb.MediaUpload{Rid: 7, Type: pb.ContentType_CONTENT_DOCUMENT, Size: uint64(len(data)), Sha256: sum[:]}, nil)
}

func (e *env) mustSlot(data []byte) *pb.MediaUploadSlot {
	e.t.Helper()
	return e.mustSlotAs(1, data)
}

func (e *env) mustSlotAs(user uint64, data []byte) *pb.MediaUploadSlot {
	e.t.Helper()
	a := e.slotAs(user, data)
	if a.slot == nil || a.slot.Rid != 7 {
		e.t.Fatalf("slot: %+v", a)
	}
	return a.slot
}

func (e *env) downloadURL(id []byte) answer {
	e.t.Helper()
	return e.request(1, nil, &pb.MediaDownload{Rid: 9, Id: id})
}

func (e *env) mustDownloadURL(id []byte) *pb.MediaDownloadUrl {
	e.t.Helper()
	return e.mustDownloadURLAs(1, id)
}

func (e *env) mustDownloadURLAs(user uint64, id []byte) *pb.MediaDownloadUrl {
	e.t.Helper()
	a := e.request(user, nil, &pb.MediaDownload{Rid: 9, Id: id})
	if a.url == nil || a.url.Rid != 9 {
		e.t.Fatalf("download URL: %+v", a)
	}
	return a.url
}

// response is what the test keeps of an HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// code is the Parley-Error of a refusal, 0 if none.
func (r response) code() pb.ErrorCode {
	n, _ := strconv.Atoi(r.header.Get(headerError))
	return pb.ErrorCode(n)
}

func (e *env) do(method, url string, body io.Reader, size int64, header map[string]string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) put(url string, data []byte, header map[string]string) response {
	e.t.Helper()
	return e.do(http.MethodPut, url, bytes.NewReader(data), int64(len(data)), header)
}

func (e *env) get(url string, header map[string]string) response {
	e.t.Helper()
	return e.do(http.MethodGet, url, nil, 0, header)
}

// upload runs the whole upload of data and returns its media id.
func (e *env) upload(data []byte) []byte {
	e.t.Helper()
	return e.uploadAs(1, data)
}

// uploadAs runs the whole upload of data as user and returns its media id.
func (e *env) uploadAs(user uint64, data []byte) []byte {
	e.t.Helper()
	s := e.mustSlotAs(user, data)
	if !s.Stored {
		if r := e.put(s.Url, data, nil); r.status != http.StatusOK {
			e.t.Fatalf("PUT: %d %s", r.status, r.body)
		}
	}
	return s.Id
}

// download fetches media id whole.
func (e *env) download(id []byte) []byte {
	e.t.Helper()
	u := e.mustDownloadURL(id)
	r := e.get(u.Url, nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET: %d %s", r.status, r.body)
	}
	if sha256.Sum256(r.body) != [32]byte(u.Sha256) || int64(len(r.body)) != int64(u.Size) {
		e.t.Fatalf("GET: %d bytes do not match size %d and hash", len(r.body), u.Size)
	}
	return r.body
}

func (e *env) counts() Counts {
	e.t.Helper()
	c, err := e.svc.Counts()
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// blobs counts what the store holds.
func (e *env) blobs() int {
	e.t.Helper()
	n := 0
	if err := e.svc.Store().List(context.Background(), func(Hash) error { n++; return nil }); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (c Counts) String() string {
	return fmt.Sprintf("blobs %d ready %d pending %d partials %d", c.Blobs, c.Ready, c.Pending, c.Partials)
}
