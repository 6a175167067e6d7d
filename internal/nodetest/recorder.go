package nodetest

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/ledger"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// maxReported is how many violations a failure lists.
const maxReported = 12

// Recorder keeps the books of a test's devices: every entry each one got
// and every SEND and SENT. It checks each frame as it comes (see Device)
// and, in Settle, what was acknowledged against what arrived.
//
// Its notion of who should get what: a 1:1 message reaches every device
// of the recipient, and every device of the sender when the sender has
// more than one ([S-8-17]); a group message reaches every device of each
// member at its gseq, the sender's own only when the sender has more than
// one ([S-16-6]). Only the recorder's devices count: record every device
// of a user that sends or receives (a user with an unrecorded device gets
// copies the recorder does not expect, which it tolerates). A device
// expects only what was sent after it was added. Group membership is
// learnt from the group events the devices get, so at least one device of
// each member must be recorded from before its ADD.
type Recorder struct {
	t testing.TB
	n Target

	mu         sync.Mutex
	changed    chan struct{}         // guarded by mu: closed and replaced on every change
	clock      uint64                // guarded by mu: counts added devices and sends
	devices    []*Device             // guarded by mu
	byUser     map[uint64][]*Device  // guarded by mu
	sent       map[uint64]*send      // guarded by mu: by message id, once its SENT came
	groups     map[uint64]*groupBook // guarded by mu
	violations []string              // guarded by mu
	reported   int                   // guarded by mu: violations already failed the test
}

// groupBook is what the devices learnt of one group's order.
type groupBook struct {
	at     map[uint64]uint64         // gseq → id of the message or event there
	events map[uint64]*pb.GroupEvent // gseq → event
}

// NewRecorder returns a Recorder for devices of n. When t ends, it
// disconnects every device and fails t with any violation not yet
// reported.
func NewRecorder(t testing.TB, n Target) *Recorder {
	r := &Recorder{
		t: t, n: n, changed: make(chan struct{}),
		byUser: map[uint64][]*Device{}, sent: map[uint64]*send{}, groups: map[uint64]*groupBook{},
	}
	t.Cleanup(func() {
		r.mu.Lock()
		devices := slices.Clone(r.devices)
		r.mu.Unlock()
		for _, d := range devices {
			d.Disconnect()
		}
		if msg := r.unreported(); msg != "" {
			t.Error(msg)
		}
	})
	return r
}

// Target is what a device connects to: a node's client address and the
// fingerprint of its certificate. *Node is one.
type Target interface {
	Addr() net.Addr
	Fingerprint() string
}

// Device adds a device of u to the books, not yet connected.
func (r *Recorder) Device(u wiretest.User) *Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock++
	d := &Device{
		User: u, rec: r, name: fmt.Sprintf("%d/%d", u.ID, u.Device), joined: r.clock,
		msgSeq: map[uint64]uint64{}, lastGSeq: map[uint64]uint64{}, sends: map[uint64]*send{}, answers: map[uint32]codec.Frame{},
	}
	r.devices = append(r.devices, d)
	r.byUser[u.ID] = append(r.byUser[u.ID], d)
	return d
}

// Connected is Device followed by Connect.
func (r *Recorder) Connected(u wiretest.User) *Device {
	d := r.Device(u)
	d.Connect()
	return d
}

// Wait waits until cond holds, checking it again after every frame any
// device records; it fails the test at the first violation, or when
// Timeout passes. cond runs without the recorder's lock, so it may call
// Entries and Cursor. For the test's goroutine.
func (r *Recorder) Wait(what string, cond func() bool) {
	r.t.Helper()
	var msg string
	if !r.await(func() bool {
		msg = r.unreported()
		return msg != "" || cond()
	}) {
		r.t.Fatalf("nodetest: %s did not happen in %v", what, Timeout)
	}
	if msg != "" {
		r.t.Fatalf("waiting for %s: %s", what, msg)
	}
}

// await calls done after every change the recorder sees until it reports
// true, or until Timeout passes; it reports whether done did. done runs
// without the recorder's lock. await may be called from any goroutine.
func (r *Recorder) await(done func() bool) bool { return r.awaitWithin(Timeout, done) }

// awaitWithin is await with a deadline of within.
func (r *Recorder) awaitWithin(within time.Duration, done func() bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if done() {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// Check fails the test with the violations seen so far, if any. For the
// test's goroutine.
func (r *Recorder) Check() {
	r.t.Helper()
	if msg := r.unreported(); msg != "" {
		r.t.Fatal(msg)
	}
}

// Settle waits, by event and up to Timeout, until every message whose
// SENT a device got has reached every device that should have it, then
// checks the books and fails the test on any violation: a SENT message
// some device never got, a delivered message no SENT acknowledged, one
// delivered to the wrong inbox or out of order from its sender, a group
// entry delivered to a non-member, and everything the devices found as
// the frames came. Settle does not wait for receipts. For the test's
// goroutine.
func (r *Recorder) Settle() {
	r.t.Helper()
	r.await(func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		_, pending := r.auditLocked(false)
		return pending == 0 || len(r.violations) > r.reported
	})
	r.mu.Lock()
	problems, _ := r.auditLocked(true)
	r.violations = append(r.violations, problems...)
	r.mu.Unlock()
	if msg := r.unreported(); msg != "" {
		r.t.Fatal(msg)
	}
}

// notifyLocked wakes every waiter.
func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// violate records a violation.
func (r *Recorder) violate(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violateLocked(format, args...)
	r.notifyLocked()
}

func (r *Recorder) violateLocked(format string, args ...any) {
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

// unreported returns the violations not yet reported, as one message, and
// marks them reported; "" if there are none.
func (r *Recorder) unreported() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.violations[r.reported:]
	r.reported = len(r.violations)
	if len(v) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "nodetest: %d violations:", len(v))
	for _, s := range v[:min(len(v), maxReported)] {
		b.WriteString("\n\t" + s)
	}
	if len(v) > maxReported {
		fmt.Fprintf(&b, "\n\t… and %d more", len(v)-maxReported)
	}
	return b.String()
}

// sentLocked records the SENT of d's cmid.
func (r *Recorder) sentLocked(d *Device, cmid, id uint64) {
	s := d.sends[cmid]
	switch {
	case s == nil:
		r.violateLocked("%s: SENT for cmid %d, which the device never sent", d.name, cmid)
		return
	case s.id != 0 && s.id != id:
		r.violateLocked("%s: SENT for cmid %d with id %d, earlier %d", d.name, cmid, id, s.id)
		return
	}
	if other := r.sent[id]; other != nil && other != s {
		r.violateLocked("%s: SENT for cmid %d with id %d, the id of %s's cmid %d", d.name, cmid, id, other.dev.name, other.cmid)
		return
	}
	s.id = id
	r.sent[id] = s
}

func (r *Recorder) group(g uint64) *groupBook {
	b := r.groups[g]
	if b == nil {
		b = &groupBook{at: map[uint64]uint64{}, events: map[uint64]*pb.GroupEvent{}}
		r.groups[g] = b
	}
	return b
}

// groupEntryLocked checks that a group entry d got continues the group's
// order on d, and matches what other devices got at its gseq ([S-16-6]).
func (r *Recorder) groupEntryLocked(d *Device, e Entry) {
	if e.GSeq <= d.lastGSeq[e.Group] {
		r.violateLocked("%s: group %d: gseq %d after %d", d.name, e.Group, e.GSeq, d.lastGSeq[e.Group])
	}
	d.lastGSeq[e.Group] = max(d.lastGSeq[e.Group], e.GSeq)
	b := r.group(e.Group)
	if id, ok := b.at[e.GSeq]; ok && id != e.ID {
		r.violateLocked("%s: group %d: gseq %d is %d here, %d elsewhere: two orders", d.name, e.Group, e.GSeq, e.ID, id)
	}
	b.at[e.GSeq] = e.ID
}

// groupEventLocked learns a group event.
func (r *Recorder) groupEventLocked(_ *Device, ev *pb.GroupEvent) {
	b := r.group(ev.Group)
	if _, ok := b.events[ev.Gseq]; !ok {
		b.events[ev.Gseq] = ev
	}
}

// membership answers whether a user is a member of a group at a gseq,
// from the group's events the devices got.
type membership struct {
	events []*pb.GroupEvent // in gseq order
}

func (r *Recorder) membershipLocked(g uint64) membership {
	b := r.groups[g]
	if b == nil {
		return membership{}
	}
	var m membership
	for _, ev := range b.events {
		m.events = append(m.events, ev)
	}
	slices.SortFunc(m.events, func(a, b *pb.GroupEvent) int { return cmp.Compare(a.Gseq, b.Gseq) })
	return m
}

// memberAt reports whether user is a member just before gseq.
func (m membership) memberAt(user, gseq uint64) bool {
	in := false
	for _, ev := range m.events {
		if ev.Gseq >= gseq {
			break
		}
		if joins, leaves := names(ev, user); joins {
			in = true
		} else if leaves {
			in = false
		}
	}
	return in
}

// names reports whether ev adds user to its group or takes user out.
func names(ev *pb.GroupEvent, user uint64) (joins, leaves bool) {
	if !slices.Contains(ev.Members, user) {
		return false, false
	}
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_CREATE, pb.GroupOp_GROUP_OP_ADD:
		return true, false
	case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
		return false, true
	}
	return false, false
}

// eventAt returns the group event at gseq, or nil.
func (m membership) eventAt(gseq uint64) *pb.GroupEvent {
	for _, ev := range m.events {
		if ev.Gseq == gseq {
			return ev
		}
	}
	return nil
}

// flowKey names one flow: what one sending device sent to one
// conversation, as one receiving device got it.
type flowKey struct {
	recv  *Device
	from  *Device
	to    uint64
	group uint64
}

// expectedLocked returns the devices that must get s, whose group
// message sits at gseq.
func (r *Recorder) expectedLocked(s *send, gseq uint64, m membership) []*Device {
	sender := s.dev.User.ID
	own := r.byUser[sender]
	var users []uint64
	if s.group == 0 {
		users = append(users, s.to)
		if s.to != sender && len(own) > 1 {
			users = append(users, sender) // the copies, [S-8-17]
		}
	} else {
		for u := range r.byUser {
			if m.memberAt(u, gseq) && (u != sender || len(own) > 1) {
				users = append(users, u)
			}
		}
	}
	var out []*Device
	for _, u := range users {
		for _, d := range r.byUser[u] {
			if d.joined < s.clock {
				out = append(out, d)
			}
		}
	}
	return out
}

// auditLocked compares what was acknowledged with what arrived. It returns
// the problems found and how many deliveries are still pending: expected
// and not yet there, or there and not yet matched by a SENT. With final,
// the pending ones are problems too.
func (r *Recorder) auditLocked(final bool) (problems []string, pending int) {
	problem := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	flows := map[flowKey]*ledger.Flow{}
	flow := func(k flowKey) *ledger.Flow {
		f := flows[k]
		if f == nil {
			f = &ledger.Flow{}
			flows[k] = f
		}
		return f
	}
	members := map[uint64]membership{}
	member := func(g uint64) membership {
		m, ok := members[g]
		if !ok {
			m = r.membershipLocked(g)
			members[g] = m
		}
		return m
	}
	gseqOf := map[uint64]uint64{} // group message id → gseq, where any device got it
	revoked := map[uint64]bool{}  // messages deleted for everyone: nobody need get them ([S-18-2])
	for _, d := range r.devices {
		for _, e := range d.entries {
			switch {
			case e.Kind == protocol.KindMessage && e.Group != 0:
				gseqOf[e.ID] = e.GSeq
			case e.Kind == protocol.KindRevoked:
				revoked[e.ID] = true
			}
		}
	}

	// What was acknowledged, and who must get it.
	for id, s := range r.sent {
		if revoked[id] {
			continue
		}
		gseq := gseqOf[id]
		if s.group != 0 && gseq == 0 {
			pending++
			if final {
				problem("%s: group %d message %d (cmid %d) was SENT and reached no device", s.dev.name, s.group, id, s.cmid)
			}
			continue
		}
		for _, d := range r.expectedLocked(s, gseq, member(s.group)) {
			f := flow(flowKey{d, s.dev, s.to, s.group})
			f.Ack(s.cmid)
			if s.resent {
				f.MarkResent(s.cmid)
			}
		}
	}

	// What arrived.
	for _, d := range r.devices {
		for _, e := range d.entries {
			if e.Group != 0 {
				m := member(e.Group)
				ev := m.eventAt(e.GSeq)
				if !m.memberAt(d.User.ID, e.GSeq) && (ev == nil || !slices.Contains(ev.Members, d.User.ID)) {
					problem("%s: group %d entry at gseq %d (%s), not a member then", d.name, e.Group, e.GSeq, e.Body)
				}
			}
			if e.Kind != protocol.KindMessage || revoked[e.ID] {
				continue
			}
			s := r.sent[e.ID]
			if s == nil {
				pending++
				if final {
					problem("%s: message %d from %d/%d at seq %d: no SENT acknowledged it", d.name, e.ID, e.From, e.FromDevice, e.Seq)
				}
				continue
			}
			if where := misplaced(d, e, s); where != "" {
				problem("%s: message %d (%s's cmid %d) at seq %d %s", d.name, e.ID, s.dev.name, s.cmid, e.Seq, where)
				continue
			}
			if flow(flowKey{d, s.dev, s.to, s.group}).Receive(s.cmid) == ledger.DeliveredOutOfOrder {
				problem("%s: message %d (%s's cmid %d) at seq %d came after a later one from the same device", d.name, e.ID, s.dev.name, s.cmid, e.Seq)
			}
		}
	}

	// What was acknowledged and has not arrived.
	for k, f := range flows {
		n := f.Lost()
		if n == 0 {
			continue
		}
		pending += n
		if final {
			for _, cmid := range f.LostCMIDs(3) {
				s := k.from.sends[cmid]
				problem("%s never got message %d (%s's cmid %d to %s), which was SENT", k.recv.name, s.id, k.from.name, cmid, s.dest())
			}
			if n > 3 {
				problem("%s never got %d more SENT messages from %s to %s", k.recv.name, n-3, k.from.name, k.from.sends[f.LostCMIDs(1)[0]].dest())
			}
		}
	}
	slices.Sort(problems)
	return problems, pending
}

// misplaced says what is wrong with where message e, sent as s, reached
// d; "" if nothing is.
func misplaced(d *Device, e Entry, s *send) string {
	switch {
	case e.From != s.dev.User.ID || e.FromDevice != s.dev.User.Device:
		return fmt.Sprintf("names sender %d/%d", e.From, e.FromDevice)
	case e.Group != s.group:
		return fmt.Sprintf("is in group %d", e.Group)
	case s.group != 0 && e.To != 0:
		return fmt.Sprintf("is a group message with to %d", e.To)
	case s.group != 0:
		return ""
	case d.User.ID == s.to && e.To == 0:
		return "" // the message itself
	case d.User.ID == s.dev.User.ID && e.To == s.to && s.to != d.User.ID:
		return "" // a copy of the user's own message
	}
	return fmt.Sprintf("with to %d reached user %d", e.To, d.User.ID)
}

// dest names where s went.
func (s *send) dest() string {
	if s.group != 0 {
		return fmt.Sprintf("group %d", s.group)
	}
	return fmt.Sprintf("user %d", s.to)
}
