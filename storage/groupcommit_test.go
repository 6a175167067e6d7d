package storage_test

import (
	"testing"
	"time"

	"github.com/parley-im/parley/storage"
)

// TestSyncWaitOnlyWhenBusy: the syncer waits Config.SyncWait before a
// sync only when the sync before it ended less than SyncBusy ago. A shard
// whose every sync counts as after a quiet spell never waits, even with a
// wait of an hour; one whose every sync counts as busy waits before each
// sync after the first, and its promises are still answered.
func TestSyncWaitOnlyWhenBusy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		wait, busy time.Duration
		waits      bool
	}{
		{"quiet: never waits", time.Hour, time.Nanosecond, false},
		{"busy: waits", time.Millisecond, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, 1, func(c *storage.Config) { c.SyncWait, c.SyncBusy = tc.wait, tc.busy })
			a := n.register(t, "+15550000001") // REQUEST_CODE and VERIFY: promises, answered after a sync
			b := n.register(t, "+15550000002")
			ea, eb := n.login(t, a, 0), n.login(t, b, 0)
			id := n.send(t, a, ea, b.user, 1, "after the wait")
			if m := eb.messages(t, 1)[0]; m.ID != id {
				t.Fatalf("got message %d, want %d", m.ID, id)
			}
			st := n.shards[0].Stats()
			if got := st.SyncWaits > 0; got != tc.waits {
				t.Errorf("%d of %d syncs waited; want waits: %v", st.SyncWaits, st.Syncs, tc.waits)
			}
		})
	}
}
