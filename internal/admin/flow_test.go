package admin_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestFlowMetrics: messages stored, delivered and acknowledged, the
// offline backlog, registrations, codes, errors by code, frames sent,
// the build and the commit histogram by shard all move with the traffic.
func TestFlowMetrics(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	before := scrape(t, client, base)

	alice, bob, carol := n.RegisterOn(t, 0), n.RegisterOn(t, 1), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	a.SendText(bob.ID, 1, "hello")
	m := b.Message()
	b.Ack(m.Seq)
	// The shard applies a connection's ops in order: once the device list
	// comes, the ack was applied.
	b.Send(protocol.KindDevices, &pb.Devices{Rid: b.NextRID()})
	b.Expect(protocol.KindDeviceList, protocol.KindSynced)
	// The ack's delivered receipt reaches alice now or later: taken here,
	// it cannot arrive where her ERROR is expected below.
	if r := a.Receipt(); r.Peer != bob.ID {
		t.Fatalf("alice's receipt is from %d, want bob (%d)", r.Peer, bob.ID)
	}
	a.SendText(carol.ID, 2, "while you were away") // carol stays offline
	a.Send(protocol.KindRevokeDevice, &pb.RevokeDevice{Rid: a.NextRID(), Device: 9})
	a.ExpectError(protocol.CodeNotFound)

	after := scrape(t, client, base)
	for _, m := range []struct {
		name string
		min  float64
	}{
		{"parley_messages_stored_total", 2},
		{"parley_entries_delivered_total", 1},
		{"parley_entries_acknowledged_total", 1},
		{"parley_registrations_total", 3},
		{"parley_codes_issued_total", 3},
		{"parley_errors_sent_total", 1},
		{"parley_frames_sent_total", 10},
		{"parley_inbox_backlog_entries", 1},
		{"parley_shard_commit_duration_seconds_count", 3},
	} {
		if got := after[m.name] - before[m.name]; got < m.min {
			t.Errorf("%s moved by %v, want at least %v", m.name, got, m.min)
		}
	}
	if after["parley_build_info"] != 1 {
		t.Errorf("parley_build_info = %v, want 1", after["parley_build_info"])
	}
	if _, ok := after["parley_shard_commit_seconds_total"]; ok {
		t.Error("parley_shard_commit_seconds_total still served: it duplicates the histogram's sum")
	}

	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`parley_errors_sent_total{code="ERROR_NOT_FOUND"} 1`, `parley_shard_commit_duration_seconds_count{shard="0"}`,
		`parley_shard_commit_duration_seconds_count{shard="1"}`, `parley_inbox_backlog_entries{shard="1"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
