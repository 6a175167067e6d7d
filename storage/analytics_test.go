package storage_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// sink is an analytics.Sink that keeps what the shards emit.
type sink struct {
	mu     sync.Mutex
	events []analytics.Event
	added  chan struct{}
}

func newSink() *sink { return &sink{added: make(chan struct{}, 1)} }

func (s *sink) Emit(e analytics.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	select {
	case s.added <- struct{}{}:
	default:
	}
}

// find returns the events of type typ that match.
func (s *sink) find(typ string, match func(analytics.Event) bool) []analytics.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []analytics.Event
	for _, e := range s.events {
		if e.Type == typ && (match == nil || match(e)) {
			out = append(out, e)
		}
	}
	return out
}

// wait waits until an event of type typ that matches has been emitted.
func (s *sink) wait(t *testing.T, typ string, match func(analytics.Event) bool) analytics.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := s.find(typ, match); len(got) > 0 {
			return got[0]
		}
		select {
		case <-s.added:
		case <-deadline:
			t.Fatalf("no %s event emitted", typ)
		}
	}
}

// TestAnalyticsEvents: the shards emit one event per registration, login,
// accepted message, delivery, read and group creation, with ids and sizes
// only, from the shard that committed it, for users on two shards.
func TestAnalyticsEvents(t *testing.T) {
	events := newSink()
	n := newNode(t, 2, func(c *storage.Config) { c.Events = events })
	alice := n.register(t, n.phoneOn(t, 0, 1))
	bob := n.register(t, n.phoneOn(t, 1, 2))
	events.wait(t, analytics.TypeRegistered, func(e analytics.Event) bool { return e.User == bob.user && e.Shard == 1 })
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	events.wait(t, analytics.TypeLogin, func(e analytics.Event) bool { return e.User == alice.user && e.Device == alice.device })

	id := n.send(t, alice, aep, bob.user, 1, "twenty bytes of text")
	acc := events.wait(t, analytics.TypeMessageAccepted, func(e analytics.Event) bool { return e.ID == id })
	if acc.User != alice.user || acc.Peer != bob.user || acc.Size != 20 || acc.Shard != 1 || acc.TimeMS == 0 {
		t.Fatalf("message_accepted %+v, want from %d to %d, 20 bytes, on shard 1", acc, alice.user, bob.user)
	}
	m := bep.take(t, protocol.KindMessage).(codec.Message)
	n.ack(bob, bep, m.Seq)
	events.wait(t, analytics.TypeMessageDelivered, func(e analytics.Event) bool { return e.User == bob.user && e.ID == id })
	n.submit(storage.Op{Kind: storage.OpRead, User: alice.user, From: bob.user, UpTo: id, RID: 9, Conn: bep.ref})
	events.wait(t, analytics.TypeMessageRead, func(e analytics.Event) bool { return e.User == bob.user && e.Peer == alice.user })

	g := n.createGroup(t, alice, aep, "analytics", bob.user).Group
	events.wait(t, analytics.TypeGroupCreated, func(e analytics.Event) bool { return e.Group == g && e.User == alice.user })
}

// TestAnalyticsAbortedCycleEmitsNothing: a cycle aborted by a storage
// error commits nothing, so the group message it accepted before a
// member's unreadable record aborted it is not counted; the retry after
// the repair is, once.
func TestAnalyticsAbortedCycleEmitsNothing(t *testing.T) {
	fs := vfs.NewMem()
	events := newSink()
	n := newNodeOn(t, fs, 1, func(c *storage.Config) { c.Events = events })
	alice := n.register(t, n.phoneOn(t, 0, 7))
	bob := n.register(t, n.phoneOn(t, 0, 8))
	carol := n.register(t, n.phoneOn(t, 0, 9))
	aep := n.login(t, alice, 0)
	g := n.createGroup(t, alice, aep, "abort", bob.user, carol.user).Group
	n.close()
	var saved []byte
	rawUpdate(t, fs, "shard-0", func(db *pebble.DB) {
		v, closer, err := db.Get(userRecordKey(carol.user))
		must(err)
		saved = append([]byte(nil), v...)
		must(closer.Close())
		must(db.Set(userRecordKey(carol.user), []byte{0xff, 0xff, 0xff}, pebble.Sync))
	})
	n.open(1)
	aep = n.login(t, alice, 0)
	send := storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, Group: g, CMID: 1, Body: []byte("lost cycle")}
	op := send
	op.Conn = aep.ref
	n.submit(op)
	aep.wait(t, "alice's connection closed by the restart in place", func(e *endpoint) bool { return e.isClosed })
	if st := n.shards[0].Stats(); st.Aborts == 0 {
		t.Fatalf("no cycle aborted: %+v", st)
	}
	if got := events.find(analytics.TypeMessageAccepted, func(e analytics.Event) bool { return e.Group == g }); len(got) != 0 {
		t.Fatalf("an aborted cycle emitted %+v", got)
	}
	n.close()
	rawUpdate(t, fs, "shard-0", func(db *pebble.DB) { must(db.Set(userRecordKey(carol.user), saved, pebble.Sync)) })
	n.open(1)
	aep = n.login(t, alice, 0)
	op = send
	op.Conn = aep.ref
	n.submit(op)
	events.wait(t, analytics.TypeMessageAccepted, func(e analytics.Event) bool { return e.Group == g })
	aep.take(t, protocol.KindSent)
	if got := events.find(analytics.TypeMessageAccepted, func(e analytics.Event) bool { return e.Group == g }); len(got) != 1 {
		t.Fatalf("message_accepted %d times, want once: %+v", len(got), got)
	}
}
