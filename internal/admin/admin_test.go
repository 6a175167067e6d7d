package admin_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/admin"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet's package-level goroutine pool (ants) lives for the process.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		// net/http's idle client connections close on their own.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// startNode starts a node of cfg with an admin endpoint and test phone
// numbers, shut down when the test ends.
func startNode(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	cfg.DataDir, cfg.Listen, cfg.AdminAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	cfg.Storage = storage.Config{TestPrefix: "+1999", TestCode: "000000"}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return n
}

// TestMetricsMove: the admin endpoint of a real node serves Prometheus
// metrics that follow what the node does.
func TestMetricsMove(t *testing.T) {
	n := startNode(t, node.Config{Shards: 2})
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	before := scrape(t, client, base)
	for _, name := range []string{"parley_connections_open", "parley_shard_commits_total", "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes",
		"parley_shard_outbox_unconfirmed", "parley_shard_outbox_resends_total", "parley_shard_refused_total", "parley_shard_pending_links", "parley_shard_aborted_cycles_total"} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	code := func(string) string { return "000000" }
	c := wiretest.Dial(t, n.Addr().String(), n.Fingerprint())
	alice := c.Register("+19990000001", code)
	bob := c.Register("+19990000002", code)
	c.Login(alice, 0)
	c.SendText(bob.ID, 1, "hello")

	after := scrape(t, client, base)
	for _, m := range []struct {
		name string
		min  float64
	}{
		{"parley_connections_accepted_total", 1},
		{"parley_connections_authenticated", 1},
		{"parley_tls_handshakes_total", 1},
		{"parley_frames_received_total", 6},
		{"parley_bytes_received_total", 100},
		{"parley_bytes_sent_total", 100},
		{`parley_shard_entries_total`, 1},
		{"parley_shard_commit_duration_seconds_count", 3},
		{"parley_shard_commit_ops_sum", 5},
	} {
		if got := after[m.name] - before[m.name]; got < m.min {
			t.Errorf("%s moved by %v, want at least %v", m.name, got, m.min)
		}
	}

	resp, err := client.Get(base + "/debug/memory?settle=1")
	if err != nil {
		t.Fatal(err)
	}
	var mem admin.Memory
	err = json.NewDecoder(resp.Body).Decode(&mem)
	resp.Body.Close()
	if err != nil || mem.HeapInuse == 0 || mem.RSS == 0 || !mem.Settled {
		t.Errorf("/debug/memory: %+v, %v", mem, err)
	}
	resp, err = client.Get(base + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("/debug/pprof/goroutine: %s", resp.Status)
	}
}

// TestMediaMetrics: the media service's limits show in the metrics:
// refusals by reason, slow transfers cut, bytes staged, free space.
func TestMediaMetrics(t *testing.T) {
	// No disk is this large: every new upload meets the reserve.
	n := startNode(t, node.Config{Shards: 1, Media: media.Config{MinFreeBytes: 1 << 62}})
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	c := wiretest.Dial(t, n.Addr().String(), n.Fingerprint())
	alice := c.Register("+19990000001", func(string) string { return "000000" })
	c.Login(alice, 0)
	sum := sha256.Sum256([]byte("media"))
	c.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: c.NextRID(), Type: pb.ContentType_CONTENT_IMAGE, Size: 5, Sha256: sum[:]})
	var e pb.Error
	c.ExpectProto(protocol.KindError, &e, protocol.KindSynced)
	if e.Code != protocol.CodeMediaStorageFull || e.RetryAfterMs == 0 {
		t.Errorf("answer %+v, want MEDIA_STORAGE_FULL with retry_after_ms", &e)
	}

	got := scrape(t, client, base)
	for name, want := range map[string]float64{
		"parley_media_refused_total":            1,
		"parley_media_slow_transfers_cut_total": 0,
		"parley_media_transfers":                0,
		"parley_media_staged_bytes":             0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if got["parley_media_free_bytes"] <= 0 {
		t.Errorf("parley_media_free_bytes = %v", got["parley_media_free_bytes"])
	}
}

// scrape reads /metrics and sums every sample of each metric name over its
// labels.
func scrape(t *testing.T, client *http.Client, base string) map[string]float64 {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			_, rest, _ = strings.Cut(line, "} ")
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[name] += v
	}
	return out
}
