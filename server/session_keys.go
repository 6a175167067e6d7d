package server

import (
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
	return c.request(storage.Op{Kind: storage.OpKeysPublish, User: c.user, Device: c.device, Keys: &m, RID: m.Rid, EP: c}, m.Rid, w)
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
	return c.request(storage.Op{Kind: storage.OpKeysFetch, User: m.User, From: c.user, Devices: m.Devices, RID: m.Rid, EP: c}, m.Rid, w)
}
