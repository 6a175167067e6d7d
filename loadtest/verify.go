package loadtest

import (
	"encoding/binary"

	"github.com/parley-im/parley/internal/ledger"
)

// Message bodies: what a receiver needs to check a delivery and time it.
//
//	+-----------------+-----------------+-----------+---------------+
//	| intended unix ns| actual unix ns  | cmid      | filler        |
//	| 8 bytes, BE     | 8 bytes, BE     | 4 bytes BE| to MessageSize|
//	+-----------------+-----------------+-----------+---------------+
//
// The intended time is when the latency counts from: in a fixed-rate run
// the scheduled time of a send the server held back (a full in-flight
// window, no session), so the server is charged for the wait (no
// coordinated omission), and the write's time of one it did not (the
// sender's own lateness is not the server's). The actual time, the
// write's, gives the uncorrected figure.
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
type direction = ledger.Flow

// What one delivery of a cmid shows.
const (
	deliveredOK         = ledger.Delivered
	deliveredTwice      = ledger.DeliveredTwice
	deliveredOutOfOrder = ledger.DeliveredOutOfOrder
)
