package storage

import (
	"encoding/binary"
	"errors"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// effectKind says what an effect does once its batch is durable.
type effectKind uint8

const (
	effPost          effectKind = iota + 1 // Post(frames) to conn
	effReply                               // Reply(frames) to conn
	effFail                                // Fail(code) to conn
	effClose                               // Close(code) to conn
	effAuthenticated                       // Authenticated(session) to conn
	effForward                             // Forwarder.Forward(op)
	effSendCode                            // Codes.SendCode(phone, code, answer.done)
	effLookup                              // LookupPart(lookup, contacts) to conn
	effForwardSend                         // an envelope send to the recipient's shard (shard_envelopes.go)
	effPushDue                             // Pusher.PushDue(*job) (shard_push.go)
	effPushCancel                          // Pusher.PushCancel(job.User, job.Device)
)

// effect is one thing the actor does after a commit. frames is the range
// [start, end) of the shard's out buffer. conn is resolved to its Endpoint
// (Config.Conns) only when the effect is carried out. The kinds that carry
// more than a connection, a code and frames (forwards, logins, lookups,
// codes, pushes) keep it in their cycle's mores, at index more: the
// frequent effects (posts and replies, several per message) stay a few
// words each, so a cycle of thousands copies and clears little.
type effect struct {
	kind       effectKind
	code       protocol.Code
	more       int32 // index in the cycle's mores, for the kinds that carry one
	start, end int
	conn       ConnRef
}

// effectMore is what an effect of a rarer kind carries besides its
// connection and code.
type effectMore struct {
	session  Session
	op       Op
	phone    string
	text     string
	lookup   uint64 // effLookup: the gateway server's number for the lookup
	contacts []*pb.Contact
	answer   *codeAnswer // effSendCode
	job      *PushJob    // effPushDue, effPushCancel
}

// Session describes an authenticated connection to the server, which
// answers Login with it.
type Session struct {
	User   uint64
	Device uint32
	Cursor uint64 // the stream resumes after this seq
	Window uint32 // inbox entries in flight before the device must ack
	// MaxCMID is the highest Send.cmid recorded from the device when its
	// earlier sessions ended ([S-8-19]).
	MaxCMID uint64
}

// post queues frames s.out[start:] for conn.
func (s *Shard) post(conn ConnRef, start int) {
	if start == len(s.out) {
		return
	}
	s.effects = append(s.effects, effect{kind: effPost, conn: conn, start: start, end: len(s.out)})
}

// reply queues frames s.out[start:] as the answer to conn's request.
func (s *Shard) reply(conn ConnRef, start int) {
	s.effects = append(s.effects, effect{kind: effReply, conn: conn, start: start, end: len(s.out)})
}

// effectWith queues an effect of kind k for conn (none for the kinds that
// call no connection) that carries m.
func (s *Shard) effectWith(k effectKind, conn ConnRef, m effectMore) {
	s.mores = append(s.mores, m)
	s.effects = append(s.effects, effect{kind: k, conn: conn, more: int32(len(s.mores) - 1)})
}

// replyError answers conn's request with an Error frame. A retriable
// refusal of the SEND being applied raises its barrier (shard_order.go),
// as replyRetry's does.
func (s *Shard) replyError(conn ConnRef, code protocol.Code, rid uint32, cmid uint64) {
	s.noteSendRefusal(conn, code, cmid, 0)
	start := len(s.out)
	s.out = codec.AppendError(s.out, code, rid, cmid, "", 0)
	s.reply(conn, start)
}

// replyRetry answers conn's request or send with an Error frame carrying a
// delay.
func (s *Shard) replyRetry(conn ConnRef, code protocol.Code, rid uint32, cmid uint64, retryMS uint32) {
	s.noteSendRefusal(conn, code, cmid, retryMS)
	start := len(s.out)
	s.out = codec.AppendError(s.out, code, rid, cmid, "", retryMS)
	s.reply(conn, start)
}

// replyProto answers conn's request with a frame of kind k holding m.
func (s *Shard) replyProto(conn ConnRef, k protocol.Kind, m proto.Message) {
	start := len(s.out)
	out, err := codec.AppendProto(s.out, k, m)
	if err != nil {
		s.log.Error("encode answer", "kind", k, "err", err)
		s.out = s.out[:start]
		s.replyError(conn, protocol.CodeInternal, 0, 0)
		return
	}
	s.out = out
	s.reply(conn, start)
}

// emitLocked carries out effects, whose frames are in out and whose
// other contents are in mores, in order, and clears both (they hold
// pointers). s.emitMu must be held: it keeps the actor's and the syncer's
// emissions in order.
func (s *Shard) emitLocked(effects []effect, mores []effectMore, out []byte) {
	for i := range effects {
		e := &effects[i]
		switch e.kind {
		case effForward:
			s.cfg.Forwarder.Forward(mores[e.more].op)
		case effSendCode:
			m := &mores[e.more]
			s.cfg.Codes.SendCode(m.phone, m.text, m.answer.done)
		case effForwardSend:
			s.forwardSend(mores[e.more].op)
		case effPushDue:
			s.cfg.Pusher.PushDue(*mores[e.more].job)
		case effPushCancel:
			j := mores[e.more].job
			s.cfg.Pusher.PushCancel(j.User, j.Device)
		default:
			// A call to a connection: one that is gone is dropped, as a
			// closed connection drops it.
			if ep := s.cfg.Conns.Endpoint(e.conn); ep != nil {
				callEndpoint(ep, e, mores, out)
			}
		}
	}
	clear(effects) // no connection kept alive by a spare buffer
	clear(mores)
}

// callEndpoint carries out an effect that is a call to a connection.
func callEndpoint(ep Endpoint, e *effect, mores []effectMore, out []byte) {
	switch e.kind {
	case effPost:
		ep.Post(out[e.start:e.end])
	case effReply:
		ep.Reply(out[e.start:e.end])
	case effFail:
		ep.Fail(e.code)
	case effClose:
		ep.Close(e.code)
	case effAuthenticated:
		ep.Authenticated(mores[e.more].session)
	case effLookup:
		m := &mores[e.more]
		ep.LookupPart(m.lookup, m.contacts)
	}
}

// codeAnswer answers a REQUEST_CODE once the CodeSender reports what
// became of the code ([S-9-16]). done may run on any goroutine.
type codeAnswer struct {
	conns   Conns
	conn    ConnRef
	sent    *pb.CodeSent // the answer when the gateway took the code
	retryMS uint32       // CODE_DELIVERY_FAILED's retry_after_ms
	called  atomic.Bool
}

// done replies to the request: CODE_SENT for a nil err, else the error
// code err maps to. Only the first call replies, so a sender that
// reported twice cannot end the request's in-flight count twice.
func (a *codeAnswer) done(err error) {
	if a.called.Swap(true) {
		return
	}
	ep := a.conns.Endpoint(a.conn)
	if ep == nil {
		return // the connection is gone
	}
	rid := a.sent.Rid
	switch {
	case err == nil:
		b, err := appendProtoFrame(nil, protocol.KindCodeSent, a.sent)
		if err != nil {
			ep.Reply(appendErrorFrame(nil, protocol.CodeInternal, rid, 0))
			return
		}
		ep.Reply(b)
	case errors.Is(err, ErrCodeUndeliverable):
		ep.Reply(appendErrorFrame(nil, protocol.CodeCodeUndeliverable, rid, 0))
	default:
		ep.Reply(codec.AppendError(nil, protocol.CodeCodeDeliveryFailed, rid, 0, "", a.retryMS))
	}
}

// appendProtoEntry appends the stored form of an inbox entry holding m:
// its encoding without seq (field 1, which m leaves zero).
func appendProtoEntry(dst []byte, m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(dst, m)
}

// appendProtoFrame and appendErrorFrame encode frames for effects that run
// outside the actor (codeAnswer).
func appendProtoFrame(dst []byte, k protocol.Kind, m proto.Message) ([]byte, error) {
	return codec.AppendProto(dst, k, m)
}

func appendErrorFrame(dst []byte, code protocol.Code, rid uint32, cmid uint64) []byte {
	return codec.AppendError(dst, code, rid, cmid, "", 0)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
