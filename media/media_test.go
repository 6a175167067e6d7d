package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

func TestUploadDownload(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, nil)
		data := randomBytes(1, 1<<20+17)
		s := e.mustSlot(data)
		if s.Stored || s.Url == "" || len(s.Id) != IDLen || s.ExpiresInS != 24*3600 || s.Offset != 0 {
			t.Fatalf("slot %+v", s)
		}
		// Not downloadable before the upload: [S-14-6].
		if a := e.downloadURL(s.Id); a.code() != codeNotReady {
			t.Fatalf("download URL before upload: %+v", a)
		}
		r := e.put(s.Url, data, nil)
		if r.status != http.StatusOK || r.header.Get(headerUploadOffset) != strconv.Itoa(len(data)) {
			t.Fatalf("PUT: %d %q %v", r.status, r.body, r.header)
		}
		// A PUT repeated after success (its answer lost) succeeds again.
		if r := e.put(s.Url, data, nil); r.status != http.StatusOK {
			t.Fatalf("repeated PUT: %d", r.status)
		}
		if got := e.download(s.Id); !bytes.Equal(got, data) {
			t.Fatal("download differs")
		}
		u := e.mustDownloadURL(s.Id)
		if u.Type != pb.ContentType_CONTENT_DOCUMENT || u.ExpiresInS != 3600 {
			t.Fatalf("url %+v", u)
		}
		for _, c := range []struct {
			rng        string
			status     int
			start, end int // of data
		}{
			{"bytes=100-199", 206, 100, 200},
			{"bytes=1048000-", 206, 1048000, len(data)},
			{"bytes=-10", 206, len(data) - 10, len(data)},
			{"bytes=5-99999999", 206, 5, len(data)},
			{"bytes=0-0,5-6", 200, 0, len(data)},
			{"items=0-4", 200, 0, len(data)},
			{"bytes=" + strconv.Itoa(len(data)) + "-", 416, 0, 0},
		} {
			r := e.get(u.Url, map[string]string{"Range": c.rng})
			if r.status != c.status {
				t.Errorf("Range %s: status %d, want %d", c.rng, r.status, c.status)
				continue
			}
			if c.status == 416 {
				if r.header.Get("Content-Range") != "bytes */"+strconv.Itoa(len(data)) || r.code() != codeInvalidArgument {
					t.Errorf("Range %s: %v", c.rng, r.header)
				}
				continue
			}
			if !bytes.Equal(r.body, data[c.start:c.end]) {
				t.Errorf("Range %s: wrong bytes", c.rng)
			}
			if c.status == 206 {
				want := "bytes " + strconv.Itoa(c.start) + "-" + strconv.Itoa(c.end-1) + "/" + strconv.Itoa(len(data))
				if got := r.header.Get("Content-Range"); got != want {
					t.Errorf("Range %s: Content-Range %q, want %q", c.rng, got, want)
				}
			}
		}
		// If-Range with another validator: the whole content.
		if r := e.get(u.Url, map[string]string{"Range": "bytes=0-9", "If-Range": `"x"`}); r.status != 200 || len(r.body) != len(data) {
			t.Errorf("If-Range mismatch: %d", r.status)
		}
		// HEAD on the download URL.
		if r := e.do(http.MethodHead, u.Url, nil, 0, nil); r.status != 200 || r.header.Get("Content-Length") != strconv.Itoa(len(data)) {
			t.Errorf("HEAD: %d %v", r.status, r.header)
		}
		if c := e.counts(); c.Blobs != 1 || c.Ready != 1 || c.Pending != 0 || c.Partials != 0 || e.blobs() != 1 {
			t.Fatalf("counts %v, store %d", c, e.blobs())
		}
	})
}

// TestDedupe: two clients upload the same bytes at the same time; the
// store keeps one copy and both ids work; a later slot for the same bytes
// needs no upload ([S-14-5]).
func TestDedupe(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, nil)
		data := randomBytes(2, 3<<20)
		a, b := e.mustSlot(data), e.mustSlot(data)
		if bytes.Equal(a.Id, b.Id) || a.Stored || b.Stored {
			t.Fatalf("slots %+v %+v", a, b)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		var ra, rb response
		wg.Go(func() { <-start; ra = e.put(a.Url, data, nil) })
		wg.Go(func() { <-start; rb = e.put(b.Url, data, nil) })
		close(start)
		wg.Wait()
		if ra.status != 200 || rb.status != 200 {
			t.Fatalf("PUTs: %d %d", ra.status, rb.status)
		}
		if c := e.counts(); c.Blobs != 1 || c.Ready != 2 || c.Partials != 0 || e.blobs() != 1 {
			t.Fatalf("counts %v, store %d", c, e.blobs())
		}
		for _, id := range [][]byte{a.Id, b.Id} {
			if !bytes.Equal(e.download(id), data) {
				t.Fatal("download differs")
			}
		}
		c := e.mustSlot(data)
		if !c.Stored || c.Url != "" || len(c.Id) != IDLen || bytes.Equal(c.Id, a.Id) {
			t.Fatalf("third slot %+v", c)
		}
		if !bytes.Equal(e.download(c.Id), data) {
			t.Fatal("download differs")
		}
		if e.blobs() != 1 {
			t.Fatalf("store %d", e.blobs())
		}
	})
}

// TestRefusals: each refusal gets its documented code and leaves nothing
// behind.
func TestRefusals(t *testing.T) {
	e := newEnv(t, "fs", nil)
	data := randomBytes(3, 100<<10)
	sum := sha256.Sum256(data)
	nothing := func(t *testing.T) {
		t.Helper()
		if c := e.counts(); c != (Counts{}) || e.blobs() != 0 {
			t.Fatalf("left behind: %v, store %d", c, e.blobs())
		}
	}

	t.Run("slot", func(t *testing.T) {
		for _, c := range []struct {
			name string
			m    *pb.MediaUpload
			code pb.ErrorCode
		}{
			{"oversize", &pb.MediaUpload{Type: pb.ContentType_CONTENT_IMAGE, Size: 16<<20 + 1, Sha256: sum[:]}, codeTooLarge},
			{"oversize document", &pb.MediaUpload{Type: pb.ContentType_CONTENT_DOCUMENT, Size: 2<<30 + 1, Sha256: sum[:]}, codeTooLarge},
			{"text", &pb.MediaUpload{Type: pb.ContentType_CONTENT_TEXT, Size: 1, Sha256: sum[:]}, codeInvalidArgument},
			{"unknown type", &pb.MediaUpload{Type: 99, Size: 1, Sha256: sum[:]}, codeInvalidArgument},
			{"size 0", &pb.MediaUpload{Type: pb.ContentType_CONTENT_IMAGE, Sha256: sum[:]}, codeInvalidArgument},
			{"short hash", &pb.MediaUpload{Type: pb.ContentType_CONTENT_IMAGE, Size: 1, Sha256: sum[:31]}, codeInvalidArgument},
			{"bad resume id", &pb.MediaUpload{Type: pb.ContentType_CONTENT_IMAGE, Size: 1, Sha256: sum[:], Resume: []byte{1}}, codeInvalidArgument},
			{"unknown resume id", &pb.MediaUpload{Type: pb.ContentType_CONTENT_IMAGE, Size: 1, Sha256: sum[:], Resume: make([]byte, 16)}, codeNotFound},
		} {
			c.m.Rid = 5
			a := e.request(1, c.m, nil)
			if a.code() != c.code || a.err.Rid != 5 {
				t.Errorf("%s: %+v, want code %v", c.name, a, c.code)
			}
		}
		for _, id := range [][]byte{nil, make([]byte, 15), make([]byte, 16)} {
			want := codeInvalidArgument
			if len(id) == 16 {
				want = codeNotFound
			}
			if a := e.downloadURL(id); a.code() != want {
				t.Errorf("download URL of %x: %+v, want %v", id, a, want)
			}
		}
		nothing(t)
	})

	for _, c := range []struct {
		name   string
		body   func(s *pb.MediaUploadSlot) (url string, body []byte, header map[string]string)
		status int
		code   pb.ErrorCode
	}{
		{"wrong hash", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			bad := bytes.Clone(data)
			bad[len(bad)/2] ^= 1
			return s.Url, bad, nil
		}, 422, codeHashMismatch},
		{"too long", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			return s.Url, append(bytes.Clone(data), 0), nil
		}, 400, codeSizeMismatch},
		{"too short", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			return s.Url, data[:len(data)-1], nil
		}, 400, codeSizeMismatch},
		{"wrong total", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			return s.Url, data, map[string]string{"Content-Range": "bytes 0-" + strconv.Itoa(len(data)) + "/" + strconv.Itoa(len(data)+1)}
		}, 400, codeSizeMismatch},
		{"expired URL", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			e.clock.advance(24*time.Hour + time.Second)
			return s.Url, data, nil
		}, 403, codeURLExpired},
		{"tampered signature", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			u, _ := url.Parse(s.Url)
			q := u.Query()
			sig := []byte(q.Get("sig"))
			sig[3] ^= 'A' ^ 'B'
			q.Set("sig", string(sig))
			u.RawQuery = q.Encode()
			return u.String(), data, nil
		}, 403, codeBadSignature},
		{"extended expiry", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			u, _ := url.Parse(s.Url)
			q := u.Query()
			exp, _ := strconv.ParseInt(q.Get("exp"), 10, 64)
			q.Set("exp", strconv.FormatInt(exp+3600, 10))
			u.RawQuery = q.Encode()
			return u.String(), data, nil
		}, 403, codeBadSignature},
		{"another id's signature", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			other := e.mustSlot(randomBytes(99, 10)) // a valid slot of someone else
			u, _ := url.Parse(other.Url)
			mine, _ := url.Parse(s.Url)
			u.Path = mine.Path
			// Drop the other slot, so only the refused PUT could leave anything.
			id, _ := IDFromBytes(other.Id)
			if err := e.svc.discard(id); err != nil {
				t.Fatal(err)
			}
			return u.String(), data, nil
		}, 403, codeBadSignature},
		{"download signature on upload", func(s *pb.MediaUploadSlot) (string, []byte, map[string]string) {
			id, _ := IDFromBytes(s.Id)
			u, _ := e.svc.url(opDownload, id, 1, e.clock.Now(), time.Hour)
			return strings.Replace(u, downloadPath, uploadPath, 1), data, nil
		}, 403, codeBadSignature},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := e.mustSlot(data)
			url, body, header := c.body(s)
			r := e.put(url, body, header)
			if r.status != c.status || r.code() != c.code || strings.TrimSpace(string(r.body)) != strings.TrimPrefix(c.code.String(), "ERROR_") {
				t.Fatalf("PUT: %d %v %q, want %d %v", r.status, r.code(), r.body, c.status, c.code)
			}
			// Nothing from the refused PUT is left: no staged bytes, no
			// blob. A signature refusal leaves the slot (a pending id) as
			// it was; the sweeper takes it.
			if c.status == 403 {
				id, _ := IDFromBytes(s.Id)
				if err := e.svc.discard(id); err != nil {
					t.Fatal(err)
				}
			}
			nothing(t)
		})
	}

	t.Run("download", func(t *testing.T) {
		id := e.upload(data)
		u := e.mustDownloadURL(id)
		for name, mutate := range map[string]func(*url.URL){
			"tampered": func(u *url.URL) {
				q := u.Query()
				q.Set("sig", strings.Repeat("A", 43))
				u.RawQuery = q.Encode()
			},
			"no signature": func(u *url.URL) { u.RawQuery = "" },
			"other id": func(u *url.URL) {
				u.Path = downloadPath + NewID().String()
			},
			"bad id": func(u *url.URL) { u.Path = downloadPath + "zz" },
		} {
			pu, _ := url.Parse(u.Url)
			mutate(pu)
			if r := e.get(pu.String(), nil); r.status != 403 || r.code() != codeBadSignature {
				t.Errorf("%s: %d %v", name, r.status, r.code())
			}
		}
		if r := e.do(http.MethodPut, u.Url, strings.NewReader("x"), 1, nil); r.status != 405 || r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("PUT on a download URL: %d", r.status)
		}
		e.clock.advance(time.Hour)
		if r := e.get(u.Url, nil); r.status != 403 || r.code() != codeURLExpired {
			t.Errorf("expired: %d %v", r.status, r.code())
		}
	})
}

// cutReader yields n bytes of data and then fails, like a connection
// that breaks in the middle of a body.
type cutReader struct {
	data []byte
	n    int
}

var errCutTest = errors.New("connection cut")

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, errCutTest
	}
	m := copy(p, c.data[:min(len(c.data), c.n)])
	c.data, c.n = c.data[m:], c.n-m
	return m, nil
}

// TestResume: an upload cut in the middle continues from the server's
// offset; a download cut in the middle continues with a Range ([S-14-11],
// [S-14-12]).
func TestResume(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, nil)
		data := randomBytes(4, 2<<20+3)
		s := e.mustSlot(data)

		req, _ := http.NewRequest(http.MethodPut, s.Url, &cutReader{data: data, n: 700_001})
		req.ContentLength = int64(len(data))
		if res, err := e.http.Do(req); err == nil {
			res.Body.Close()
			t.Fatalf("cut PUT succeeded: %d", res.StatusCode)
		}
		// The server notices the cut on its own time: wait for the
		// offset to settle and the upload to be free.
		var off int
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := e.do(http.MethodHead, s.Url, nil, 0, nil)
			off, _ = strconv.Atoi(r.header.Get(headerUploadOffset))
			if r.header.Get(headerUploadLength) != strconv.Itoa(len(data)) {
				t.Fatalf("HEAD: %v", r.header)
			}
			if off > 0 && !e.busy(s.Id) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("offset stays %d", off)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if off == 0 || off > 700_001 {
			t.Fatalf("offset %d after a cut at 700001", off)
		}
		// A fresh URL for the same upload says where it stands.
		sum := sha256.Sum256(data)
		a := e.request(1, &pb.MediaUpload{Rid: 8, Type: pb.ContentType_CONTENT_DOCUMENT, Size: uint64(len(data)), Sha256: sum[:], Resume: s.Id}, nil)
		if a.slot == nil || !bytes.Equal(a.slot.Id, s.Id) || a.slot.Offset != uint64(off) || a.slot.Url == "" {
			t.Fatalf("resume slot %+v", a)
		}
		// A PUT that starts elsewhere is refused with the right offset.
		r := e.put(a.slot.Url, data[off-1:], map[string]string{"Content-Range": "bytes " + strconv.Itoa(off-1) + "-" + strconv.Itoa(len(data)-1) + "/" + strconv.Itoa(len(data))})
		if r.status != 409 || r.code() != codeOffsetMismatch || r.header.Get(headerUploadOffset) != strconv.Itoa(off) {
			t.Fatalf("misplaced PUT: %d %v %v", r.status, r.code(), r.header)
		}
		r = e.put(a.slot.Url, data[off:], map[string]string{"Content-Range": "bytes " + strconv.Itoa(off) + "-" + strconv.Itoa(len(data)-1) + "/" + strconv.Itoa(len(data))})
		if r.status != 200 {
			t.Fatalf("resumed PUT: %d %s", r.status, r.body)
		}

		// Download, cut after 1 MiB, then the rest with Range.
		u := e.mustDownloadURL(s.Id)
		res, err := e.http.Get(u.Url)
		if err != nil {
			t.Fatal(err)
		}
		first := make([]byte, 1<<20)
		if _, err := io.ReadFull(res.Body, first); err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		rest := e.get(u.Url, map[string]string{"Range": "bytes=" + strconv.Itoa(len(first)) + "-"})
		if rest.status != 206 || !bytes.Equal(append(first, rest.body...), data) {
			t.Fatalf("resumed download: %d, %d bytes", rest.status, len(rest.body))
		}
		if c := e.counts(); c.Blobs != 1 || c.Ready != 1 || c.Pending != 0 || c.Partials != 0 {
			t.Fatalf("counts %v", c)
		}
	})
}

func (e *env) busy(id []byte) bool {
	i, _ := IDFromBytes(id)
	e.svc.mu.Lock()
	defer e.svc.mu.Unlock()
	return e.svc.active[i]
}

// TestUploadBusy: a second PUT while one is writing is told to wait.
func TestUploadBusy(t *testing.T) {
	e := newEnv(t, "fs", nil)
	data := randomBytes(5, 1000)
	s := e.mustSlot(data)
	id, _ := IDFromBytes(s.Id)
	if _, _, code := e.svc.claim(id); code != 0 {
		t.Fatal(code)
	}
	r := e.put(s.Url, data, nil)
	if r.status != 409 || r.code() != codeUploadBusy || r.header.Get("Retry-After") != "1" || r.header.Get(headerUploadOffset) != "0" {
		t.Fatalf("busy PUT: %d %v %v", r.status, r.code(), r.header)
	}
	e.svc.release(id)
	if r := e.put(s.Url, data, nil); r.status != 200 {
		t.Fatalf("PUT: %d", r.status)
	}
}

// TestRestart: media, its URLs and unfinished uploads survive a restart.
func TestRestart(t *testing.T) {
	e := newEnv(t, "fs", nil)
	data := randomBytes(6, 300<<10)
	id := e.upload(data)
	u := e.mustDownloadURL(id)
	half := e.mustSlot(randomBytes(7, 1000))
	hid, _ := IDFromBytes(half.Id)
	if err := os.WriteFile(e.svc.partialPath(hid), randomBytes(7, 1000)[:400], 0o600); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if r := e.get(u.Url, nil); r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("old URL after restart: %d", r.status)
	}
	if r := e.do(http.MethodHead, half.Url, nil, 0, nil); r.header.Get(headerUploadOffset) != "400" {
		t.Fatalf("offset after restart: %v", r.header)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.Dir, "url.key")); err != nil {
		t.Fatal(err)
	}
}

func TestConfig(t *testing.T) {
	_, err := Open(Config{BaseURL: "ftp://x/y", Workers: -1, Expiry: time.Millisecond,
		MaxTransfers: 4, MaxUserTransfers: 5, ReservedTransfers: 4, RateWindow: time.Millisecond})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"no directory", "base URL", "workers", "expiry",
		"max transfers per user 5 above", "reserved transfers 4", "rate window"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestOverloaded(t *testing.T) {
	e := newEnv(t, "fs", func(c *Config) { c.MaxTransfers = 1 })
	id := e.upload(randomBytes(9, 10))
	u := e.mustDownloadURL(id)
	held, why := e.svc.xfer.acquire(2, false, func() {}) // another user's transfer in progress
	if why != admitted {
		t.Fatal(why)
	}
	r := e.get(u.Url, nil)
	e.svc.xfer.release(held)
	if r.status != 503 || r.code() != codeOverloaded || r.header.Get("Retry-After") == "" {
		t.Fatalf("%d %v", r.status, r.code())
	}
	if r := e.get(u.Url, nil); r.status != 200 {
		t.Fatalf("after: %d %v", r.status, r.code())
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, "fs", func(c *Config) { c.RequestsPerMinute = 3 })
	data := randomBytes(8, 10)
	for range 3 {
		e.mustSlot(data)
	}
	a := e.slot(data)
	if a.code() != codeRateLimited || a.err.RetryAfterMs == 0 || a.err.RetryAfterMs > 60000 {
		t.Fatalf("%+v", a)
	}
	e.clock.advance(time.Minute)
	e.mustSlot(data)
	if c := e.counts(); c.Pending != 4 {
		t.Fatalf("%v", c)
	}
	_ = context.Background
}
