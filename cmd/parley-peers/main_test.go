package main

import (
	"context"
	"io"
	"os/exec"
	"testing"
	"time"
)

// TestPeers runs a tiny pairs measurement against each peer installed
// here (apt-get install mosquitto nats-server); a peer not installed is
// skipped.
func TestPeers(t *testing.T) {
	for _, p := range []struct{ peer, bin string }{{"mosquitto", "mosquitto"}, {"nats", "nats-server"}} {
		t.Run(p.peer, func(t *testing.T) {
			if _, err := exec.LookPath(p.bin); err != nil {
				t.Skipf("%s not installed", p.bin)
			}
			res, err := measure(context.Background(), config{
				peer: p.peer, scenario: "pairs", conns: 4, duration: time.Second, warmup: 100 * time.Millisecond,
				rate: 200, inflight: 4,
			}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if res.MessagesSent == 0 || res.MessagesDelivered != res.MessagesSent || res.Latency.P50 == 0 {
				t.Fatalf("%+v", res)
			}
		})
	}
}

// TestMQTTRemainingLength checks the variable-length encoding against the
// examples of MQTT 3.1.1 section 2.2.3.
func TestMQTTRemainingLength(t *testing.T) {
	for n, want := range map[int]string{0: "\x00", 127: "\x7f", 128: "\x80\x01", 16383: "\xff\x7f", 16384: "\x80\x80\x01"} {
		if got := string(appendRemaining(nil, n)); got != want {
			t.Errorf("%d: % x, want % x", n, got, want)
		}
	}
}
