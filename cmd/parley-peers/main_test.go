package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// skipPeersEnv lets a developer without the peers installed skip their
// test on purpose (README.md); CI installs them and never sets it.
const skipPeersEnv = "PARLEY_SKIP_PEERS"

// TestPeers runs a tiny pairs measurement against each peer (apt-get
// install mosquitto nats-server). A peer that is not installed fails the
// test, so CI cannot lose the comparison silently, unless PARLEY_SKIP_PEERS=1
// says to skip it.
func TestPeers(t *testing.T) {
	for _, p := range []struct{ peer, bin string }{{"mosquitto", "mosquitto"}, {"nats", "nats-server"}} {
		t.Run(p.peer, func(t *testing.T) {
			if _, err := exec.LookPath(p.bin); err != nil {
				if os.Getenv(skipPeersEnv) == "1" {
					t.Skipf("%s not installed, and %s=1", p.bin, skipPeersEnv)
				}
				t.Fatalf("%s not installed: apt-get install mosquitto nats-server, or set %s=1 to skip the peer comparison", p.bin, skipPeersEnv)
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
