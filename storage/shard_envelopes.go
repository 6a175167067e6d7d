package storage

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Per-device envelopes (spec.md section 17.2). A 1:1 SEND may carry one
// ciphertext per device of the recipient (To) and one per other device of
// the sender (Own) instead of a body. The message is still one message:
// one cmid, one message id, one SENT, one inbox entry in the recipient's
// inbox and one copy in the sender's. Each entry holds all of its user's
// envelopes (kindEnvelopes); the pump, which produces every device's
// stream in seq order, resolves the entry into a MESSAGE carrying only the
// device's own envelope. So every device of a user still sees the same
// seqs in the same order ([S-8-1]); a device without an envelope (the
// sending device, one linked later) gets the MESSAGE without a body.
//
// The envelopes must name exactly the devices with keys of each user
// ([S-17-9]). The sender's devices live on the sender's shard and the
// recipient's on the recipient's, so such a send runs in two steps: the
// sender's shard compares Own with the sender's devices and passes the
// verdict on (Envelopes.OwnChecked), then the recipient's shard
// deduplicates, compares To with the recipient's devices, and refuses
// with DEVICES_CHANGED, listing both users' devices, or stores.

// kindEnvelopes marks an inbox entry holding per-device envelopes:
// kindEnvelopes, uvarint count, count × (uvarint device, uvarint cipher,
// uvarint length, body), then the stored Message fields without body
// (codec.AppendMessageEntry). It never reaches the wire: the pump
// resolves it for each device (envelopeFor).
const kindEnvelopes = 0xfe

// Envelopes are the per-device ciphertexts of a 1:1 send. The server
// copies them in; the shards never change them, except the fields of the
// sender's check.
type Envelopes struct {
	// To holds one envelope per device of the recipient, Own one per
	// other device of the sender (spec.md [S-17-8]).
	To, Own []*pb.Envelope
	// OwnChecked: the sender's shard compared Own with the sender's
	// devices with keys. OwnStale: they differed, and OwnDevices holds
	// the sender's devices (the sending one left out), for the error.
	OwnChecked bool
	OwnStale   bool
	OwnDevices []uint32
}

// size returns the bytes of the envelopes' bodies.
func (e *Envelopes) size() int {
	n := 0
	for _, l := range [][]*pb.Envelope{e.To, e.Own} {
		for _, v := range l {
			n += len(v.Body)
		}
	}
	return n
}

// hash adds the envelopes to a send's content hash (bodySum).
func (e *Envelopes) hash(d *xxhash.Digest) {
	var b []byte
	for i, l := range [][]*pb.Envelope{e.To, e.Own} {
		b = append(b[:0], 0xfe, byte(i))
		for _, v := range l {
			b = binary.AppendUvarint(b, uint64(v.Device))
			b = binary.AppendUvarint(b, uint64(v.Cipher))
			b = binary.AppendUvarint(b, uint64(len(v.Body)))
			_, _ = d.Write(b)
			_, _ = d.Write(v.Body)
			b = b[:0]
		}
	}
}

// deviceIDs returns the devices l names, in increasing order.
func deviceIDs(l []*pb.Envelope) []uint32 {
	ids := make([]uint32, len(l))
	for i, v := range l {
		ids[i] = v.Device
	}
	slices.Sort(ids)
	return ids
}

// submitter is a Forwarder that reports a refused op (the router does):
// forwardSend answers a send it could not hand on.
type submitter interface{ Submit(Op) error }

// applyEnvelopeSend runs an envelope send: its first step on the
// sender's shard, its second on the recipient's (the same shard may do
// both at once).
func (s *Shard) applyEnvelopeSend(op *Op) {
	e := op.Envelopes
	if !e.OwnChecked {
		if s.heldBack(op) {
			return
		}
		sender, err := s.loadUser(op.From)
		if err != nil || sender == nil {
			s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
			return
		}
		own, err := s.keyedDevices(sender)
		if err != nil {
			s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
			return
		}
		own = slices.DeleteFunc(own, func(d uint32) bool { return d == op.FromDevice })
		if op.User == op.From {
			own = nil // to itself: its other devices are the recipients
		}
		checked := *e // the submitter's value stays as it was
		e = &checked
		op.Envelopes = e
		e.OwnChecked = true
		if !slices.Equal(own, deviceIDs(e.Own)) {
			e.OwnStale, e.OwnDevices = true, own
		}
		if s.cfg.Forwarder.ShardOf(op.User) != s.cfg.ID {
			s.effectWith(effForwardSend, ConnRef{}, effectMore{op: *op})
			return
		}
	}
	s.storeEnvelopes(op)
}

// storeEnvelopes is an envelope send's step on the recipient's shard.
func (s *Shard) storeEnvelopes(op *Op) {
	e := op.Envelopes
	u, err := s.loadUser(op.User)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	}
	if u == nil {
		s.replyError(op.Conn, protocol.CodeNotFound, 0, op.CMID)
		return
	}
	dk := dedupeKey(nil, op.User, op.From, op.FromDevice, op.CMID)
	prev, err := s.dedupeLookup(u, op, dk)
	if err != nil {
		s.abort(err)
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	}
	sum := bodySum(op)
	if prev != nil {
		// A retry is answered as the first attempt was, whatever the
		// devices are now ([S-8-14]).
		s.answerRepeat(op, prev, sum)
		return
	}
	to, err := s.keyedDevices(u)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	}
	if op.User == op.From {
		to = slices.DeleteFunc(to, func(d uint32) bool { return d == op.FromDevice })
	}
	// Behind a refusal of this conversation (DEVICES_CHANGED included) a
	// send is held back before its devices are compared: a stale one
	// answered DEVICES_CHANGED would move the barrier past sends that
	// wait behind it ([S-8-13]).
	if s.heldBack(op) {
		return
	}
	if e.OwnStale || !slices.Equal(to, deviceIDs(e.To)) {
		// [S-17-9] the sender's view of a device list is stale. The
		// client encrypts it again and resends it under its cmid; until
		// then the connection's later sends to this user wait
		// (shard_order.go).
		s.raiseBarrier(op, protocol.CodeOverloaded, retryDevicesMS)
		res := &pb.Error{Code: protocol.CodeDevicesChanged, Cmid: op.CMID, Devices: []*pb.UserDevices{{User: op.User, Devices: to}}}
		if op.User != op.From {
			own := e.OwnDevices
			if !e.OwnStale {
				own = deviceIDs(e.Own)
			}
			res.Devices = append(res.Devices, &pb.UserDevices{User: op.From, Devices: own})
		}
		s.replyProto(op.Conn, protocol.KindError, res)
		return
	}
	if !s.roomFor(op) {
		return
	}
	// [S-18-6] a send from a user the recipient blocks is answered as any
	// other and stored nowhere in the recipient's inbox.
	blocked := s.blocks(u, op.From)
	if !blocked && s.inboxFull(u, e.size()) {
		s.quotaRefusals.Add(1)
		s.replyRetry(op.Conn, protocol.CodeInboxFull, 0, op.CMID, retryFullMS)
		return
	}
	id := s.ids.next(s.cfg.Now())
	ttl := s.timerWith(u, op.From) // [S-18-10]
	msg := codec.Message{ID: id, From: op.From, Type: op.Type, FromDevice: op.FromDevice, Cipher: op.Cipher, TTL: ttl,
		Forwarded: op.Forwarded, Ref: op.Ref}
	var seq uint64 // 0: not stored (msgRecord.Seq)
	if !blocked {
		s.appendLocal(u, appendEnvelopesEntry(nil, msg, e.To))
		seq = u.rec.Head
		s.indexExpiring(u, seq, id, ttl)
	}
	if op.From != op.User {
		// [S-8-17] the copy for the sender's other devices, with theirs.
		msg.To = op.User
		s.appendCopy(op.From, appendEnvelopesEntry(nil, msg, e.Own), id, ttl)
	}
	s.batch.Set(dk, binary.BigEndian.AppendUint64(be64(id), sum), nil)
	s.indexMessage(msgToUser, op.User, id, msgRecord{From: op.From, Device: op.FromDevice, CMID: op.CMID, Seq: seq})
	s.emit(analytics.Event{Type: analytics.TypeMessageAccepted, User: op.From, Device: op.FromDevice, Peer: op.User, ID: id, Size: int64(e.size())})
	start := len(s.out)
	s.out = codec.AppendSent(s.out, op.CMID, id)
	s.reply(op.Conn, start)
}

// appendEnvelopesEntry appends a kindEnvelopes entry for message m (its
// Body unused) with envelopes l.
func appendEnvelopesEntry(dst []byte, m codec.Message, l []*pb.Envelope) []byte {
	dst = append(dst, kindEnvelopes)
	dst = binary.AppendUvarint(dst, uint64(len(l)))
	for _, v := range l {
		dst = binary.AppendUvarint(dst, uint64(v.Device))
		dst = binary.AppendUvarint(dst, uint64(v.Cipher))
		dst = binary.AppendUvarint(dst, uint64(len(v.Body)))
		dst = append(dst, v.Body...)
	}
	m.Body = nil
	return codec.AppendMessageEntry(dst, m)
}

// envelopeEntry is a parsed kindEnvelopes entry; it aliases the entry.
type envelopeEntry struct {
	fields    []byte // the stored Message fields, without body
	envelopes []byte // the envelope table after its count
	count     uint64
}

// parseEnvelopes parses a kindEnvelopes entry.
func parseEnvelopes(entry []byte) (envelopeEntry, error) {
	var p envelopeEntry
	if len(entry) == 0 || entry[0] != kindEnvelopes {
		return p, fmt.Errorf("%w: envelopes entry", errCorrupt)
	}
	b := entry[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return p, fmt.Errorf("%w: envelopes entry", errCorrupt)
	}
	b = b[k:]
	p.count, p.envelopes = n, b
	for range n {
		for range 2 {
			if _, k := binary.Uvarint(b); k <= 0 {
				return p, fmt.Errorf("%w: envelopes entry", errCorrupt)
			} else {
				b = b[k:]
			}
		}
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return p, fmt.Errorf("%w: envelopes entry", errCorrupt)
		}
		b = b[k+int(l):]
	}
	p.envelopes = p.envelopes[:len(p.envelopes)-len(b)]
	p.fields = b
	return p, nil
}

// find returns the envelope for device d: its cipher and body.
func (p envelopeEntry) find(d uint32) (cipher uint64, body []byte, ok bool) {
	b := p.envelopes
	for range p.count {
		dev, k := binary.Uvarint(b)
		b = b[k:]
		c, k := binary.Uvarint(b)
		b = b[k:]
		l, k := binary.Uvarint(b)
		b = b[k:]
		if dev == uint64(d) {
			return c, b[:l], true
		}
		b = b[l:]
	}
	return 0, nil, false
}

// envelopeFor returns the stored MESSAGE (kind byte + stored body) that
// device d gets for a kindEnvelopes entry: the message fields with d's
// envelope as body and cipher, or with no body when there is none for
// d. It builds it in s.envBuf, valid until the next call.
func (s *Shard) envelopeFor(entry []byte, d uint32) []byte {
	p, err := parseEnvelopes(entry)
	if err != nil {
		s.log.Error("corrupt envelopes entry", "err", err)
		return nil
	}
	b := append(s.envBuf[:0], byte(protocol.KindMessage))
	b = append(b, p.fields...)
	if c, body, ok := p.find(d); ok {
		b = codec.AppendMessageEntry(b, codec.Message{Body: body, Cipher: pb.Cipher(c)})
	}
	s.envBuf = b
	return b
}

// envelopeFields returns the stored Message fields of a kindEnvelopes
// entry, for what reads a message's sender and id (receipts).
func envelopeFields(entry []byte) ([]byte, bool) {
	p, err := parseEnvelopes(entry)
	return p.fields, err == nil
}

// forwardSend hands an envelope send checked here to the recipient's
// shard. When that shard refuses it (its queue is full) the send is
// answered OVERLOADED, so that it is never left without an answer.
func (s *Shard) forwardSend(op Op) {
	sub, ok := s.cfg.Forwarder.(submitter)
	if !ok {
		s.cfg.Forwarder.Forward(op)
		return
	}
	if err := sub.Submit(op); err != nil {
		if ep := s.cfg.Conns.Endpoint(op.Conn); ep != nil {
			ep.Reply(codec.AppendError(nil, protocol.CodeOverloaded, 0, op.CMID, "", retryBusyMS))
		}
	}
}

// retryBusyMS is the delay suggested with OVERLOADED.
const retryBusyMS = 500
