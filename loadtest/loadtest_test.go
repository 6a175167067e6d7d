package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the run's workers and spawned
// nodes: Run starts os.Executable() with the child role in the
// environment.
func TestMain(m *testing.M) {
	if ran, code := RunChild(); ran {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// small is a short run at small scale against a spawned node.
func small(scenario string) Config {
	return Config{
		Scenario:    scenario,
		Spawn:       true,
		SpawnShards: 2,
		Connections: 24,
		Workers:     2,
		Duration:    2 * time.Second,
		Warmup:      500 * time.Millisecond,
		Queue:       30,
		ChurnLife:   300 * time.Millisecond,
		IdleSettle:  100 * time.Millisecond,
	}
}

// TestScenarios runs every scenario at small scale and checks that every
// message arrived once and in order.
func TestScenarios(t *testing.T) {
	rated := small("pairs")
	rated.Rate = 400
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"idle", small("idle")},
		{"pairs flat out", small("pairs")},
		{"pairs at a rate", rated},
		{"offline", small("offline")},
		{"storm", small("storm")},
		{"churn", small("churn")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Passed || res.Lost+res.Duplicated+res.Reordered+res.Gaps != 0 {
				t.Fatalf("lost %d, duplicated %d, reordered %d, skipped %d", res.Lost, res.Duplicated, res.Reordered, res.Gaps)
			}
			if res.Connections != 24 || res.ServerRSS == 0 {
				t.Errorf("connections %d, server RSS %d", res.Connections, res.ServerRSS)
			}
			if tc.cfg.Scenario == "idle" {
				return
			}
			if res.MessagesSent == 0 || res.MessagesDelivered < res.MessagesSent {
				t.Errorf("%d sent, %d delivered", res.MessagesSent, res.MessagesDelivered)
			}
			if tc.cfg.Scenario != "offline" && (res.Latency.Count == 0 || res.Latency.P50 == 0 || res.MsgsPerSec == 0) {
				t.Errorf("latency %+v, rate %v", res.Latency, res.MsgsPerSec)
			}
			if tc.cfg.Scenario == "storm" && res.Counters.Logins < 48 {
				t.Errorf("%d logins: want every device logged in twice", res.Counters.Logins)
			}
			if tc.cfg.Scenario == "churn" && res.Counters.Reconnects == 0 {
				t.Error("no reconnects during churn")
			}
		})
	}
}

// TestInjectedDuplicateFails: the verifier counts a message processed
// twice and fails the run.
func TestInjectedDuplicateFails(t *testing.T) {
	cfg := small("pairs")
	cfg.InjectDuplicate = 50
	res, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrVerification) {
		t.Fatalf("err %v, want ErrVerification", err)
	}
	if res == nil || res.Duplicated == 0 || res.Passed {
		t.Fatalf("result %+v: want duplicates counted and the run failed", res)
	}
}

// TestResultJSON: the JSON result has the fields the tool promises.
func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(&Result{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "connections", "messages_sent", "messages_delivered", "lost", "duplicated",
		"reordered", "msgs_per_sec", "latency_us", "bytes_per_msg_up", "bytes_per_msg_down", "server_rss_bytes",
		"server_rss_per_conn_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON result lacks %q", k)
		}
	}
	lat, _ := m["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency_us lacks %q", k)
		}
	}
}

// TestVerifier checks the bookkeeping of one direction.
func TestVerifier(t *testing.T) {
	var d direction
	for _, c := range []uint64{1, 2, 3, 4} {
		d.ack(c)
	}
	if v := d.receive(1); v != deliveredOK {
		t.Errorf("first delivery: %v", v)
	}
	if v := d.receive(1); v != deliveredTwice {
		t.Errorf("second delivery of 1: %v", v)
	}
	if v := d.receive(3); v != deliveredOK {
		t.Errorf("3: %v", v)
	}
	if v := d.receive(2); v != deliveredOutOfOrder {
		t.Errorf("2 after 3: %v", v)
	}
	d.markResent(5)
	d.receive(6)
	if v := d.receive(5); v != deliveredOK {
		t.Errorf("resent 5 after 6: %v, want accepted", v)
	}
	if got := d.lost(); got != 1 {
		t.Errorf("lost %d, want 1 (cmid 4)", got)
	}
}

// TestConfigErrors: a bad config reports every problem at once.
func TestConfigErrors(t *testing.T) {
	cfg := Config{Scenario: "nope", Connections: 1, InFlight: 500, MessageSize: 3}
	cfg.setDefaults()
	err := cfg.validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"unknown scenario", "no server", "1 connections", "in flight 500", "message size 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

// TestHTMLReport: the HTML report is self-contained and charts the series.
func TestHTMLReport(t *testing.T) {
	r := &Result{Scenario: "pairs", Passed: true, Series: []Point{{T: 1, Rate: 100, LatencyP50: 900, LatencyP99: 3000}, {T: 2, Rate: 120, LatencyP50: 800, LatencyP99: 2500}}}
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if strings.Count(page, "<svg") != 2 || strings.Count(page, "<polyline") != 3 {
		t.Errorf("want two charts with three lines:\n%s", page)
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "src=") || strings.Contains(page, "href=") {
		t.Error("the page loads something")
	}
}
