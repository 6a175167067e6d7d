package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// The key directory's requests (spec.md section 17.1). The server checks
// only the shapes of keys (their lengths and type byte); signatures and
// everything else about them are the clients' to check ([S-17-1]).

// keyType is the first byte of a public key: a Curve25519 key.
const keyType = 0x05

// validKey reports whether k is a public key as [S-17-1] says.
func validKey(k []byte) bool { return len(k) == protocol.KeyLen && k[0] == keyType }

// maxRegistrationID is the largest registration id, as Signal's clients
// generate them.
const maxRegistrationID = 16380

// handleKeysPublish stores this device's public keys on its user's shard.
func (c *conn) handleKeysPublish(body []byte, w *buffer) verdict {
	var m pb.KeysPublish
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if !validPublish(&m) {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpKeysPublish, User: c.user, Device: c.device, Keys: &m, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// validPublish checks a KeysPublish's fields ([S-17-2]).
func validPublish(m *pb.KeysPublish) bool {
	if len(m.IdentityKey) == 0 && m.SignedPrekey == nil && len(m.Prekeys) == 0 {
		return false
	}
	if len(m.IdentityKey) > 0 && (!validKey(m.IdentityKey) || m.RegistrationId == 0 || m.RegistrationId > maxRegistrationID) {
		return false
	}
	if sp := m.SignedPrekey; sp != nil && (!validKey(sp.Key) || len(sp.Signature) != protocol.SignatureLen) {
		return false
	}
	if len(m.Prekeys) > protocol.MaxPreKeysPerPublish {
		return false
	}
	ids := make(map[uint32]bool, len(m.Prekeys))
	for _, p := range m.Prekeys {
		if !validKey(p.Key) || ids[p.Id] {
			return false
		}
		ids[p.Id] = true
	}
	return true
}

// handleKeysFetch asks a user's shard for the key bundles of its devices.
func (c *conn) handleKeysFetch(body []byte, w *buffer) verdict {
	var m pb.KeysFetch
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if m.User == 0 || len(m.Devices) > protocol.MaxCompanions+1 {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	if wait := c.srv.keyFetches.take(c.user, 1, c.srv.cfg.Now()); wait > 0 {
		// [S-17-15] a client draining one-time prekeys is an attack.
		return c.rateLimited(w, LimitKeyFetches, m.Rid, 0, wait)
	}
	return c.request(storage.Op{Kind: storage.OpKeysFetch, User: m.User, From: c.user, Devices: m.Devices, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleEnvelopeSend hands a message with per-device envelopes to the
// sender's shard, which checks the sender's devices and passes it to the
// recipient's ([S-17-8], [S-17-9]).
func (c *conn) handleEnvelopeSend(body []byte, w *buffer) verdict {
	var m pb.Send
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	code := checkEnvelopes(&m, c.user)
	if code == 0 && !validContent(m.Type, 1, m.Ref) {
		code = protocol.CodeInvalidArgument // [S-18-12]
	}
	if code != 0 {
		refuse(w, code, 0, m.Cmid)
		return verdict{}
	}
	c.maxCMID = max(c.maxCMID, m.Cmid)
	conv := sendorder.ConversationOf(m.To, 0)
	if c.heldBack(w, conv, m.Cmid) {
		return verdict{} // [S-8-13]
	}
	if wait, limit := c.takeSend(false); wait > 0 {
		c.rateLimited(w, limit, 0, m.Cmid, wait) // [S-8-23]
		return c.holdBack(w, conv, m.Cmid, protocol.CodeRateLimited, limit, wait)
	}
	op := storage.Op{
		Kind: storage.OpSend, From: c.user, FromDevice: c.device, User: m.To, CMID: m.Cmid,
		Type: m.Type, Cipher: m.Cipher, Envelopes: &storage.Envelopes{To: m.Envelopes, Own: m.Own}, Conn: c.ref,
		Forwarded: m.Forwarded, Ref: m.Ref,
	}
	if !c.submit(op) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, 0, m.Cmid, "", retryAfterBusyMS)
		return c.holdBack(w, conv, m.Cmid, protocol.CodeOverloaded, 0, retryAfterBusyMS)
	}
	c.sentVia(m.To)
	return verdict{}
}

// checkEnvelopes returns the code refusing an envelope send's shape, or 0
// ([S-17-8]): a cmid, a recipient and no group, no body, at least one
// envelope for the recipient, none for the sender's own devices when it
// sends to itself, each list naming a device once, each envelope 1 to
// MaxMessageBody bytes.
func checkEnvelopes(m *pb.Send, self uint64) protocol.Code {
	if m.Cmid == 0 || m.To == 0 || m.Group != 0 || len(m.Body) > 0 || len(m.Envelopes) == 0 ||
		(m.To == self && len(m.Own) > 0) {
		return protocol.CodeInvalidArgument
	}
	for _, l := range [][]*pb.Envelope{m.Envelopes, m.Own} {
		if len(l) > protocol.MaxCompanions+1 {
			return protocol.CodeInvalidArgument
		}
		seen := make(map[uint32]bool, len(l))
		for _, e := range l {
			if e.Device == 0 || seen[e.Device] || len(e.Body) == 0 {
				return protocol.CodeInvalidArgument
			}
			seen[e.Device] = true
		}
	}
	for _, l := range [][]*pb.Envelope{m.Envelopes, m.Own} {
		for _, e := range l {
			if len(e.Body) > protocol.MaxMessageBody {
				return protocol.CodeMessageTooLarge
			}
		}
	}
	return 0
}
