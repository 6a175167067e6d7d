package server

import (
	"errors"
	"unicode/utf8"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// retryAfterBusyMS is the delay suggested with OVERLOADED.
const retryAfterBusyMS = 500

// handleFrames handles the whole frames at the start of b until it runs
// out, the connection pauses, or a frame closes it. It returns how many
// bytes it consumed.
func (c *conn) handleFrames(b []byte, w *buffer) (int, verdict) {
	consumed := 0
	for !c.paused() {
		f, n, _, err := codec.Parse(b[consumed:], protocol.MaxClientFrameBody)
		if err != nil {
			if errors.Is(err, codec.ErrTooLarge) {
				return consumed, c.fail(w, protocol.CodeFrameTooLarge) // [S-3-3]
			}
			return consumed, c.fail(w, protocol.CodeMalformedFrame)
		}
		if n == 0 {
			break // [S-3-2] wait for the rest
		}
		consumed += n
		c.srv.stats.FramesIn.Add(1)
		if v := c.handleFrame(f, w); v.close {
			return consumed, v
		}
	}
	return consumed, verdict{}
}

// fail queues an Error frame with a connection-scope code and decides to
// close.
func (c *conn) fail(w *buffer, code protocol.Code) verdict {
	w.b = codec.AppendError(w.b, code, 0, 0, "", 0)
	return verdict{close: true, code: code}
}

// refuse answers one request or send with a message-scope error.
func refuse(w *buffer, code protocol.Code, rid uint32, cmid uint64) {
	w.b = codec.AppendError(w.b, code, rid, cmid, "", 0)
}

// handleFrame checks a frame against the state machine (spec.md section 6)
// and dispatches it.
func (c *conn) handleFrame(f codec.Frame, w *buffer) verdict {
	if f.Compressed {
		return c.fail(w, protocol.CodeProtocolViolation) // [S-3-6] clients do not compress
	}
	info, known := f.Kind.Info()
	switch {
	case !known && f.Kind < 64:
		refuse(w, protocol.CodeUnknownKind, 0, 0) // [S-6-5] skip it, stay open
		return verdict{}
	case !known || info.Direction != protocol.ClientToServer:
		return c.fail(w, protocol.CodeProtocolViolation)
	}
	switch {
	case c.state == stateOpen && info.States&protocol.StateOpen == 0:
		return c.fail(w, protocol.CodeUnauthenticated)
	case c.state == stateAuthenticated && info.States&protocol.StateAuthenticated == 0:
		refuse(w, protocol.CodeWrongState, 0, 0)
		return verdict{}
	}
	switch f.Kind {
	case protocol.KindPing:
		w.b = codec.AppendFrame(w.b, protocol.KindPong, nil)
		return verdict{}
	case protocol.KindLogin:
		return c.handleLogin(f.Body, w)
	case protocol.KindRequestCode:
		return c.handleRequestCode(f.Body, w)
	case protocol.KindVerify:
		return c.handleVerify(f.Body, w)
	case protocol.KindSend:
		return c.handleSend(f.Body, w)
	case protocol.KindAck:
		return c.handleAck(f.Body, w)
	case protocol.KindRead:
		return c.handleRead(f.Body, w)
	case protocol.KindLookup:
		return c.handleLookup(f.Body, w)
	case protocol.KindMediaUpload:
		return c.handleMediaUpload(f.Body, w)
	case protocol.KindMediaDownload:
		return c.handleMediaDownload(f.Body, w)
	case protocol.KindTyping:
		return c.handleTyping(f.Body, w)
	case protocol.KindPresenceSubscribe:
		return c.handlePresenceSubscribe(f.Body, w)
	case protocol.KindSetPrivacy:
		return c.handleSetPrivacy(f.Body, w)
	case protocol.KindLinkRequest:
		return c.handleLinkRequest(f.Body, w)
	case protocol.KindLinkApprove:
		return c.handleLinkApprove(f.Body, w)
	case protocol.KindDevices:
		return c.handleDevices(f.Body, w)
	case protocol.KindRevokeDevice:
		return c.handleRevokeDevice(f.Body, w)
	case protocol.KindGroupCreate:
		return c.handleGroupCreate(f.Body, w)
	case protocol.KindGroupUpdate:
		return c.handleGroupUpdate(f.Body, w)
	case protocol.KindGroupGet:
		return c.handleGroupGet(f.Body, w)
	case protocol.KindGroupList:
		return c.handleGroupList(f.Body, w)
	case protocol.KindKeysPublish:
		return c.handleKeysPublish(f.Body, w)
	case protocol.KindKeysFetch:
		return c.handleKeysFetch(f.Body, w)
	case protocol.KindPushRegister:
		return c.handlePushRegister(f.Body, w)
	}
	if v, ok := c.handleControl(f.Kind, f.Body, w); ok {
		return v
	}
	return c.fail(w, protocol.CodeProtocolViolation)
}

// submit hands op to its shard as a request in flight. It reports false,
// with the in-flight count restored, when the shard refused it.
func (c *conn) submit(op storage.Op) bool {
	c.pending.Add(1)
	if err := c.srv.cfg.Router.Submit(op); err != nil {
		c.pending.Add(-1)
		return false
	}
	return true
}

// handleLogin starts authenticating the connection; the server reads no
// further frames until the shard answers ([S-6-3]).
func (c *conn) handleLogin(body []byte, w *buffer) verdict {
	var m pb.Login
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if m.Version != protocol.Version {
		return c.fail(w, protocol.CodeUnsupportedVersion) // [S-12-1]
	}
	if m.User == 0 || m.Device == 0 || len(m.Credential) != protocol.CredentialLen {
		return c.fail(w, protocol.CodeAuthFailed)
	}
	c.heartbeatS = c.srv.cfg.heartbeatFor(m.HeartbeatS) // before the shard answers
	c.home.Store(m.User)
	if !c.submit(storage.Op{Kind: storage.OpLogin, User: m.User, Device: m.Device, Credential: m.Credential, Seq: m.Cursor, Conn: c.ref}) {
		// [S-7-3] the frames pipelined behind the Login cannot be served:
		// tell the client when to come back and close.
		c.home.Store(0)
		w.b = c.srv.appendGoAway(w.b, protocol.CodeOverloaded)
		return verdict{close: true, code: protocol.CodeOverloaded}
	}
	c.state, c.user, c.device = stateLoggingIn, m.User, m.Device
	c.compactSent = m.CompactSent
	return verdict{}
}

// handleRequestCode asks the phone's shard for a verification code.
func (c *conn) handleRequestCode(body []byte, w *buffer) verdict {
	var m pb.RequestCode
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if m.Version != protocol.Version {
		return c.fail(w, protocol.CodeUnsupportedVersion)
	}
	if !validPhone(m.Phone) {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	if free := c.srv.cfg.FreeCode; free == nil || !free(m.Phone) {
		if wait, limit := c.srv.codes.take(c, m.Phone, c.srv.cfg.Now()); wait > 0 {
			return c.rateLimited(w, limit, m.Rid, 0, wait) // [S-9-17]
		}
	}
	if !c.submit(storage.Op{Kind: storage.OpRequestCode, Phone: m.Phone, RID: m.Rid, Conn: c.ref}) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, m.Rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}

// handleVerify checks a verification code on the phone's shard.
func (c *conn) handleVerify(body []byte, w *buffer) verdict {
	var m pb.Verify
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if !validPhone(m.Phone) || m.Code == "" || len(m.Code) > 16 ||
		len(m.DeviceName) > protocol.MaxDeviceName || !utf8.ValidString(m.DeviceName) {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	if !c.submit(storage.Op{Kind: storage.OpVerify, Phone: m.Phone, Code: m.Code, Name: m.DeviceName, RID: m.Rid, Conn: c.ref}) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, m.Rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}

// handleSend hands a message to the recipient's shard.
func (c *conn) handleSend(body []byte, w *buffer) verdict {
	m, err := codec.ParseSend(body)
	if err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if m.Envelopes {
		return c.handleEnvelopeSend(body, w)
	}
	switch {
	case m.CMID == 0 || (m.To == 0) == (m.Group == 0) || !validContent(m.Type, len(m.Body), m.Ref):
		refuse(w, protocol.CodeInvalidArgument, 0, m.CMID)
		return verdict{}
	case len(m.Body) > protocol.MaxMessageBody:
		refuse(w, protocol.CodeMessageTooLarge, 0, m.CMID)
		return verdict{}
	}
	c.maxCMID = max(c.maxCMID, m.CMID)
	conv := sendorder.ConversationOf(m.To, m.Group)
	if c.heldBack(w, conv, m.CMID) {
		return verdict{} // [S-8-13]
	}
	if wait, limit := c.takeSend(m.Group != 0); wait > 0 {
		c.rateLimited(w, limit, 0, m.CMID, wait) // [S-8-23]
		return c.holdBack(w, conv, m.CMID, protocol.CodeRateLimited, limit, wait)
	}
	op := storage.Op{
		Kind: storage.OpSend, From: c.user, FromDevice: c.device, User: m.To, Group: m.Group,
		CMID: m.CMID, Type: m.Type, Cipher: m.Cipher, Body: append([]byte(nil), m.Body...), Conn: c.ref,
		Forwarded: m.Forwarded, Ref: m.Ref,
	}
	if !c.submit(op) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, 0, m.CMID, "", retryAfterBusyMS)
		return c.holdBack(w, conv, m.CMID, protocol.CodeOverloaded, 0, retryAfterBusyMS)
	}
	c.sentVia(conv.To)
	return verdict{}
}

// handleAck moves the device's cursor.
func (c *conn) handleAck(body []byte, w *buffer) verdict {
	seq, err := codec.ParseAck(body)
	if err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if seq > 0 {
		_ = c.srv.cfg.Router.Submit(storage.Op{Kind: storage.OpAck, User: c.user, Device: c.device, Seq: seq, Conn: c.ref})
	}
	return verdict{}
}

// handleRead sends a read receipt to the peer's shard.
func (c *conn) handleRead(body []byte, w *buffer) verdict {
	var m pb.Read
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if m.Peer == 0 || m.UpTo == 0 {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	if !c.submit(storage.Op{Kind: storage.OpRead, User: m.Peer, From: c.user, UpTo: m.UpTo, Group: m.Group, RID: m.Rid, Conn: c.ref}) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, m.Rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}

// handleLookup asks the shards of the numbers which are registered.
func (c *conn) handleLookup(body []byte, w *buffer) verdict {
	var m pb.Lookup
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	if len(m.Phones) > protocol.MaxLookupPhones {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	if wait := c.srv.lookups.take(c.user, 1, c.srv.cfg.Now()); wait > 0 {
		return c.rateLimited(w, LimitLookups, m.Rid, 0, wait)
	}
	r := c.srv.cfg.Router
	byShard := make(map[uint16][]string)
	for _, p := range m.Phones {
		if validPhone(p) {
			id := r.ShardOfPhone(p)
			byShard[id] = append(byShard[id], p)
		}
	}
	if len(byShard) == 0 {
		w.b, _ = codec.AppendProto(w.b, protocol.KindLookupResult, &pb.LookupResult{Rid: m.Rid})
		return verdict{}
	}
	// Each shard answers its part to the connection; the last part replies.
	id := c.startLookup(m.Rid, len(byShard))
	c.pending.Add(1)
	for _, phones := range byShard {
		if err := r.Submit(storage.Op{Kind: storage.OpLookup, Phones: phones, Seq: id, Conn: c.ref}); err != nil {
			c.LookupPart(id, nil) // answer with what the other shards find
		}
	}
	return verdict{}
}

// validPhone reports whether p is an E.164 number: "+", then 8 to 15
// digits, the first not 0 ([S-2-6]).
func validPhone(p string) bool {
	if len(p) < 9 || len(p) > 16 || p[0] != '+' || p[1] == '0' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}
