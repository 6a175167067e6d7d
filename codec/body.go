package codec

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// The hot frames (Send, Ack, Sent, Message, Receipt, Error) have hand-written
// encoders and decoders here that neither allocate nor copy; they produce
// and accept exactly what the generated code in protocol/pb does, which the
// tests check field by field. Every other frame goes through AppendProto and
// ParseProto.

// Field numbers of the hot messages, from parley.proto.
const (
	fieldSendTo    = 1
	fieldSendCMID  = 2
	fieldSendBody  = 3
	fieldSendType  = 4
	fieldSendGroup = 5
	fieldSendEnv   = 6 // Send.envelopes
	fieldSendOwn   = 7 // Send.own
	fieldSendCiph  = 8 // Send.cipher
	// fieldSendForwarded, fieldSendRef: spec.md [S-18-11].
	fieldSendForwarded = 14
	fieldSendRef       = 15

	fieldAckSeq = 1

	fieldSentCMID = 1
	fieldSentID   = 2

	fieldEntrySeq = 1 // Message.seq and Receipt.seq

	fieldMessageID         = 2
	fieldMessageFrom       = 3
	fieldMessageBody       = 4
	fieldMessageType       = 5
	fieldMessageFromDevice = 6
	fieldMessageGroup      = 7
	fieldMessageGSeq       = 8
	fieldMessageTo         = 9
	fieldMessageCipher     = 10
	fieldMessageTTL        = 13 // spec.md [S-18-10]
	fieldMessageForwarded  = 14 // spec.md [S-18-11]
	fieldMessageRef        = 15 // spec.md [S-18-11]

	fieldReceiptPeer  = 2
	fieldReceiptType  = 3
	fieldReceiptUpTo  = 4
	fieldReceiptGroup = 5

	fieldErrorCode    = 1
	fieldErrorRID     = 2
	fieldErrorCMID    = 3
	fieldErrorMessage = 4
	fieldErrorRetry   = 5
)

// Send is a decoded Send body. Body aliases the frame.
type Send struct {
	To     uint64
	CMID   uint64
	Body   []byte
	Type   pb.ContentType
	Group  uint64
	Cipher pb.Cipher
	// Envelopes reports that the body holds envelopes or own envelopes
	// (spec.md [S-17-8]), which ParseSend does not decode: the caller
	// decodes the whole body with ParseProto.
	Envelopes bool
	// Forwarded and Ref: spec.md [S-18-11].
	Forwarded uint32
	Ref       uint64
}

// Message is a decoded Message body. Body aliases the frame.
type Message struct {
	Seq        uint64
	ID         uint64
	From       uint64
	Body       []byte
	Type       pb.ContentType
	FromDevice uint32
	Group      uint64
	GSeq       uint64
	To         uint64
	Cipher     pb.Cipher
	TTL        uint32 // disappearing: seconds the message lives after its time
	Forwarded  uint32 // times the content was forwarded
	Ref        uint64 // the message this one replies to, reacts to or edits
}

// Receipt is a decoded Receipt body.
type Receipt struct {
	Seq   uint64
	Peer  uint64
	Type  pb.ReceiptType
	UpTo  uint64
	Group uint64
}

// field is one decoded protobuf field: a varint (v) or a length-delimited
// field (data, aliasing the message).
type field struct {
	num  protowire.Number
	typ  protowire.Type
	v    uint64
	data []byte
}

// varint stores the field's value in *dst if it is a varint. A known field
// with another wire type is treated as an unknown field and ignored, as the
// generated code does ([S-12-3]).
func (f field) varint(dst *uint64) {
	if f.typ == protowire.VarintType {
		*dst = f.v
	}
}

// bytes stores the field's data in *dst if it is length-delimited.
func (f field) bytes(dst *[]byte) {
	if f.typ == protowire.BytesType {
		*dst = f.data
	}
}

// walk calls fn for every varint and length-delimited field of the protobuf
// message in b. Fields of other wire types are skipped, and fn ignores
// field numbers it does not know, as proto3 requires.
func walk(b []byte, fn func(f field)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrMalformed, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: field number %d out of range", ErrMalformed, num)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
			fn(field{num: num, typ: typ, v: v})
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
			fn(field{num: num, typ: typ, data: v})
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// ParseSend decodes a Send body.
func ParseSend(b []byte) (Send, error) {
	var s Send
	err := walk(b, func(f field) {
		switch f.num {
		case fieldSendTo:
			f.varint(&s.To)
		case fieldSendCMID:
			f.varint(&s.CMID)
		case fieldSendBody:
			f.bytes(&s.Body)
		case fieldSendType:
			if f.typ == protowire.VarintType {
				s.Type = pb.ContentType(int32(f.v))
			}
		case fieldSendGroup:
			f.varint(&s.Group)
		case fieldSendEnv, fieldSendOwn:
			s.Envelopes = s.Envelopes || f.typ == protowire.BytesType
		case fieldSendCiph:
			if f.typ == protowire.VarintType {
				s.Cipher = pb.Cipher(int32(f.v))
			}
		case fieldSendForwarded:
			if f.typ == protowire.VarintType {
				s.Forwarded = uint32(f.v)
			}
		case fieldSendRef:
			f.varint(&s.Ref)
		}
	})
	return s, err
}

// ParseAck decodes an Ack body and returns its seq.
func ParseAck(b []byte) (uint64, error) {
	var seq uint64
	err := walk(b, func(f field) {
		if f.num == fieldAckSeq {
			f.varint(&seq)
		}
	})
	return seq, err
}

// ParseMessage decodes a Message body.
func ParseMessage(b []byte) (Message, error) {
	var m Message
	err := walk(b, func(f field) {
		switch f.num {
		case fieldEntrySeq:
			f.varint(&m.Seq)
		case fieldMessageID:
			f.varint(&m.ID)
		case fieldMessageFrom:
			f.varint(&m.From)
		case fieldMessageBody:
			f.bytes(&m.Body)
		case fieldMessageType:
			if f.typ == protowire.VarintType {
				m.Type = pb.ContentType(int32(f.v))
			}
		case fieldMessageFromDevice:
			if f.typ == protowire.VarintType {
				m.FromDevice = uint32(f.v)
			}
		case fieldMessageGroup:
			f.varint(&m.Group)
		case fieldMessageGSeq:
			f.varint(&m.GSeq)
		case fieldMessageTo:
			f.varint(&m.To)
		case fieldMessageCipher:
			if f.typ == protowire.VarintType {
				m.Cipher = pb.Cipher(int32(f.v))
			}
		case fieldMessageTTL:
			if f.typ == protowire.VarintType {
				m.TTL = uint32(f.v)
			}
		case fieldMessageForwarded:
			if f.typ == protowire.VarintType {
				m.Forwarded = uint32(f.v)
			}
		case fieldMessageRef:
			f.varint(&m.Ref)
		}
	})
	return m, err
}

// ParseReceipt decodes a Receipt body.
func ParseReceipt(b []byte) (Receipt, error) {
	var r Receipt
	err := walk(b, func(f field) {
		switch f.num {
		case fieldEntrySeq:
			f.varint(&r.Seq)
		case fieldReceiptPeer:
			f.varint(&r.Peer)
		case fieldReceiptType:
			if f.typ == protowire.VarintType {
				r.Type = pb.ReceiptType(int32(f.v))
			}
		case fieldReceiptUpTo:
			f.varint(&r.UpTo)
		case fieldReceiptGroup:
			f.varint(&r.Group)
		}
	})
	return r, err
}

// appendVarintField appends field num with value v, omitting a zero value
// as proto3 does.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendBytesField appends field num holding data, omitting it when empty.
func appendBytesField(b []byte, num protowire.Number, data []byte) []byte {
	if len(data) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// varintFieldSize is the encoded size of appendVarintField's output.
func varintFieldSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

// bytesFieldSize is the encoded size of appendBytesField's output.
func bytesFieldSize(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

// AppendSend appends a Send frame.
func AppendSend(dst []byte, s Send) []byte {
	n := varintFieldSize(fieldSendTo, s.To) + varintFieldSize(fieldSendCMID, s.CMID) +
		bytesFieldSize(fieldSendBody, len(s.Body)) + varintFieldSize(fieldSendType, uint64(s.Type)) +
		varintFieldSize(fieldSendGroup, s.Group) + varintFieldSize(fieldSendCiph, uint64(s.Cipher)) +
		varintFieldSize(fieldSendForwarded, uint64(s.Forwarded)) + varintFieldSize(fieldSendRef, s.Ref)
	dst = AppendHeader(dst, protocol.KindSend, false, n)
	dst = appendVarintField(dst, fieldSendTo, s.To)
	dst = appendVarintField(dst, fieldSendCMID, s.CMID)
	dst = appendBytesField(dst, fieldSendBody, s.Body)
	dst = appendVarintField(dst, fieldSendType, uint64(s.Type))
	dst = appendVarintField(dst, fieldSendGroup, s.Group)
	dst = appendVarintField(dst, fieldSendCiph, uint64(s.Cipher))
	dst = appendVarintField(dst, fieldSendForwarded, uint64(s.Forwarded))
	return appendVarintField(dst, fieldSendRef, s.Ref)
}

// AppendAck appends an Ack frame for seq.
func AppendAck(dst []byte, seq uint64) []byte {
	dst = AppendHeader(dst, protocol.KindAck, false, varintFieldSize(fieldAckSeq, seq))
	return appendVarintField(dst, fieldAckSeq, seq)
}

// AppendSent appends a Sent frame.
func AppendSent(dst []byte, cmid, id uint64) []byte {
	n := varintFieldSize(fieldSentCMID, cmid) + varintFieldSize(fieldSentID, id)
	dst = AppendHeader(dst, protocol.KindSent, false, n)
	dst = appendVarintField(dst, fieldSentCMID, cmid)
	return appendVarintField(dst, fieldSentID, id)
}

// AppendMessageEntry appends the stored form of a Message inbox entry: the
// Message body without its seq. AppendEntry turns it into a frame.
func AppendMessageEntry(dst []byte, m Message) []byte {
	dst = appendVarintField(dst, fieldMessageID, m.ID)
	dst = appendVarintField(dst, fieldMessageFrom, m.From)
	dst = appendBytesField(dst, fieldMessageBody, m.Body)
	dst = appendVarintField(dst, fieldMessageType, uint64(m.Type))
	dst = appendVarintField(dst, fieldMessageFromDevice, uint64(m.FromDevice))
	dst = appendVarintField(dst, fieldMessageGroup, m.Group)
	dst = appendVarintField(dst, fieldMessageGSeq, m.GSeq)
	dst = appendVarintField(dst, fieldMessageTo, m.To)
	dst = appendVarintField(dst, fieldMessageCipher, uint64(m.Cipher))
	dst = appendVarintField(dst, fieldMessageTTL, uint64(m.TTL))
	dst = appendVarintField(dst, fieldMessageForwarded, uint64(m.Forwarded))
	return appendVarintField(dst, fieldMessageRef, m.Ref)
}

// AppendReceiptEntry appends the stored form of a Receipt inbox entry: the
// Receipt body without its seq.
func AppendReceiptEntry(dst []byte, r Receipt) []byte {
	dst = appendVarintField(dst, fieldReceiptPeer, r.Peer)
	dst = appendVarintField(dst, fieldReceiptType, uint64(r.Type))
	dst = appendVarintField(dst, fieldReceiptUpTo, r.UpTo)
	return appendVarintField(dst, fieldReceiptGroup, r.Group)
}

// AppendEntry appends the frame of an inbox entry of kind k (Message or
// Receipt) at position seq whose stored form is stored. The frame's body is
// the seq field followed by stored: protobuf fields may come in any order,
// so the stored bytes are sent as they are, never decoded.
func AppendEntry(dst []byte, k protocol.Kind, seq uint64, stored []byte) []byte {
	dst = AppendHeader(dst, k, false, varintFieldSize(fieldEntrySeq, seq)+len(stored))
	dst = appendVarintField(dst, fieldEntrySeq, seq)
	return append(dst, stored...)
}

// AppendError appends an Error frame.
func AppendError(dst []byte, code protocol.Code, rid uint32, cmid uint64, msg string, retryAfterMS uint32) []byte {
	n := varintFieldSize(fieldErrorCode, uint64(code)) + varintFieldSize(fieldErrorRID, uint64(rid)) +
		varintFieldSize(fieldErrorCMID, cmid) + bytesFieldSize(fieldErrorMessage, len(msg)) +
		varintFieldSize(fieldErrorRetry, uint64(retryAfterMS))
	dst = AppendHeader(dst, protocol.KindError, false, n)
	dst = appendVarintField(dst, fieldErrorCode, uint64(code))
	dst = appendVarintField(dst, fieldErrorRID, uint64(rid))
	dst = appendVarintField(dst, fieldErrorCMID, cmid)
	if len(msg) > 0 {
		dst = protowire.AppendTag(dst, fieldErrorMessage, protowire.BytesType)
		dst = protowire.AppendString(dst, msg)
	}
	return appendVarintField(dst, fieldErrorRetry, uint64(retryAfterMS))
}

// AppendProto appends a frame of kind k whose body is m. It is for the
// frames that are not on the hot path; it allocates only if dst is short.
func AppendProto(dst []byte, k protocol.Kind, m proto.Message) ([]byte, error) {
	opts := proto.MarshalOptions{Deterministic: true}
	n := opts.Size(m)
	dst = AppendHeader(dst, k, false, n)
	dst, err := opts.MarshalAppend(dst, m)
	if err != nil {
		return dst, fmt.Errorf("codec: encode %v: %w", k, err)
	}
	return dst, nil
}

// ParseProto decodes body into m. m must not be used to alias body: the
// generated code copies bytes fields.
func ParseProto(body []byte, m proto.Message) error {
	if err := proto.Unmarshal(body, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// AppendSynced appends a Synced frame.
func AppendSynced(dst []byte, seq uint64) []byte {
	dst = AppendHeader(dst, protocol.KindSynced, false, varintFieldSize(1, seq))
	return appendVarintField(dst, 1, seq)
}

// AppendOK appends an Ok frame answering request rid.
func AppendOK(dst []byte, rid uint32) []byte {
	dst = AppendHeader(dst, protocol.KindOK, false, varintFieldSize(1, uint64(rid)))
	return appendVarintField(dst, 1, uint64(rid))
}
