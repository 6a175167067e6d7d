package storage

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/protocol"
)

// flowCounters count what flows through a shard, for the operator's
// metrics (docs/operations.md, "What to watch"). The actor adds to them;
// Flow reads them from any goroutine.
type flowCounters struct {
	messages      atomic.Uint64 // message entries appended (1:1, group references, envelopes)
	delivered     atomic.Uint64 // inbox entries sent to devices
	acknowledged  atomic.Uint64 // inbox entries devices acknowledged (cursor advances)
	deleted       atomic.Uint64 // inbox entries deleted (acknowledged by every device, or expired)
	initial       atomic.Int64  // inbox entries held at Open
	registrations atomic.Uint64 // VERIFYs that registered a device
	codes         atomic.Uint64 // verification codes issued (test numbers included)
}

// Flow is a snapshot of what flowed through a shard since Open.
type Flow struct {
	// Messages counts message entries stored in inboxes: one per 1:1
	// message and per member's inbox of a group message (copies for the
	// sender's other devices included).
	Messages uint64
	// Delivered counts inbox entries (messages, receipts, events) sent to
	// devices; an entry sent again after a reconnect counts again.
	Delivered uint64
	// Acknowledged counts inbox entries devices acknowledged, each device
	// apart.
	Acknowledged uint64
	// Backlog is how many inbox entries the shard holds now: stored and
	// not yet acknowledged by every device of their user (nor expired).
	Backlog int64
	// Registrations counts devices registered by phone verification.
	Registrations uint64
	// Codes counts verification codes issued (handed to the SMS sender,
	// or for a test number, not sent).
	Codes uint64
}

// Flow returns the shard's flow counters. Any goroutine may call it.
func (s *Shard) Flow() Flow {
	f := &s.flow
	return Flow{
		Messages: f.messages.Load(), Delivered: f.delivered.Load(), Acknowledged: f.acknowledged.Load(),
		Backlog:       f.initial.Load() + int64(s.entries.Load()) - int64(f.deleted.Load()),
		Registrations: f.registrations.Load(), Codes: f.codes.Load(),
	}
}

// noteAppended counts an entry appended to an inbox.
func (f *flowCounters) noteAppended(entry []byte) {
	if len(entry) > 0 {
		switch entry[0] {
		case byte(protocol.KindMessage), kindGroupRef, kindEnvelopes:
			f.messages.Add(1)
		}
	}
}

// countBacklog counts the inbox entries the database holds, once at Open:
// a scan of every slot's inbox keys, as long as the backlog.
func (s *Shard) countBacklog() error {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("storage: count inboxes: %w", err)
	}
	var n int64
	for slot := 0; slot < NumSlots; {
		lo := appendPrefix(nil, uint16(slot), tagInbox)
		hi := prefixEnd(lo)
		ok := it.SeekGE(lo)
		for ; ok && pebble.DefaultComparer.Compare(it.Key(), hi) < 0; ok = it.Next() {
			n++
		}
		if !ok || len(it.Key()) < 2 {
			break
		}
		// Skip the slots the shard holds nothing of.
		slot = max(slot+1, int(binary.BigEndian.Uint16(it.Key())))
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("storage: count inboxes: %w", err)
	}
	s.flow.initial.Store(n)
	return nil
}
