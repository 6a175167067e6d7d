package admin_test

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/admin"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

func TestMain(m *testing.M) {
	// net/http's idle client connections close on their own.
	nodetest.VerifyMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// startNode starts a node with an admin endpoint on a free port, with
// change applied to its configuration.
func startNode(t *testing.T, change func(*node.Config)) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, func(c *node.Config) {
		c.AdminAddr = "127.0.0.1:0"
		if change != nil {
			change(c)
		}
	})
}

// TestMetricsMove: the admin endpoint of a real node serves Prometheus
// metrics that follow what the node does.
func TestMetricsMove(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	before := scrape(t, client, base)
	for _, name := range []string{"parley_connections_open", "parley_shard_commits_total", "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes",
		"parley_shard_outbox_unconfirmed", "parley_shard_outbox_resends_total", "parley_shard_refused_total", "parley_shard_pending_links", "parley_shard_aborted_cycles_total"} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	c, _ := n.Login(t, alice, 0)
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
		{`parley_shard_records_total`, 3},
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
	n := startNode(t, func(c *node.Config) { c.Shards = 1; c.Media = media.Config{MinFreeBytes: 1 << 62} })
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	alice := n.Register(t, n.Phone())
	c, _ := n.Login(t, alice, 0)
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
