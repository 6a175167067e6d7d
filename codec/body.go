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
	fieldSendTo   = 1
	fieldSendCMID = 2
	fieldSendBody = 3
	fieldSendType = 4

	fieldAckSeq = 1

	fieldSentCMID = 1
	fieldSentID   = 2

	fieldEntrySeq = 1 // Message.seq and Receipt.seq

	fieldMessageID         = 2
	fieldMessageFrom       = 3
	fieldMessageBody       = 4
	fieldMessageType       = 5
	fieldMessageFromDevice = 6

	fieldReceiptPeer = 2
	fieldReceiptType = 3
	fieldReceiptUpTo = 4

	fieldErrorCode    = 1
	fieldErrorRID     = 2
	fieldErrorCMID    = 3
	fieldErrorMessage = 4
	fieldErrorRetry   = 5
)

// Send is a decoded Send body. Body aliases the frame.
type Send struct {
	To   uint64
	CMID uint64
	Body []byte
	Type pb.ContentType
}

// Message is a decoded Message body. Body aliases the frame.
type Message struct {
	Seq        uint64
	ID         uint64
	From       uint64
	Body       []byte
	Type       pb.ContentType
	FromDevice uint32
}

// Receipt is a decoded Receipt body.
type Receipt struct {
	Seq  uint64
	Peer uint64
	Type pb.ReceiptType
	UpTo uint64
}

// field is one decoded protobuf field: a varint (v) or a length-delimited
// field (data, aliasing the message).
type field struct {
	num  protowire.Number
	typ  protowire.Type
	v    uint64
	data []byte
}

// varint returns the field's value, or an error if it is not a varint.
func (f field) varint() (uint64, error) {
	if f.typ != protowire.VarintType {
		return 0, fmt.Errorf("%w: field %d has the wrong wire type", ErrMalformed, f.num)
	}
	return f.v, nil
}

// bytes returns the field's data, or an error if it is not length-delimited.
func (f field) bytes() ([]byte, error) {
	if f.typ != protowire.BytesType {
		return nil, fmt.Errorf("%w: field %d has the wrong wire type", ErrMalformed, f.num)
	}
	return f.data, nil
}

// walk calls fn for every varint and length-delimited field of the protobuf
// message in b. Fields of other wire types are skipped, and fn ignores
// field numbers it does not know, as proto3 requires.
func walk(b []byte, fn func(f field) error) error {
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
			if err := fn(field{num: num, typ: typ, v: v}); err != nil {
				return err
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
			if err := fn(field{num: num, typ: typ, data: v}); err != nil {
				return err
			}
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
	err := walk(b, func(f field) (err error) {
		switch f.num {
		case fieldSendTo:
			s.To, err = f.varint()
		case fieldSendCMID:
			s.CMID, err = f.varint()
		case fieldSendBody:
			s.Body, err = f.bytes()
		case fieldSendType:
			var v uint64
			v, err = f.varint()
			s.Type = pb.ContentType(int32(v))
		}
		return err
	})
	return s, err
}

// ParseAck decodes an Ack body and returns its seq.
func ParseAck(b []byte) (uint64, error) {
	var seq uint64
	err := walk(b, func(f field) (err error) {
		if f.num == fieldAckSeq {
			seq, err = f.varint()
		}
		return err
	})
	return seq, err
}

// ParseMessage decodes a Message body.
func ParseMessage(b []byte) (Message, error) {
	var m Message
	err := walk(b, func(f field) (err error) {
		var v uint64
		switch f.num {
		case fieldEntrySeq:
			m.Seq, err = f.varint()
		case fieldMessageID:
			m.ID, err = f.varint()
		case fieldMessageFrom:
			m.From, err = f.varint()
		case fieldMessageBody:
			m.Body, err = f.bytes()
		case fieldMessageType:
			v, err = f.varint()
			m.Type = pb.ContentType(int32(v))
		case fieldMessageFromDevice:
			v, err = f.varint()
			m.FromDevice = uint32(v)
		}
		return err
	})
	return m, err
}

// ParseReceipt decodes a Receipt body.
func ParseReceipt(b []byte) (Receipt, error) {
	var r Receipt
	err := walk(b, func(f field) (err error) {
		switch f.num {
		case fieldEntrySeq:
			r.Seq, err = f.varint()
		case fieldReceiptPeer:
			r.Peer, err = f.varint()
		case fieldReceiptType:
			var v uint64
			v, err = f.varint()
			r.Type = pb.ReceiptType(int32(v))
		case fieldReceiptUpTo:
			r.UpTo, err = f.varint()
		}
		return err
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
		bytesFieldSize(fieldSendBody, len(s.Body)) + varintFieldSize(fieldSendType, uint64(s.Type))
	dst = AppendHeader(dst, protocol.KindSend, false, n)
	dst = appendVarintField(dst, fieldSendTo, s.To)
	dst = appendVarintField(dst, fieldSendCMID, s.CMID)
	dst = appendBytesField(dst, fieldSendBody, s.Body)
	return appendVarintField(dst, fieldSendType, uint64(s.Type))
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
	return appendVarintField(dst, fieldMessageFromDevice, uint64(m.FromDevice))
}

// AppendReceiptEntry appends the stored form of a Receipt inbox entry: the
// Receipt body without its seq.
func AppendReceiptEntry(dst []byte, r Receipt) []byte {
	dst = appendVarintField(dst, fieldReceiptPeer, r.Peer)
	dst = appendVarintField(dst, fieldReceiptType, uint64(r.Type))
	return appendVarintField(dst, fieldReceiptUpTo, r.UpTo)
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
