package link

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// Link frame kinds. They are the kind byte of codec frames on a node link,
// a stream of its own: they are not protocol.Kind values of the client
// protocol and never appear on a client connection.
const (
	kindHello   protocol.Kind = 1 // dialer → acceptor: version, node id, generation, target id
	kindWelcome protocol.Kind = 2 // acceptor → dialer: version, node id, generation, last sequence received
	kindBatch   protocol.Kind = 3 // dialer → acceptor: first sequence, then records; may be compressed
	kindAck     protocol.Kind = 4 // acceptor → dialer: last sequence delivered (also the acceptor's heartbeat)
	kindPing    protocol.Kind = 5 // dialer → acceptor: empty heartbeat while the dialer has nothing to send
)

// wireVersion is the link protocol's version, first byte of Hello and
// Welcome. A node refuses a peer speaking another version.
const wireVersion = 1

// maxFrame is the largest link frame body: what codec's 3-byte length
// prefix can declare. It also caps a compressed batch's inflated size.
const maxFrame = 1<<21 - 1

// batchOverhead bounds the bytes a batch frame adds around one record:
// the frame header, the first sequence and the record header.
const batchOverhead = protocol.MaxHeaderLen + binary.MaxVarintLen64 + 1 + binary.MaxVarintLen64

// MaxMessageLimit is the largest value Config.MaxMessage may take: a
// message alone in a batch must fit a link frame.
const MaxMessageLimit = maxFrame - batchOverhead

// typeGap is the record type of a gap marker: messages were refused between
// the record before it and the record after it. Users' types are 1–255.
const typeGap = 0

// errWire wraps every malformed link frame.
var errWire = errors.New("link: malformed frame")

// hello is the body of a Hello or a Welcome.
type hello struct {
	node uint32
	gen  uint32
	// target is, in a Hello, the node the dialer means to reach; in a
	// Welcome, the last sequence the acceptor delivered from the dialer's
	// generation (0: none).
	target uint64
}

func appendHello(dst []byte, k protocol.Kind, h hello) []byte {
	var body [1 + 3*binary.MaxVarintLen64]byte
	b := append(body[:0], wireVersion)
	b = binary.AppendUvarint(b, uint64(h.node))
	b = binary.AppendUvarint(b, uint64(h.gen))
	b = binary.AppendUvarint(b, h.target)
	return codec.AppendFrame(dst, k, b)
}

func parseHello(b []byte) (hello, error) {
	if len(b) == 0 || b[0] != wireVersion {
		return hello{}, fmt.Errorf("%w: hello of another version", errWire)
	}
	b = b[1:]
	var v [3]uint64
	for i := range v {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return hello{}, fmt.Errorf("%w: short hello", errWire)
		}
		v[i], b = x, b[n:]
	}
	if len(b) != 0 || v[0] == 0 || v[0] > 1<<32-1 || v[1] == 0 || v[1] > 1<<32-1 {
		return hello{}, fmt.Errorf("%w: bad hello", errWire)
	}
	return hello{node: uint32(v[0]), gen: uint32(v[1]), target: v[2]}, nil
}

// appendAck appends an Ack frame confirming delivery up to seq.
func appendAck(dst []byte, seq uint64) []byte {
	var body [binary.MaxVarintLen64]byte
	return codec.AppendFrame(dst, kindAck, binary.AppendUvarint(body[:0], seq))
}

func parseAck(b []byte) (uint64, error) {
	seq, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return 0, fmt.Errorf("%w: bad ack", errWire)
	}
	return seq, nil
}

// appendRecord appends one message record of a batch: its type, its
// length as a uvarint, its body.
func appendRecord(dst []byte, typ uint8, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// recordLen returns the encoded size of a record with a body of n bytes.
func recordLen(n int) int {
	var tmp [binary.MaxVarintLen64]byte
	return 1 + len(binary.AppendUvarint(tmp[:0], uint64(n))) + n
}

// nextRecord splits the first record off b.
func nextRecord(b []byte) (typ uint8, body, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, fmt.Errorf("%w: short record", errWire)
	}
	typ = b[0]
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > uint64(len(b)-1-k) {
		return 0, nil, nil, fmt.Errorf("%w: record overruns its batch", errWire)
	}
	start := 1 + k
	end := start + int(n)
	return typ, b[start:end:end], b[end:], nil
}

// skipRecords returns b without its first n records; b holds whole records.
func skipRecords(b []byte, n int) []byte {
	for ; n > 0; n-- {
		_, _, rest, err := nextRecord(b)
		if err != nil {
			panic("link: skipRecords past the end of a chunk")
		}
		b = rest
	}
	return b
}
