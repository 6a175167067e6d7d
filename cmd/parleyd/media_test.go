package main

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

var mediaBig = flag.Int("media.big", 0, "run TestMediaBigFlatMemory with a media of this many MiB (200 for the figure in docs/benchmarks.md)")

// TestMediaBigFlatMemory uploads and downloads one large media through a
// real parleyd process and reports the process's peak RSS: the transfer
// streams through a fixed buffer, so the peak does not grow with the
// media's size. By default it moves 16 MiB; -media.big=200 is the figure
// of docs/benchmarks.md:
//
//	go test ./cmd/parleyd -run TestMediaBigFlatMemory -media.big=200 -v
func TestMediaBigFlatMemory(t *testing.T) {
	mib := 16
	if *mediaBig > 0 {
		mib = *mediaBig
	}
	size := int64(mib) << 20
	d := startDaemon(t, t.TempDir(), "")
	addr, fp := d.addr, d.fingerprint(t)

	c := wiretest.Dial(t, addr, fp)
	u := c.Register("+15550001234", func(string) string { return testCode })
	c.Login(u, 0)

	// The media: a deterministic random stream, hashed in a first pass.
	content := func() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{7}), size) }
	h := sha256.New()
	if _, err := io.Copy(h, content()); err != nil {
		t.Fatal(err)
	}
	sum := h.Sum(nil)

	c.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: 1, Type: pb.ContentType_CONTENT_DOCUMENT, Size: uint64(size), Sha256: sum})
	var slot pb.MediaUploadSlot
	expect(t, c, protocol.KindMediaUploadSlot, &slot)

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: wiretest.TLSConfig(fp)}}
	defer hc.CloseIdleConnections()

	pid := d.cmd.Process.Pid
	base := procStatus(t, pid, "VmRSS")
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // sample RSS while the transfer runs
		defer close(sampled)
		for {
			if v := procStatus(t, pid, "VmRSS"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	req, _ := http.NewRequest(http.MethodPut, slot.Url, content())
	req.ContentLength = size
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("PUT: %s", res.Status)
	}
	up := time.Since(start)

	c.Send(protocol.KindMediaDownload, &pb.MediaDownload{Rid: 2, Id: slot.Id})
	var url pb.MediaDownloadUrl
	expect(t, c, protocol.KindMediaDownloadURL, &url)
	start = time.Now()
	res, err = hc.Get(url.Url)
	if err != nil {
		t.Fatal(err)
	}
	h.Reset()
	n, err := io.Copy(h, res.Body)
	res.Body.Close()
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), sum) {
		t.Fatalf("GET: %d bytes, %v, hash equal %v", n, err, bytes.Equal(h.Sum(nil), sum))
	}
	down := time.Since(start)
	close(stop)
	<-sampled
	hwm := procStatus(t, pid, "VmHWM")

	mb := func(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }
	t.Logf("media of %d MiB: upload %v (%.0f MiB/s), download %v (%.0f MiB/s); parleyd RSS before %s, peak sampled during %s, VmHWM (peak since start) %s",
		mib, up.Round(time.Millisecond), float64(mib)/up.Seconds(), down.Round(time.Millisecond), float64(mib)/down.Seconds(),
		mb(base), mb(peak.Load()), mb(hwm))
	// Flat: the transfer may cost a few buffers and TLS records, not the
	// media's size.
	if grow := peak.Load() - base; grow > 48<<10 {
		t.Errorf("RSS grew by %s during a %d MiB transfer", mb(grow), mib)
	}
}

// expect reads frames until one of kind k and decodes it into m.
func expect(t *testing.T, c *wiretest.Client, k protocol.Kind, m proto.Message) {
	t.Helper()
	for {
		f, err := c.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("waiting for %v: %v", k, err)
		}
		if f.Kind == protocol.KindError {
			t.Fatalf("error %x waiting for %v", f.Body, k)
		}
		if f.Kind == k {
			if err := codec.ParseProto(f.Body, m); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// procStatus returns a kB field of /proc/pid/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Error(err)
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}
