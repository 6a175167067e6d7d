package main

import (
	"testing"

	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestHeartbeatBoundsFromEnvironment: PARLEY_HEARTBEAT_MAX and
// PARLEY_HEARTBEAT_MIN set --heartbeat-max and --heartbeat-min, as every
// flag's variable sets its default: a client asking for an hour is granted
// the maximum, one asking for a second the minimum.
func TestHeartbeatBoundsFromEnvironment(t *testing.T) {
	t.Setenv("PARLEY_HEARTBEAT_MAX", "2m")
	t.Setenv("PARLEY_HEARTBEAT_MIN", "20s")
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	addr, fp := d.addr, d.fingerprint(t)
	alice, _ := registerPair(t, d, fp)
	for _, c := range []struct{ ask, want uint32 }{{3600, 120}, {1, 20}} {
		conn := wiretest.Dial(t, addr, fp)
		conn.Send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: alice.ID, Device: alice.Device,
			Credential: alice.Cred, HeartbeatS: c.ask})
		var ok pb.LoginOk
		conn.ExpectProto(protocol.KindLoginOK, &ok)
		if ok.HeartbeatS != c.want {
			t.Errorf("asked for %d s, granted %d s; want %d", c.ask, ok.HeartbeatS, c.want)
		}
		conn.Conn.Close()
	}
}
