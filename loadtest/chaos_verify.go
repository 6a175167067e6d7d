package loadtest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol/pb"
)

// The chaos verifier compares what was acknowledged with what arrived.
// It records every send of the run with its outcome (SENT and its id, a
// final error, or nothing yet), every read mark with its answer, and
// every inbox entry each device got, in the order it got them; check
// works out from those what every device must have and what it must not:
//
//   - A 1:1 message answered SENT is in the inbox of every device of the
//     recipient and, as a copy, of every device of the sender, the
//     sending device included ([S-8-17]): exactly once each.
//   - A group message answered SENT is at one gseq of its group, the same
//     for everyone ([S-16-6]), in the inbox of every device of every user
//     who was a member at that gseq, the sender included (it has other
//     devices), and of nobody else. Membership at each gseq comes from the
//     group's own CREATE, ADD, REMOVE and LEAVE events in that order: a
//     member removed at gseq X gets that event and nothing after; an added
//     member gets everything from its ADD on ([S-16-5]). An event goes to
//     the members before and after it.
//   - Every gseq from 1 to the group's last (GROUP_GET at the end) reached
//     somebody, and two devices never saw different entries at one gseq.
//   - Order: each device's seqs grow by one from the cursor of its first
//     login; all devices of a user hold the same entry at a seq; ids of
//     one sender's 1:1 messages, of the copies to one recipient and of one
//     group's messages grow with seq ([S-8-8]); gseqs grow; and one
//     device's sends to one destination arrive in cmid order.
//   - Receipts: every device of a sender ends with a DELIVERED receipt
//     from each recipient (per group for group messages) naming the
//     largest id that recipient got from it ([S-10-2], [S-10-7]); every
//     read mark answered OK ends as a READ receipt at every device of the
//     sender and a SELF_READ at every device of the reader ([S-10-3],
//     [S-10-6]); no receipt names more than was delivered or marked.
//   - Nothing else: a message that is not one of the run's sends, a send
//     that failed for good, an entry at a user who should not have it, or
//     one entry twice on a device is a violation. A send with no answer
//     at the end is one too, and may have arrived at most once.
//
// Threading: a chaosVerifier is safe for concurrent use; every device's
// event handler calls it.
type chaosVerifier struct {
	mu      sync.Mutex
	sends   map[chaosSendKey]*chaosSend // guarded by mu
	devices map[chaosDevKey]*devLog     // guarded by mu
	users   map[uint64][]uint32         // guarded by mu: user → its devices, in order added
	reads   map[chaosReadKey]*readMark  // guarded by mu
	final   map[uint64]client.GroupInfo // guarded by mu: GROUP_GET at the end, by group
	live    []chaosViolation            // guarded by mu: found as entries arrived
	groups  map[uint64]struct{}         // guarded by mu: the run's groups

	changed chan struct{} // capacity 1: something was recorded
}

// chaosSendKey names one send of the run: the sending device and the
// number the run gave it there (1, 2, …), which its body carries.
type chaosSendKey struct {
	User   uint64
	Device uint32
	N      uint64
}

// chaosDevKey names a device.
type chaosDevKey struct {
	User   uint64
	Device uint32
}

// chaosReadKey names the read marks of reader on peer's messages in group
// (0: 1:1).
type chaosReadKey struct{ Reader, Peer, Group uint64 }

// readMark is what reader marked read: the highest up_to asked for, the
// highest answered OK, and how many marks are unanswered.
type readMark struct {
	requested, ok uint64
	pending       int // asked, no answer yet
	unanswered    int // no answer before the client closed
	refused       []string
}

// sendOutcome is where a send is.
type sendOutcome uint8

const (
	sendUnanswered sendOutcome = iota
	sendAcked
	sendFailed
)

// chaosSend is one send and its outcome.
type chaosSend struct {
	key       chaosSendKey
	to, group uint64
	cmid, id  uint64
	outcome   sendOutcome
	err       string
}

// entryKind is what an inbox entry is, as the verifier sees it.
type entryKind uint8

const (
	entryDirect  entryKind = iota + 1 // a 1:1 message to this user
	entryCopy                         // this user's own 1:1 message to peer
	entryGroup                        // a group message
	entryEvent                        // a group event
	entryReceipt                      // a RECEIPT or RECEIPTS entry
)

// chaosEntry is one inbox entry as a device got it.
type chaosEntry struct {
	seq  uint64
	kind entryKind
	sig  uint64       // a hash of the whole entry: equal entries, equal sigs
	id   uint64       // messages and events
	send chaosSendKey // messages: from the body; zero if not the run's
	from uint64       // messages: the sender
	peer uint64       // direct: the sender; copy: the recipient
	// Group entries.
	group, gseq uint64
	op          pb.GroupOp
	members     []uint64
	actor       uint64
}

// devLog is what one device got.
type devLog struct {
	key      chaosDevKey
	started  bool
	last     uint64 // highest seq processed
	entries  []chaosEntry
	at       map[uint64]int // seq → index in entries
	receipts map[receiptKey]uint64
	synced   uint64 // Synced.seq of the latest connection
	syncs    int    // Synced events
	again    int    // entries delivered again at the same seq, to a new client
}

// receiptKey names the receipts of one type from peer on group (0: 1:1).
type receiptKey struct {
	Type  pb.ReceiptType
	Peer  uint64
	Group uint64
}

// Violation kinds, in the order the report lists them.
const (
	vLost       = "lost"
	vDuplicated = "duplicated"
	vReordered  = "reordered"
	vSkipped    = "skipped"
	vGroupOrder = "group order"
	vUnexpected = "unexpected"
	vReceipt    = "receipt missing"
	vUnanswered = "unanswered"
)

var violationKinds = []string{vLost, vDuplicated, vReordered, vSkipped, vGroupOrder, vUnexpected, vReceipt, vUnanswered}

// chaosViolation is one broken promise.
type chaosViolation struct {
	kind, text string
}

func newChaosVerifier() *chaosVerifier {
	return &chaosVerifier{
		sends:   map[chaosSendKey]*chaosSend{},
		devices: map[chaosDevKey]*devLog{},
		users:   map[uint64][]uint32{},
		reads:   map[chaosReadKey]*readMark{},
		final:   map[uint64]client.GroupInfo{},
		groups:  map[uint64]struct{}{},
		changed: make(chan struct{}, 1),
	}
}

// notifyLocked tells a waiter that something was recorded.
func (v *chaosVerifier) notifyLocked() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// addDevice registers a device of user before it connects.
func (v *chaosVerifier) addDevice(user uint64, device uint32) {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := chaosDevKey{user, device}
	if v.devices[k] == nil {
		v.devices[k] = &devLog{key: k, at: map[uint64]int{}, receipts: map[receiptKey]uint64{}}
		v.users[user] = append(v.users[user], device)
	}
}

// addGroup registers one of the run's groups.
func (v *chaosVerifier) addGroup(g uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.groups[g] = struct{}{}
}

// sendStarted records a send before it is handed to the client.
func (v *chaosVerifier) sendStarted(k chaosSendKey, to, group uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sends[k] = &chaosSend{key: k, to: to, group: group}
}

// sendCMID records the cmid the client gave the send.
func (v *chaosVerifier) sendCMID(k chaosSendKey, cmid uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.sends[k]; s != nil {
		s.cmid = cmid
	}
}

// sendDone records a send's outcome.
func (v *chaosVerifier) sendDone(k chaosSendKey, sent client.Sent, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.sends[k]
	if s == nil {
		return
	}
	if sent.CMID != 0 {
		s.cmid = sent.CMID
	}
	if err != nil {
		s.outcome, s.err = sendFailed, err.Error()
	} else {
		s.outcome, s.id = sendAcked, sent.ID
	}
	v.notifyLocked()
}

// dropSend forgets a send the client refused before numbering it
// (ErrOutboxFull): nothing was sent.
func (v *chaosVerifier) dropSend(k chaosSendKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.sends, k)
}

// readStarted records a read mark before it is asked for.
func (v *chaosVerifier) readStarted(k chaosReadKey, upTo uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.reads[k]
	if m == nil {
		m = &readMark{}
		v.reads[k] = m
	}
	m.requested = max(m.requested, upTo)
	m.pending++
}

// readDone records the answer to a read mark: OK (err nil), a refusal,
// or none before its client closed (client.ErrClosed).
func (v *chaosVerifier) readDone(k chaosReadKey, upTo uint64, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.reads[k]
	if m == nil {
		return
	}
	m.pending--
	switch {
	case errors.Is(err, client.ErrClosed):
		m.unanswered++
	case err != nil:
		m.refused = append(m.refused, err.Error())
	default:
		m.ok = max(m.ok, upTo)
	}
	v.notifyLocked()
}

// redelivered returns how many entries devices got again at a seq they
// had, after their client was restarted.
func (v *chaosVerifier) redelivered() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, d := range v.devices {
		n += d.again
	}
	return n
}

// fatal records that device d's client stopped for good.
func (v *chaosVerifier) fatal(d chaosDevKey, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.liveLocked(vUnexpected, "user %d device %d: the client stopped: %v", d.User, d.Device, err)
	v.notifyLocked()
}

// groupFinal records a group's state as GROUP_GET gave it at the end.
func (v *chaosVerifier) groupFinal(g client.GroupInfo) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.final[g.ID] = g
}

// record takes one event of device d.
func (v *chaosVerifier) record(d chaosDevKey, ev client.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	log := v.devices[d]
	if log == nil {
		return
	}
	var e chaosEntry
	switch ev := ev.(type) {
	case client.Connected:
		if !log.started {
			log.started, log.last = true, ev.Cursor
		}
		return
	case client.Synced:
		log.synced = ev.Seq
		log.syncs++
		v.notifyLocked()
		return
	case client.Message:
		e = chaosEntry{seq: ev.Seq, id: ev.ID, from: ev.From, group: ev.Group, gseq: ev.GSeq}
		switch {
		case ev.Group != 0:
			e.kind = entryGroup
		case ev.To != 0:
			e.kind, e.peer = entryCopy, ev.To
		default:
			e.kind, e.peer = entryDirect, ev.From
		}
		if k, ok := parseChaosBody(ev.Body); ok {
			e.send = k
			if k.User != ev.From || k.Device != ev.FromDevice {
				v.liveLocked(vUnexpected, "user %d device %d: seq %d, message id %d from user %d device %d carries the body of user %d device %d",
					d.User, d.Device, ev.Seq, ev.ID, ev.From, ev.FromDevice, k.User, k.Device)
			}
		}
		e.sig = sigOf(1, ev.ID, ev.From, uint64(ev.FromDevice), ev.To, ev.Group, ev.GSeq, uint64(ev.Type)) ^ sigBytes(ev.Body)
	case client.Receipt:
		e = chaosEntry{seq: ev.Seq, kind: entryReceipt}
		e.sig = sigOf(2, uint64(ev.Type), ev.Peer, ev.UpTo, ev.Group)
		k := receiptKey{ev.Type, ev.Peer, ev.Group}
		log.receipts[k] = max(log.receipts[k], ev.UpTo)
	case client.Receipts:
		e = chaosEntry{seq: ev.Seq, kind: entryReceipt}
		e.sig = sigOf(3, uint64(ev.Type), ev.Group, uint64(len(ev.Items)))
		for _, it := range ev.Items {
			e.sig = e.sig*31 + sigOf(4, it.Peer, it.UpTo)
			k := receiptKey{ev.Type, it.Peer, ev.Group}
			log.receipts[k] = max(log.receipts[k], it.UpTo)
		}
	case client.GroupEvent:
		e = chaosEntry{seq: ev.Seq, kind: entryEvent, id: ev.ID, group: ev.Group, gseq: ev.GSeq, op: ev.Op,
			members: slices.Clone(ev.Members), actor: ev.Actor}
		e.sig = sigOf(5, ev.ID, ev.Group, ev.GSeq, ev.Actor, uint64(ev.Op), uint64(len(ev.Members))) ^ sigBytes([]byte(ev.Name))
		for _, m := range ev.Members {
			e.sig = e.sig*31 + m
		}
	default:
		return
	}
	if i, ok := log.at[e.seq]; ok {
		// A new client of the device got again an entry whose ack had not
		// reached the server: the same entry, or a violation.
		if log.entries[i].sig != e.sig {
			v.liveLocked(vDuplicated, "user %d device %d: seq %d delivered twice with different content (%s, then %s)",
				d.User, d.Device, e.seq, describeEntry(&log.entries[i]), describeEntry(&e))
		}
		log.again++
		return
	}
	if e.seq <= log.last {
		v.liveLocked(vReordered, "user %d device %d: seq %d (%s) after seq %d", d.User, d.Device, e.seq, describeEntry(&e), log.last)
	} else if e.seq != log.last+1 {
		v.liveLocked(vSkipped, "user %d device %d: seq %d (%s) after seq %d: %d entries skipped",
			d.User, d.Device, e.seq, describeEntry(&e), log.last, e.seq-log.last-1)
	}
	log.last = max(log.last, e.seq)
	log.at[e.seq] = len(log.entries)
	log.entries = append(log.entries, e)
	v.notifyLocked()
}

// liveLocked records a violation found as an entry arrived.
func (v *chaosVerifier) liveLocked(kind, format string, args ...any) {
	v.live = append(v.live, chaosViolation{kind, fmt.Sprintf(format, args...)})
}

// chaosCheck is the outcome of check.
type chaosCheck struct {
	counts     map[string]int      // violations by kind
	examples   map[string][]string // the first few of each kind
	sent       int                 // sends handed to the clients
	acked      int                 // answered SENT
	failed     int                 // failed for good
	failedBy   map[string]int      // failed for good, by the client's error
	unanswered int                 // no answer yet
	expected   int                 // deliveries the acknowledged sends and the group events owe
	delivered  int                 // of those, made
	receipts   int                 // receipt expectations (sender or reader device, peer, group, type)
	reads      int                 // read marks answered OK (distinct reader, peer, group)
	events     int                 // group events
	// lostSends counts the acknowledged sends with a delivery missing,
	// by kind: "1:1" (at the recipient), "copy" (at the sender's devices)
	// and "group".
	lostSends map[string]int
	// outstanding counts what a converging run still waits for: sends
	// and reads without an answer, deliveries and receipts not yet made.
	outstanding int
}

// exampleLimit is how many violations of each kind a check keeps.
const exampleLimit = 5

func (r *chaosCheck) add(kind, format string, args ...any) {
	r.addN(kind, 1, format, args...)
}

// addN counts n violations of kind with one example.
func (r *chaosCheck) addN(kind string, n int, format string, args ...any) {
	r.counts[kind] += n
	if len(r.examples[kind]) < exampleLimit {
		r.examples[kind] = append(r.examples[kind], fmt.Sprintf(format, args...))
	}
}

// total returns the number of violations.
func (r *chaosCheck) total() int {
	n := 0
	for _, c := range r.counts {
		n += c
	}
	return n
}

// groupSlot is what the group's order holds at one gseq: the entry as
// the first device that had it saw it.
type groupSlot struct {
	e   *chaosEntry
	dev chaosDevKey
	// recipients are the users who must have this entry.
	recipients map[uint64]bool
}

// check compares what was acknowledged with what arrived. With final
// false it is a progress check: what is missing counts as outstanding,
// not as a violation. With final true everything missing is a violation.
func (v *chaosVerifier) check(final bool) chaosCheck {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := chaosCheck{counts: map[string]int{}, examples: map[string][]string{}, lostSends: map[string]int{}}
	for _, lv := range v.live {
		r.add(lv.kind, "%s", lv.text)
	}
	users := slices.Sorted(maps.Keys(v.users))
	devs := func(u uint64) []*devLog {
		var out []*devLog
		for _, d := range v.users[u] {
			out = append(out, v.devices[chaosDevKey{u, d}])
		}
		return out
	}

	// All devices of a user hold the same entry at each seq ([S-8-1]).
	for _, u := range users {
		seen := map[uint64]*chaosEntry{}
		seenOn := map[uint64]uint32{}
		for _, log := range devs(u) {
			for i := range log.entries {
				e := &log.entries[i]
				if o, ok := seen[e.seq]; ok && o.sig != e.sig {
					r.add(vReordered, "user %d: seq %d is %s on device %d but %s on device %d",
						u, e.seq, describeEntry(o), seenOn[e.seq], describeEntry(e), log.key.Device)
				} else if !ok {
					seen[e.seq], seenOn[e.seq] = e, log.key.Device
				}
			}
		}
	}

	// The groups' one order ([S-16-6]) and who must get each entry.
	order := map[uint64]map[uint64]*groupSlot{}
	gseqOf := map[chaosSendKey]uint64{}
	for _, u := range users {
		for _, log := range devs(u) {
			for i := range log.entries {
				e := &log.entries[i]
				if e.kind != entryGroup && e.kind != entryEvent {
					continue
				}
				if order[e.group] == nil {
					order[e.group] = map[uint64]*groupSlot{}
				}
				if s := order[e.group][e.gseq]; s == nil {
					order[e.group][e.gseq] = &groupSlot{e: e, dev: log.key}
				} else if s.e.sig != e.sig {
					r.add(vGroupOrder, "group %d gseq %d is %s at user %d device %d but %s at user %d device %d",
						e.group, e.gseq, describeEntry(s.e), s.dev.User, s.dev.Device, describeEntry(e), u, log.key.Device)
				}
				if e.kind == entryGroup && e.send != (chaosSendKey{}) {
					if q, ok := gseqOf[e.send]; ok && q != e.gseq {
						r.add(vGroupOrder, "%s is at gseq %d for some members and %d for others", v.describeSend(e.send), q, e.gseq)
					}
					gseqOf[e.send] = e.gseq
				}
			}
		}
	}
	for _, g := range slices.Sorted(maps.Keys(order)) {
		slots := order[g]
		last := slices.Max(slices.Collect(maps.Keys(slots)))
		if info, ok := v.final[g]; ok && final {
			last = max(last, info.GSeq)
		}
		members := map[uint64]bool{}
		for q := uint64(1); q <= last; q++ {
			s := slots[q]
			if s == nil {
				if final {
					r.add(vLost, "group %d: gseq %d reached no member (the group is at gseq %d)", g, q, last)
				}
				continue
			}
			before := maps.Clone(members)
			if s.e.kind == entryEvent {
				r.events++
				switch s.e.op {
				case pb.GroupOp_GROUP_OP_CREATE, pb.GroupOp_GROUP_OP_ADD:
					for _, m := range s.e.members {
						members[m] = true
					}
				case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
					for _, m := range s.e.members {
						delete(members, m)
					}
				}
				s.recipients = maps.Clone(before)
				maps.Copy(s.recipients, members)
			} else {
				s.recipients = before
				if !before[s.e.from] {
					r.add(vUnexpected, "group %d took %s at gseq %d from user %d, not a member then", g, describeEntry(s.e), q, s.e.from)
				}
			}
		}
		if info, ok := v.final[g]; ok && final {
			want := map[uint64]bool{}
			for _, m := range info.Members {
				want[m.User] = true
			}
			if !maps.Equal(want, members) {
				r.add(vGroupOrder, "group %d: its events make members %v, GROUP_GET says %v", g, slices.Sorted(maps.Keys(members)), slices.Sorted(maps.Keys(want)))
			}
		}
	}
	for g := range v.groups {
		if order[g] == nil && final {
			r.add(vLost, "group %d: no member got any of its entries", g)
		}
	}

	// Every entry each device got: the run's, once, at a user who must
	// have it, in order.
	seen := streamSeen{
		sends:     map[chaosSendKey]map[chaosDevKey]int{},
		events:    map[chaosDevKey]map[[2]uint64]bool{},
		delivered: map[[3]uint64]uint64{},
	}
	for _, u := range users {
		for _, log := range devs(u) {
			v.checkStream(&r, log, order, &seen)
		}
	}

	// What the acknowledged sends and the group events owe.
	for _, k := range slices.SortedFunc(maps.Keys(v.sends), cmpSendKey) {
		s := v.sends[k]
		r.sent++
		switch s.outcome {
		case sendFailed:
			r.failed++
			if r.failedBy == nil {
				r.failedBy = map[string]int{}
			}
			r.failedBy[s.err]++
			continue
		case sendUnanswered:
			r.unanswered++
			r.outstanding++
			if final {
				r.add(vUnanswered, "%s never answered", v.describeSend(k))
			}
			continue
		}
		r.acked++
		var owed []uint64
		kind := "group"
		if s.group == 0 {
			owed, kind = []uint64{s.to, k.User}, "1:1"
		} else {
			q, ok := gseqOf[k]
			if !ok {
				r.expected++
				r.outstanding++
				if final {
					r.lostSends[kind]++
					r.add(vLost, "%s answered SENT, reached no member", v.describeSend(k))
				}
				continue
			}
			owed = slices.Sorted(maps.Keys(order[s.group][q].recipients))
		}
		var missing []string
		nMissing := 0
		lostKinds := map[string]bool{}
		for _, u := range owed {
			var devsMissing []uint32
			for _, log := range devs(u) {
				r.expected++
				if seen.sends[k][log.key] > 0 {
					r.delivered++
					continue
				}
				r.outstanding++
				devsMissing = append(devsMissing, log.key.Device)
			}
			if len(devsMissing) == 0 {
				continue
			}
			nMissing += len(devsMissing)
			missing = append(missing, fmt.Sprintf("user %d devices %v", u, devsMissing))
			switch {
			case kind == "group":
				lostKinds[kind] = true
			case u == k.User:
				lostKinds["copy"] = true
			default:
				lostKinds["1:1"] = true
			}
		}
		if final && nMissing > 0 {
			for lk := range lostKinds {
				r.lostSends[lk]++
			}
			r.addN(vLost, nMissing, "%s answered SENT, never reached %s", v.describeSend(k), strings.Join(missing, "; "))
		}
	}
	for _, g := range slices.Sorted(maps.Keys(order)) {
		for _, q := range slices.Sorted(maps.Keys(order[g])) {
			s := order[g][q]
			if s.e.kind != entryEvent {
				continue
			}
			for _, u := range slices.Sorted(maps.Keys(s.recipients)) {
				for _, log := range devs(u) {
					r.expected++
					if seen.events[log.key][[2]uint64{g, q}] {
						r.delivered++
						continue
					}
					r.outstanding++
					if final {
						r.add(vLost, "group %d: event %s at gseq %d never reached user %d device %d", g, describeEntry(s.e), q, u, log.key.Device)
					}
				}
			}
		}
	}

	v.checkReceipts(&r, final, devs, seen.delivered)
	return r
}

// streamSeen is what checkStream found on the devices.
type streamSeen struct {
	sends  map[chaosSendKey]map[chaosDevKey]int // deliveries of each send to each device
	events map[chaosDevKey]map[[2]uint64]bool   // the (group, gseq) of the events each device got
	// delivered is, per (sender, receiver, group), the largest id of the
	// sender's messages the receiver got: what its DELIVERED receipts
	// must name.
	delivered map[[3]uint64]uint64
}

// checkStream checks the entries of one device and records what it got
// in seen.
func (v *chaosVerifier) checkStream(r *chaosCheck, log *devLog, order map[uint64]map[uint64]*groupSlot, seen *streamSeen) {
	u, dev := log.key.User, log.key.Device
	lastID := map[[2]uint64]uint64{}   // (kind, peer or group) → last id
	lastGSeq := map[uint64]uint64{}    // group → last gseq
	lastCMID := map[[4]uint64]uint64{} // (sender, device, to, group) → last cmid
	events := map[[2]uint64]bool{}     // (group, gseq) of the events here
	seen.events[log.key] = events
	for i := range log.entries {
		e := &log.entries[i]
		switch e.kind {
		case entryReceipt:
			continue
		case entryEvent:
			k := [2]uint64{e.group, e.gseq}
			if events[k] {
				r.add(vDuplicated, "user %d device %d: group %d event at gseq %d twice", u, dev, e.group, e.gseq)
			}
			events[k] = true
		}
		if e.kind == entryGroup || e.kind == entryEvent {
			if e.gseq <= lastGSeq[e.group] {
				r.add(vReordered, "user %d device %d: group %d gseq %d (seq %d) after gseq %d", u, dev, e.group, e.gseq, e.seq, lastGSeq[e.group])
			}
			lastGSeq[e.group] = max(lastGSeq[e.group], e.gseq)
			if s := order[e.group][e.gseq]; s != nil && s.recipients != nil && !s.recipients[u] {
				r.add(vUnexpected, "user %d device %d got %s at gseq %d of group %d, not a member then", u, dev, describeEntry(e), e.gseq, e.group)
			}
			if e.kind == entryEvent {
				continue
			}
		}
		// A message.
		s := v.sends[e.send]
		if s == nil {
			r.add(vUnexpected, "user %d device %d: seq %d, %s is none of the run's sends", u, dev, e.seq, describeEntry(e))
			continue
		}
		if seen.sends[e.send] == nil {
			seen.sends[e.send] = map[chaosDevKey]int{}
		}
		seen.sends[e.send][log.key]++
		if seen.sends[e.send][log.key] == 2 {
			r.add(vDuplicated, "user %d device %d: %s arrived twice (seq %d the second time)", u, dev, v.describeSend(e.send), e.seq)
		}
		switch {
		case s.outcome == sendFailed:
			r.add(vUnexpected, "user %d device %d: seq %d, %s arrived, as id %d, though it failed (%s)", u, dev, e.seq, v.describeSend(e.send), e.id, s.err)
		case s.outcome == sendAcked && s.id != e.id:
			r.add(vUnexpected, "user %d device %d: seq %d, %s arrived with id %d", u, dev, e.seq, v.describeSend(e.send), e.id)
		case e.kind == entryDirect && (s.group != 0 || s.to != u):
			r.add(vUnexpected, "user %d device %d: seq %d, %s arrived as a message to this user", u, dev, e.seq, v.describeSend(e.send))
		case e.kind == entryCopy && (s.group != 0 || s.key.User != u || s.to != e.peer):
			r.add(vUnexpected, "user %d device %d: seq %d, %s arrived as a copy to user %d", u, dev, e.seq, v.describeSend(e.send), e.peer)
		case e.kind == entryGroup && s.group != e.group:
			r.add(vUnexpected, "user %d device %d: seq %d, %s arrived in group %d", u, dev, e.seq, v.describeSend(e.send), e.group)
		}
		// [S-8-8]: ids grow with seq per sender, per copied recipient, per group.
		idKey := [2]uint64{uint64(e.kind), e.peer}
		if e.kind == entryGroup {
			idKey[1] = e.group
		}
		if e.id <= lastID[idKey] {
			r.add(vReordered, "user %d device %d: seq %d, %s has an id below the one before it (%d)", u, dev, e.seq, describeEntry(e), lastID[idKey])
		}
		lastID[idKey] = max(lastID[idKey], e.id)
		// One device's sends to one destination arrive in the order sent.
		ck := [4]uint64{s.key.User, uint64(s.key.Device), s.to, s.group}
		if s.cmid != 0 {
			if s.cmid <= lastCMID[ck] {
				r.add(vReordered, "user %d device %d: seq %d, %s after cmid %d of the same device", u, dev, e.seq, v.describeSend(e.send), lastCMID[ck])
			}
			lastCMID[ck] = max(lastCMID[ck], s.cmid)
		}
		// What the receipts must name.
		if e.kind == entryDirect {
			k := [3]uint64{e.from, u, 0}
			seen.delivered[k] = max(seen.delivered[k], e.id)
		} else if e.kind == entryGroup && e.from != u {
			k := [3]uint64{e.from, u, e.group}
			seen.delivered[k] = max(seen.delivered[k], e.id)
		}
	}
}

// checkReceipts checks that every sender's devices hold the receipts its
// deliveries and its recipients' read marks owe it, and that every
// reader's devices hold its SELF_READ, and that no receipt names more.
func (v *chaosVerifier) checkReceipts(r *chaosCheck, final bool, devs func(uint64) []*devLog, deliveredMax map[[3]uint64]uint64) {
	type want struct {
		lo, hi uint64 // the receipt's largest up_to must be in [lo, hi]
		what   string
	}
	owed := map[chaosDevKey]map[receiptKey]want{}
	owe := func(u uint64, k receiptKey, w want) {
		for _, log := range devs(u) {
			if owed[log.key] == nil {
				owed[log.key] = map[receiptKey]want{}
			}
			owed[log.key][k] = w
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(deliveredMax), func(a, b [3]uint64) int { return slices.Compare(a[:], b[:]) }) {
		id := deliveredMax[k]
		owe(k[0], receiptKey{pb.ReceiptType_RECEIPT_DELIVERED, k[1], k[2]}, want{id, id, fmt.Sprintf("DELIVERED from user %d%s up to id %d", k[1], inGroup(k[2]), id)})
	}
	for _, k := range slices.SortedFunc(maps.Keys(v.reads), cmpReadKey) {
		m := v.reads[k]
		r.outstanding += m.pending
		if n := m.pending + m.unanswered; n > 0 && final {
			r.add(vUnanswered, "%d of user %d's read marks on user %d's messages%s (up to id %d) never answered", n, k.Reader, k.Peer, inGroup(k.Group), m.requested)
		}
		for _, e := range m.refused {
			r.add(vUnexpected, "user %d's read mark on user %d's messages%s refused: %s", k.Reader, k.Peer, inGroup(k.Group), e)
		}
		if m.ok > 0 {
			r.reads++
		}
		owe(k.Peer, receiptKey{pb.ReceiptType_RECEIPT_READ, k.Reader, k.Group},
			want{m.ok, m.requested, fmt.Sprintf("READ from user %d%s up to id %d", k.Reader, inGroup(k.Group), m.ok)})
		owe(k.Reader, receiptKey{pb.ReceiptType_RECEIPT_SELF_READ, k.Peer, k.Group},
			want{m.ok, m.requested, fmt.Sprintf("SELF_READ of user %d's messages%s up to id %d", k.Peer, inGroup(k.Group), m.ok)})
	}
	for _, u := range slices.Sorted(maps.Keys(v.users)) {
		for _, log := range devs(u) {
			ws := owed[log.key]
			for _, k := range slices.SortedFunc(maps.Keys(ws), cmpReceiptKey) {
				w := ws[k]
				if w.lo > 0 {
					r.receipts++
				}
				got := log.receipts[k]
				switch {
				case got < w.lo:
					r.outstanding++
					if final {
						r.add(vReceipt, "user %d device %d: %s missing (it has up to id %d)", u, log.key.Device, w.what, got)
					}
				case got > w.hi:
					r.add(vUnexpected, "user %d device %d: %s, but a receipt names id %d", u, log.key.Device, w.what, got)
				}
			}
			for _, k := range slices.SortedFunc(maps.Keys(log.receipts), cmpReceiptKey) {
				if _, ok := ws[k]; !ok {
					r.add(vUnexpected, "user %d device %d: a %v receipt from user %d%s up to id %d that nothing caused",
						u, log.key.Device, k.Type, k.Peer, inGroup(k.Group), log.receipts[k])
				}
			}
		}
	}
}

// describeSend names a send for a report: its ids and where it went.
// v.mu must be held.
func (v *chaosVerifier) describeSend(k chaosSendKey) string {
	s := v.sends[k]
	if s == nil {
		return fmt.Sprintf("message #%d of user %d device %d (not sent)", k.N, k.User, k.Device)
	}
	to := fmt.Sprintf("to user %d", s.to)
	if s.group != 0 {
		to = fmt.Sprintf("to group %d", s.group)
	}
	if s.outcome != sendAcked {
		return fmt.Sprintf("message #%d (user %d device %d cmid %d %s)", k.N, k.User, k.Device, s.cmid, to)
	}
	return fmt.Sprintf("message id %d (user %d device %d cmid %d %s)", s.id, k.User, k.Device, s.cmid, to)
}

// describeEntry names an entry for a report.
func describeEntry(e *chaosEntry) string {
	switch e.kind {
	case entryDirect:
		return fmt.Sprintf("message id %d from user %d", e.id, e.from)
	case entryCopy:
		return fmt.Sprintf("copy of message id %d to user %d", e.id, e.peer)
	case entryGroup:
		return fmt.Sprintf("group message id %d from user %d", e.id, e.from)
	case entryEvent:
		return fmt.Sprintf("group event id %d %v %v by user %d", e.id, e.op, e.members, e.actor)
	default:
		return "a receipt"
	}
}

func inGroup(g uint64) string {
	if g == 0 {
		return ""
	}
	return fmt.Sprintf(" in group %d", g)
}

func cmpSendKey(a, b chaosSendKey) int {
	return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Device, b.Device), cmp.Compare(a.N, b.N))
}

func cmpReadKey(a, b chaosReadKey) int {
	return slices.Compare([]uint64{a.Reader, a.Peer, a.Group}, []uint64{b.Reader, b.Peer, b.Group})
}

func cmpReceiptKey(a, b receiptKey) int {
	return slices.Compare([]uint64{uint64(a.Type), a.Peer, a.Group}, []uint64{uint64(b.Type), b.Peer, b.Group})
}

// sigOf hashes integers.
func sigOf(vals ...uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, x := range vals {
		binary.BigEndian.PutUint64(b[:], x)
		_, _ = h.Write(b[:])
	}
	return h.Sum64()
}

// sigBytes hashes bytes.
func sigBytes(p []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(p)
	return h.Sum64()
}

// Chaos message bodies name their send: "chaos <user>.<device>.<n>".
const chaosBodyPrefix = "chaos "

// appendChaosBody appends the body of send k.
func appendChaosBody(dst []byte, k chaosSendKey) []byte {
	return fmt.Appendf(dst, "%s%d.%d.%d", chaosBodyPrefix, k.User, k.Device, k.N)
}

// parseChaosBody reads what appendChaosBody wrote.
func parseChaosBody(b []byte) (chaosSendKey, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(chaosBodyPrefix))
	if !ok {
		return chaosSendKey{}, false
	}
	var k chaosSendKey
	if n, err := fmt.Sscanf(string(rest), "%d.%d.%d", &k.User, &k.Device, &k.N); err != nil || n != 3 || k.N == 0 {
		return chaosSendKey{}, false
	}
	return k, true
}
