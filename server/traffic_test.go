package server

import (
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// TestOnlyPongs: a heartbeat's answer is recognised, so the connection's
// AEADs are dropped right after it; anything else in the output keeps
// them until the next trim.
func TestOnlyPongs(t *testing.T) {
	pong := codec.AppendFrame(nil, protocol.KindPong, nil)
	for _, tc := range []struct {
		name   string
		frames []byte
		want   bool
	}{
		{"one PONG", pong, true},
		{"two PONGs", append(append([]byte(nil), pong...), pong...), true},
		{"PONG and SENT", codec.AppendSent(append([]byte(nil), pong...), 1, 1<<40), false},
		{"SENT", codec.AppendSent(nil, 1, 1<<40), false},
		{"PONG and a partial frame", append(append([]byte(nil), pong...), 0x05), false},
	} {
		if got := onlyPongs(tc.frames); got != tc.want {
			t.Errorf("%s: onlyPongs = %v, want %v", tc.name, got, tc.want)
		}
	}
}
