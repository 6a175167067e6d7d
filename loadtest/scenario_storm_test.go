package loadtest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestStormResumed: a small storm with --resume reports the storm step's
// own figures: every device reconnected, its handshakes counted on both
// sides and resumed, the server's CPU read over the step; and nothing was
// lost across it.
func TestStormResumed(t *testing.T) {
	cfg := small("storm")
	cfg.Resume, cfg.Rate = true, 200
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Storm
	if s == nil {
		t.Fatal("no storm figures")
	}
	if s.Reconnects != 24 || s.Seconds <= 0 || s.PerSec <= 0 || !s.Resume {
		t.Errorf("storm %+v: want 24 reconnects, a time and a rate", s)
	}
	// A handshake that fails under load is retried in full (crypto/tls
	// drops the ticket it offered), so some may not resume; none resuming
	// means the tickets were not kept.
	if s.Handshakes < 24 || s.Resumed == 0 || s.Resumed > s.Handshakes || s.ServerHandshakes < s.Handshakes {
		t.Errorf("storm handshakes %d, %d resumed, server %d: want ≥ 24, some resumed, the server counting them all",
			s.Handshakes, s.Resumed, s.ServerHandshakes)
	}
	if s.HandshakeBytesUp <= 0 || s.HandshakeBytesDown <= 0 || s.ServerCPUSeconds <= 0 || s.ServerCPUPerReconnectUS <= 0 {
		t.Errorf("storm %+v: bytes or server CPU not read", s)
	}
	if res.MessagesSent == 0 || res.MessagesDelivered < res.MessagesSent {
		t.Errorf("%d sent, %d delivered", res.MessagesSent, res.MessagesDelivered)
	}
	var b bytes.Buffer
	res.WriteText(&b)
	if !strings.Contains(b.String(), "storm (resumption on): 24 reconnects") {
		t.Errorf("report lacks the storm line:\n%s", b.String())
	}
}
