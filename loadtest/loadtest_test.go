package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	// Three groups of 10 over 24 accounts in two workers: groups span the
	// workers, the last one wraps around, and three members of each send.
	groups := small("groups")
	groups.Groups, groups.GroupSize, groups.GroupSenders, groups.Rate = 3, 10, 3, 150
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"idle", small("idle")},
		{"pairs flat out", small("pairs")},
		{"pairs at a rate", rated},
		{"groups", groups},
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
			// The series ends with the run, so the report's charts have a
			// line even for a run this short.
			if n := len(res.Series); n == 0 {
				t.Error("no point in the series")
			} else if last := res.Series[n-1]; last.Delivered != res.MessagesDelivered {
				t.Errorf("the series ends at %+v, not with the %d messages delivered", last, res.MessagesDelivered)
			}
			if tc.cfg.Scenario == "idle" {
				// Both memory figures: settled, and as the peers are read.
				if res.ServerRSS == 0 || res.ServerRSSUnforced == 0 {
					t.Errorf("server RSS %d settled, %d unforced: not read", res.ServerRSS, res.ServerRSSUnforced)
				}
				return
			}
			if res.MessagesSent == 0 || res.MessagesDelivered < res.MessagesSent {
				t.Errorf("%d sent, %d delivered", res.MessagesSent, res.MessagesDelivered)
			}
			if tc.cfg.Scenario == "groups" {
				if want := res.MessagesSent * int64(tc.cfg.GroupSize-1); res.MessagesDelivered != want {
					t.Errorf("%d group messages delivered %d times, want %d", res.MessagesSent, res.MessagesDelivered, want)
				}
				if res.FanoutLatency.Count == 0 || res.FanoutLatency.P99 < res.FanoutLatency.P50 || res.GroupMsgsPerSec == 0 {
					t.Errorf("fan-out %+v, %v group msgs/s", res.FanoutLatency, res.GroupMsgsPerSec)
				}
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

// TestEnvelopes: the envelopes scenario with users of 1 and 4 devices:
// every message reaches every device of its recipient and every other
// device of its sender once and in order (each device's ledger), the
// server refuses none (no DEVICES_CHANGED), and the SEND grows with the
// devices.
func TestEnvelopes(t *testing.T) {
	var up [2]float64
	for i, devices := range []int{1, 4} {
		cfg := small("envelopes")
		cfg.Connections, cfg.Devices, cfg.Rate = 8, devices, 200
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		res, err := Run(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("%d devices: %v", devices, err)
		}
		// Foreign: a delivery no ledger expects, or another device's
		// envelope.
		if !res.Passed || res.Counters.ErrorFrames != 0 || res.Counters.Foreign != 0 {
			t.Fatalf("%d devices: lost %d, duplicated %d, reordered %d, skipped %d, error frames %d, foreign %d",
				devices, res.Lost, res.Duplicated, res.Reordered, res.Gaps, res.Counters.ErrorFrames, res.Counters.Foreign)
		}
		// The peer's devices and the sender's other devices.
		if want := res.MessagesSent * int64(2*devices-1); res.MessagesSent == 0 || res.MessagesDelivered != want {
			t.Fatalf("%d devices: %d sent, %d delivered, want %d", devices, res.MessagesSent, res.MessagesDelivered, want)
		}
		up[i] = res.FrameBytesPerMsgUp
	}
	if up[1] < up[0]+3*envelopeOverhead {
		t.Fatalf("bytes up per message: %.0f for 1 device, %.0f for 4", up[0], up[1])
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

// TestGroupPlan: groups span workers and the plan refuses what the server
// or the verifier could not take.
func TestGroupPlan(t *testing.T) {
	p := groupPlan{n: 24, groups: 3, size: 10, senders: 3}
	if err := p.check(); err != nil {
		t.Fatal(err)
	}
	if got := p.member(2, 5); got != 1 {
		t.Errorf("member 5 of group 2 is account %d, want 1 (wrapped)", got)
	}
	for _, bad := range []groupPlan{
		{n: 24, groups: 1, size: 1, senders: 1},
		{n: 2000, groups: 1, size: 1025, senders: 1},
		{n: 24, groups: 9, size: 10, senders: 3}, // a device would send to two groups
		{n: 24, groups: 1, size: 10, senders: 11},
	} {
		if bad.check() == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestFanoutMerge: a message's fan-out completes when the parts of every
// worker add up to every member but the sender.
func TestFanoutMerge(t *testing.T) {
	cfg := &Config{GroupSize: 5}
	var f fanoutMerger
	f.add(cfg, []fanoutPart{{S: 7, C: 1, N: 2, I: 1_000_000, T: 3_000_000}})
	if f.hist.TotalCount() != 0 {
		t.Fatal("completed early")
	}
	f.add(cfg, []fanoutPart{{S: 7, C: 1, N: 2, I: 1_000_000, T: 9_000_000}, {S: 7, C: 2, N: 1, I: 1, T: 2}})
	if f.hist.TotalCount() != 1 || f.hist.Max() < 7990 || f.hist.Max() > 8010 || len(f.pending) != 1 {
		t.Errorf("count %d max %d pending %d: want one fan-out of 8 ms and one pending", f.hist.TotalCount(), f.hist.Max(), len(f.pending))
	}
}

// TestMedia moves a few files through the HTTPS endpoint and checks each
// by size and SHA-256.
func TestMedia(t *testing.T) {
	cfg := small("media")
	cfg.Connections, cfg.Workers, cfg.MediaSize, cfg.Duration = 4, 1, 300_000, time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.MediaUploads == 0 || res.MediaDownloads != res.MediaUploads || res.MediaCorrupt != 0 {
		t.Fatalf("%d uploads, %d downloads, %d corrupt", res.MediaUploads, res.MediaDownloads, res.MediaCorrupt)
	}
	if res.MediaUpMiBps <= 0 || res.MediaDownMiBps <= 0 || res.MediaUploadLatency.Count != res.MediaUploads || res.MediaDownloadLatency.P50 == 0 {
		t.Errorf("up %.1f MiB/s, down %.1f MiB/s, upload latency %+v, download latency %+v",
			res.MediaUpMiBps, res.MediaDownMiBps, res.MediaUploadLatency, res.MediaDownloadLatency)
	}
}

// TestMediaBytes: a file's bytes are the same each time they are made
// from its seed, and two files differ.
func TestMediaBytes(t *testing.T) {
	read := func(seed [32]byte) []byte {
		b, err := io.ReadAll(mediaBytes(seed, 1000))
		if err != nil || len(b) != 1000 {
			t.Fatalf("%d bytes, %v", len(b), err)
		}
		return b
	}
	a, b := read(mediaSeed("123", 4, 0)), read(mediaSeed("123", 4, 0))
	if !bytes.Equal(a, b) || bytes.Equal(a, read(mediaSeed("123", 4, 1))) {
		t.Error("same seed, other bytes; or other seed, same bytes")
	}
}

// TestGroupOrderMismatch: two workers that saw different messages at one
// gseq of a group fail the run, and so does a mismatch a worker counted.
func TestGroupOrderMismatch(t *testing.T) {
	cfg := &Config{Scenario: "groups", GroupSize: 3}
	c := &coordinator{cfg: cfg, res: &Result{}}
	for _, order := range [][]orderEntry{
		{{G: 0, Q: 3, S: 7, C: 1}, {G: 0, Q: 4, S: 8, C: 1}},
		{{G: 0, Q: 3, S: 7, C: 1}, {G: 0, Q: 4, S: 7, C: 2}, {G: 1, Q: 4, S: 9, C: 1}},
	} {
		c.workers = append(c.workers, &workerProc{result: &event{Order: order}})
	}
	c.assembleGroups()
	if c.res.OrderMismatch != 1 {
		t.Fatalf("order mismatch %d, want 1 (gseq 4 of group 0)", c.res.OrderMismatch)
	}
	c.res.Counters.OrderMismatch = 2
	c.res.OrderMismatch = 0
	c.assembleGroups()
	if c.res.OrderMismatch != 3 {
		t.Errorf("order mismatch %d, want 3 (1 across workers + 2 within)", c.res.OrderMismatch)
	}
}

// TestAbuse: the abuse scenario's attack is refused by the server's rate
// limits, which the report names by code and by limit (the two agree),
// while the bystanders' messages all arrive. How much the attack gets
// through in two seconds depends on the machine (the race detector slows
// it tenfold), so the send limit is required to refuse only when the
// attack went past its burst and rate.
func TestAbuse(t *testing.T) {
	cfg := small("abuse")
	cfg.Rate = 200
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed || res.MessagesSent == 0 || res.MessagesDelivered != res.MessagesSent {
		t.Fatalf("bystanders: %d sent, %d delivered, passed %v", res.MessagesSent, res.MessagesDelivered, res.Passed)
	}
	a := res.Abuse
	if a == nil {
		t.Fatal("no abuse result")
	}
	refusedBy := func(prefix string) (n int64) {
		for limit, v := range a.ServerRefusals {
			if strings.HasPrefix(limit, prefix) {
				n += v
			}
		}
		return n
	}
	for _, k := range []struct{ kind, accepted, limits string }{
		{"REQUEST_CODE", "CODE_SENT", "codes_"}, {"LINK_REQUEST", "LINK_CODE", "link_requests_"}, {"SEND", "SENT", "sends_"},
	} {
		out := a.Requests[k.kind]
		if out["sent"] == 0 || out[k.accepted] == 0 || out[k.accepted]+out["RATE_LIMITED"] != out["sent"] {
			t.Errorf("%s: %v; want some accepted and every request answered %s or RATE_LIMITED", k.kind, out, k.accepted)
		}
		if server := refusedBy(k.limits); server != out["RATE_LIMITED"] {
			t.Errorf("%s: the client saw %d RATE_LIMITED, the server's limits %s* refused %d (%v)", k.kind, out["RATE_LIMITED"], k.limits, server, a.ServerRefusals)
		}
	}
	// Each connection asks once more than its 3.
	for _, limit := range []string{"codes_per_connection", "link_requests_per_connection"} {
		if a.ServerRefusals[limit] == 0 {
			t.Errorf("the server's refusals %v lack %s", a.ServerRefusals, limit)
		}
	}
	// The default send budget: a burst of 2,000, then 1,000 a second.
	if sends := a.Requests["SEND"]; sends["sent"] > 2000+1000*int64(cfg.Duration/time.Second)+500 && sends["RATE_LIMITED"] == 0 {
		t.Errorf("SEND: %v; want RATE_LIMITED beyond the account's budget", sends)
	}
	var text strings.Builder
	res.WriteText(&text)
	if !strings.Contains(text.String(), "refused by the server's limits: ") || !strings.Contains(text.String(), "codes_per_connection") {
		t.Errorf("the report does not show the refusals by limit:\n%s", text.String())
	}
}

// TestGroupEnvelopes: groups whose members have several devices, opaque
// and end to end. Every group message reaches every device of every
// other member and the sender's other devices once, in order and in the
// group's one order; end to end, each sender first hands its sender key
// to every other member in 1:1 envelopes, which reach each member device
// once and each of the sender's companions as a copy of every send; the
// server refuses nothing (no DEVICES_CHANGED).
func TestGroupEnvelopes(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		devices  int
	}{{"groups", 2}, {"group-envelopes", 3}} {
		t.Run(fmt.Sprintf("%s/%d devices", tc.scenario, tc.devices), func(t *testing.T) {
			// Two groups of 5 over 8 accounts in two workers: the second
			// wraps around to the first's members, across the workers.
			cfg := small(tc.scenario)
			cfg.Connections, cfg.Devices, cfg.Rate = 8, tc.devices, 100
			cfg.Groups, cfg.GroupSize, cfg.GroupSenders = 2, 5, 2
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Passed || res.Counters.ErrorFrames != 0 || res.Counters.Foreign != 0 {
				t.Fatalf("lost %d, duplicated %d, reordered %d, skipped %d, order mismatches %d, error frames %d, foreign %d",
					res.Lost, res.Duplicated, res.Reordered, res.Gaps, res.OrderMismatch, res.Counters.ErrorFrames, res.Counters.Foreign)
			}
			perMessage := int64(cfg.GroupSize*cfg.Devices - 1)
			if res.MessagesSent == 0 || res.MessagesDelivered != res.MessagesSent*perMessage {
				t.Fatalf("%d group messages delivered %d times, want %d", res.MessagesSent, res.MessagesDelivered, res.MessagesSent*perMessage)
			}
			k := res.KeyDistribution
			if tc.scenario == "groups" {
				if k != nil {
					t.Fatalf("opaque groups handed out sender keys: %+v", k)
				}
				return
			}
			// Each sender: one send to each other member, reaching its
			// devices, and copies on the sender's other devices.
			senders, others := int64(cfg.Groups*cfg.GroupSenders), int64(cfg.GroupSize-1)
			if want := senders * others; k == nil || k.Sends != want {
				t.Fatalf("sender keys: %+v, want %d sends", k, want)
			}
			if want := senders * others * int64(2*cfg.Devices-1); k.Deliveries != want {
				t.Fatalf("sender keys: %d deliveries, want %d", k.Deliveries, want)
			}
			if k.UpPerSend < float64((2*cfg.Devices-1)*senderKeyEnvelope) || res.FrameBytesPerMsgUp < float64(cfg.MessageSize+senderKeyOverhead) {
				t.Errorf("bytes up: %.0f per sender key send, %.0f per group message", k.UpPerSend, res.FrameBytesPerMsgUp)
			}
		})
	}
}

// TestProfileDirMade: Run makes the workers' profile directory, parents
// and all (the workers only create their files in it), and refuses one it
// cannot make with one line before any work starts: nothing is spawned.
func TestProfileDirMade(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profiles", "run")
	if err := makeProfileDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("profile directory %s: %v, want it made", dir, err)
	}
	if err := makeProfileDir(dir); err != nil {
		t.Fatalf("again: %v, want none", err)
	}

	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := small("pairs")
	cfg.ProfileDir = filepath.Join(blocked, "profiles")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err == nil || res != nil || !strings.HasPrefix(err.Error(), "loadtest: profile directory "+cfg.ProfileDir+": ") ||
		strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run with the profile directory under a file: result %v, err %q; want one line naming the directory and no run", res, err)
	}
}
