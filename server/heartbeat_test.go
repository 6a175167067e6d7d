package server

import (
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/router"
)

// TestHeartbeatFor is the clamp of [S-6-8]: 0 asks for the default, any
// other request is clamped into [MinHeartbeat, MaxHeartbeat].
func TestHeartbeatFor(t *testing.T) {
	cfg := Config{Addr: "127.0.0.1:0", Plaintext: true, Router: &router.Router{}, Conns: NewRegistry(0, 1)}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ asked, want uint32 }{
		{0, 60}, {1, 10}, {9, 10}, {10, 10}, {45, 45}, {60, 60}, {600, 600},
		{1800, 1800}, {1801, 1800}, {1 << 31, 1800},
	} {
		if got := cfg.heartbeatFor(tt.asked); uint32(got) != tt.want {
			t.Errorf("heartbeatFor(%d) = %d, want %d", tt.asked, got, tt.want)
		}
	}
	// Defaults follow a Heartbeat outside 10 s..30 min.
	for _, hb := range []time.Duration{time.Second, 2 * time.Hour} {
		c := Config{Heartbeat: hb}
		c.setDefaults()
		if c.MinHeartbeat > hb || c.MaxHeartbeat < hb {
			t.Errorf("heartbeat %v: defaults %v..%v", hb, c.MinHeartbeat, c.MaxHeartbeat)
		}
	}
}

func TestHeartbeatConfigValidate(t *testing.T) {
	cfg := Config{Addr: "127.0.0.1:0", Plaintext: true, Router: &router.Router{}, Conns: NewRegistry(0, 1),
		Heartbeat: time.Minute, MinHeartbeat: 2 * time.Minute, MaxHeartbeat: 20 * time.Hour}
	cfg.setDefaults()
	err := cfg.validate()
	for _, want := range []string{"min heartbeat", "max heartbeat"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: %v; want it to mention %q", err, want)
		}
	}
}
