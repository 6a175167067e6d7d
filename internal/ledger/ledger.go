package ledger

import (
	"math/bits"
	"sync"
)

// Verdict is what one delivery of a cmid shows.
type Verdict uint8

const (
	// Delivered is a first delivery, in order.
	Delivered Verdict = iota
	// DeliveredTwice is a cmid delivered before.
	DeliveredTwice
	// DeliveredOutOfOrder is a first delivery below a cmid already
	// delivered, when neither was resent.
	DeliveredOutOfOrder
)

// String names the verdict.
func (v Verdict) String() string {
	switch v {
	case Delivered:
		return "delivered"
	case DeliveredTwice:
		return "delivered twice"
	case DeliveredOutOfOrder:
		return "delivered out of order"
	}
	return "unknown verdict"
}

// Flow is the traffic of one sender to one receiver: which cmids the
// sender saw SENT for, which the receiver got, and which were resent. The
// zero Flow is empty and ready to use.
type Flow struct {
	mu       sync.Mutex
	acked    bitset // guarded by mu: SENT seen
	received bitset // guarded by mu: delivered
	resent   bitset // guarded by mu: sent more than once
	highest  uint64 // guarded by mu: highest cmid delivered
	nAcked   int    // guarded by mu
	nRecv    int    // guarded by mu
}

// Ack records the SENT for cmid; it reports false for a repeated SENT.
func (f *Flow) Ack(cmid uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.acked.get(cmid) {
		return false
	}
	f.acked.set(cmid)
	f.nAcked++
	return true
}

// MarkResent records that cmid was sent again, so its delivery after a
// higher cmid is no reorder ([S-8-13]: a retried SEND takes the place of
// its first successful attempt). A nil Flow ignores it.
func (f *Flow) MarkResent(cmid uint64) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.resent.set(cmid)
	f.mu.Unlock()
}

// Receive records the delivery of cmid and judges it.
func (f *Flow) Receive(cmid uint64) Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.received.get(cmid) {
		return DeliveredTwice
	}
	f.received.set(cmid)
	f.nRecv++
	v := Delivered
	if cmid < f.highest && !f.resent.get(cmid) && !f.resent.get(f.highest) {
		v = DeliveredOutOfOrder
	}
	f.highest = max(f.highest, cmid)
	return v
}

// Lost counts the cmids whose SENT was seen and that never arrived.
func (f *Flow) Lost() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for i, w := range f.acked {
		n += bits.OnesCount64(w &^ f.received.word(i))
	}
	return n
}

// LostCMIDs returns up to limit of the cmids Lost counts, lowest first.
func (f *Flow) LostCMIDs(limit int) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for i, w := range f.acked {
		for rest := w &^ f.received.word(i); rest != 0 && len(out) < limit; rest &= rest - 1 {
			out = append(out, uint64(i)*64+uint64(bits.TrailingZeros64(rest)))
		}
	}
	return out
}

// Missing counts the cmids from 1 to last that never arrived.
func (f *Flow) Missing(last uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for c := uint64(1); c <= last; c++ {
		if !f.received.get(c) {
			n++
		}
	}
	return n
}

// Counts returns how many cmids were acknowledged and how many received.
func (f *Flow) Counts() (acked, received int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nAcked, f.nRecv
}

// bitset is a growable set of small integers.
type bitset []uint64

func (b bitset) get(i uint64) bool {
	w := i / 64
	return w < uint64(len(b)) && b[w]&(1<<(i%64)) != 0
}

// word returns the i-th word, 0 past the end.
func (b bitset) word(i int) uint64 {
	if i < len(b) {
		return b[i]
	}
	return 0
}

func (b *bitset) set(i uint64) {
	w := int(i / 64)
	for w >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[w] |= 1 << (i % 64)
}
