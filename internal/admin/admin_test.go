package admin_test

import (
	"context"
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

// TestMetricsMove: the admin endpoint of a real node serves Prometheus
// metrics that follow what the node does.
func TestMetricsMove(t *testing.T) {
	n, err := node.Start(node.Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Shards: 2,
		Storage: storage.Config{TestPrefix: "+1999", TestCode: "000000"},
	})
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
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	before := scrape(t, client, base)
	for _, name := range []string{"parley_connections_open", "parley_shard_commits_total", "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes"} {
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
