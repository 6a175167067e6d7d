package storage_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// TestCodeAnswerWaitsForSender: [S-9-16] REQUEST_CODE is answered only
// when the CodeSender reports, with the code its report maps to; the shard
// serves others meanwhile; test numbers are answered at once.
func TestCodeAnswerWaitsForSender(t *testing.T) {
	n := newNode(t, 1, func(c *storage.Config) { c.TestPrefix, c.TestCode = "+1555999", "424242" })
	n.codes.hold = true
	n.codes.arrived = make(chan string, 8)
	arrived := func(want string) {
		t.Helper()
		select {
		case got := <-n.codes.arrived:
			if got != want {
				t.Fatalf("code for %s reached the sender, want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no code for %s reached the sender", want)
		}
	}
	// marker proves that the shard went on serving: a test number is
	// answered at once, after everything the shard emitted before.
	marker := func(rid uint32) {
		t.Helper()
		ep := newEndpoint(t)
		n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: "+15559990001", RID: rid, Conn: ep.ref})
		ep.take(t, protocol.KindCodeSent)
	}
	pending := func(ep *endpoint) int {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		return len(ep.frames)
	}

	const phone = "+15550001601"
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 1, Conn: ep.ref})
	arrived(phone)
	marker(100)
	if k := pending(ep); k != 0 {
		t.Fatalf("REQUEST_CODE answered (%d frames) before the sender reported", k)
	}
	done := n.codes.held(phone)
	done(nil)
	if s := ep.take(t, protocol.KindCodeSent).(*pb.CodeSent); s.Rid != 1 || s.CodeLength != 6 || s.ExpiresInS != 600 {
		t.Fatalf("CODE_SENT %v", s)
	}
	done(errors.New("a second report"))
	if k := pending(ep); k != 0 {
		t.Fatalf("a second report answered again (%d frames)", k)
	}
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: n.codes.code(phone), Name: "p", RID: 2, Conn: ep.ref})
	ep.take(t, protocol.KindRegistered)

	const refused = "+15550001602"
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: refused, RID: 3, Conn: ep.ref})
	arrived(refused)
	n.codes.held(refused)(fmt.Errorf("gateway said 21211: %w", storage.ErrCodeUndeliverable))
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeCodeUndeliverable || e.Rid != 3 {
		t.Fatalf("refused number: %v, want CODE_UNDELIVERABLE rid 3", e)
	}

	const down = "+15550001603"
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: down, RID: 4, Conn: ep.ref})
	arrived(down)
	n.codes.held(down)(errors.New("gateway timed out"))
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeCodeDeliveryFailed || e.Rid != 4 || e.RetryAfterMs != 30_000 {
		t.Fatalf("gateway down: %v, want CODE_DELIVERY_FAILED rid 4 retry 30000 ms", e)
	}
	// The failed attempt counts against the phone's limits ([S-9-16]).
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: down, RID: 5, Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeRateLimited || e.Rid != 5 {
		t.Fatalf("again at once after a failure: %v, want RATE_LIMITED", e)
	}
	n.clock.Advance(30 * time.Second)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: down, RID: 6, Conn: ep.ref})
	arrived(down)
	n.codes.held(down)(nil)
	if s := ep.take(t, protocol.KindCodeSent).(*pb.CodeSent); s.Rid != 6 {
		t.Fatalf("CODE_SENT %v, want rid 6", s)
	}
}
