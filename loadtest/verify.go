package loadtest

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

// Message bodies: what a receiver needs to check a delivery and time it.
//
//	+-----------------+-----------------+-----------+---------------+
//	| intended unix ns| actual unix ns  | cmid      | filler        |
//	| 8 bytes, BE     | 8 bytes, BE     | 4 bytes BE| to MessageSize|
//	+-----------------+-----------------+-----------+---------------+
//
// The intended time is when the schedule wanted the message sent: in a
// fixed-rate run latency counts from it, so a sender held back by the
// server is charged for the wait (no coordinated omission). The actual
// time gives the uncorrected figure.
const bodyHeader = 20

// appendBody appends a message body of size bytes.
func appendBody(dst []byte, intended, actual int64, cmid uint64, size int) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(intended))
	dst = binary.BigEndian.AppendUint64(dst, uint64(actual))
	dst = binary.BigEndian.AppendUint32(dst, uint32(cmid))
	for range size - bodyHeader {
		dst = append(dst, 'x')
	}
	return dst
}

// parseBody reads what appendBody wrote; ok is false for a short body.
func parseBody(b []byte) (intended, actual int64, cmid uint64, ok bool) {
	if len(b) < bodyHeader {
		return 0, 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), uint64(binary.BigEndian.Uint32(b[16:])), true
}

// direction is the traffic from one device to its peer: which cmids the
// sender saw Sent for, which the receiver got, and which were resent.
type direction struct {
	mu       sync.Mutex
	acked    bitset // guarded by mu: Sent seen
	received bitset // guarded by mu: delivered
	resent   bitset // guarded by mu: sent more than once
	highest  uint64 // guarded by mu: highest cmid delivered
	nAcked   int    // guarded by mu
	nRecv    int    // guarded by mu
}

// ack records the Sent for cmid; it reports false for a repeated Sent.
func (d *direction) ack(cmid uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.acked.get(cmid) {
		return false
	}
	d.acked.set(cmid)
	d.nAcked++
	return true
}

// markResent records that cmid was sent again.
func (d *direction) markResent(cmid uint64) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.resent.set(cmid)
	d.mu.Unlock()
}

// deliveryVerdict is what one delivery of a cmid shows.
type deliveryVerdict uint8

const (
	deliveredOK deliveryVerdict = iota
	deliveredTwice
	deliveredOutOfOrder
)

// receive records the delivery of cmid.
func (d *direction) receive(cmid uint64) deliveryVerdict {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.received.get(cmid) {
		return deliveredTwice
	}
	d.received.set(cmid)
	d.nRecv++
	v := deliveredOK
	if cmid < d.highest && !d.resent.get(cmid) && !d.resent.get(d.highest) {
		v = deliveredOutOfOrder
	}
	d.highest = max(d.highest, cmid)
	return v
}

// lost counts the cmids whose Sent was seen and that never arrived.
func (d *direction) lost() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for i, w := range d.acked {
		var r uint64
		if i < len(d.received) {
			r = d.received[i]
		}
		n += bits.OnesCount64(w &^ r)
	}
	return n
}

// missing counts the cmids from 1 to last that never arrived.
func (d *direction) missing(last uint64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for c := uint64(1); c <= last; c++ {
		if !d.received.get(c) {
			n++
		}
	}
	return n
}

// counts returns how many cmids were acknowledged and how many received.
func (d *direction) counts() (acked, received int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nAcked, d.nRecv
}

// bitset is a growable set of small integers.
type bitset []uint64

func (b bitset) get(i uint64) bool {
	w := i / 64
	return w < uint64(len(b)) && b[w]&(1<<(i%64)) != 0
}

func (b *bitset) set(i uint64) {
	w := int(i / 64)
	for w >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[w] |= 1 << (i % 64)
}
