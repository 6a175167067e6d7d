package storage

import (
	"crypto/sha256"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// linkTTL is how long a link code works.
const linkTTL = 2 * time.Minute

// pendingLink is a companion device waiting for its link code to be
// approved. Pending links live in memory only: a restart ends them and the
// companion asks again.
type pendingLink struct {
	conn    ConnRef
	rid     uint32
	name    string
	expires time.Time
}

// addDevice registers a new device of u and returns it with its
// credential, which is stored only as a hash.
func (s *Shard) addDevice(u *user, name string, cursor uint64, primary bool, nowMS uint64) (*device, []byte) {
	credential := make([]byte, protocol.CredentialLen)
	s.cfg.Rand(credential)
	hash := sha256.Sum256(credential)
	d := &device{
		id:     u.rec.NextDevice,
		rec:    deviceRecord{CredHash: hash[:], Name: name, CreatedMS: nowMS, Primary: primary},
		cursor: cursor,
	}
	u.rec.NextDevice++
	u.devices = append(u.devices, d)
	s.batch.Set(deviceKey(nil, tagDevice, u.id, d.id), d.rec.encode(nil), nil)
	s.setCursor(u, d)
	s.markDirty(u)
	return d, credential
}

// applyLinkRequest holds a companion's link code until the primary
// approves it ([S-9-12]).
func (s *Shard) applyLinkRequest(op *Op) {
	if !s.roomFor(op) {
		return
	}
	now := s.cfg.Now()
	s.expireLinks(now)
	if _, taken := s.links[op.Code]; taken {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0) // 80 random bits collided
		return
	}
	if len(s.linkOrder) >= s.cfg.MaxPendingLinks {
		// [S-9-12] bounded: the oldest frees its place when it expires.
		s.linkRefusals.Add(1)
		wait := s.linkOrder[0].expires.Sub(now)
		s.replyRetry(op.Conn, protocol.CodeRateLimited, op.RID, 0, uint32(max(wait, time.Second)/time.Millisecond))
		return
	}
	expires := now.Add(linkTTL)
	s.links[op.Code] = &pendingLink{conn: op.Conn, rid: op.RID, name: op.Name, expires: expires}
	s.linkOrder = append(s.linkOrder, linkExpiry{op.Code, expires})
	s.replyProto(op.Conn, protocol.KindLinkCode, &pb.LinkCode{Rid: op.RID, Code: op.Code, ExpiresInS: uint32(linkTTL / time.Second)})
}

// applyLinkApprove hands an approved link to the approver's shard, which
// creates the companion device.
func (s *Shard) applyLinkApprove(op *Op) {
	if !s.roomFor(op) {
		return
	}
	l := s.links[op.Code]
	if l == nil || s.cfg.Now().After(l.expires) {
		delete(s.links, op.Code)
		s.replyError(op.Conn, protocol.CodeLinkExpired, op.RID, 0)
		return
	}
	delete(s.links, op.Code)
	s.effectWith(effForward, ConnRef{}, effectMore{op: Op{
		Kind: OpLinkDevice, User: op.User, Device: op.Device, Name: l.name,
		RID: op.RID, Conn: op.Conn, Companion: l.conn, CompanionRID: l.rid,
	}})
}

// applyLinkDevice creates a companion device for the primary's account and
// tells both sides.
func (s *Shard) applyLinkDevice(op *Op) {
	u, d, ok := s.requester(op)
	if !ok {
		return
	}
	if !d.rec.Primary {
		s.replyError(op.Conn, protocol.CodeNotPrimary, op.RID, 0)
		return
	}
	companions := 0
	for _, o := range u.devices {
		if !o.rec.Revoked && !o.rec.Primary {
			companions++
		}
	}
	if companions >= protocol.MaxCompanions {
		s.replyError(op.Conn, protocol.CodeTooManyDevices, op.RID, 0)
		return
	}
	// [S-9-13] a companion starts from the moment it is linked.
	nd, credential := s.addDevice(u, op.Name, u.rec.Head, false, uint64(s.cfg.Now().UnixMilli()))
	start := len(s.out)
	out, err := codec.AppendProto(s.out, protocol.KindLinked, &pb.Linked{
		Rid: op.CompanionRID, User: u.id, Device: nd.id, Credential: credential,
	})
	if err == nil {
		s.out = out
		s.post(op.Companion, start)
	}
	start = len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// applyDevices lists the account's active devices.
func (s *Shard) applyDevices(op *Op) {
	u, _, ok := s.requester(op)
	if !ok {
		return
	}
	list := &pb.DeviceList{Rid: op.RID}
	for _, d := range u.devices {
		if !d.rec.Revoked {
			list.Devices = append(list.Devices, &pb.Device{
				Id: d.id, Name: d.rec.Name, CreatedMs: d.rec.CreatedMS, Primary: d.rec.Primary, Online: d.sess != nil,
			})
		}
	}
	s.replyProto(op.Conn, protocol.KindDeviceList, list)
}

// applyRevokeDevice revokes a device: the primary may revoke any
// companion, any device itself ([S-9-14]). The device is disconnected at
// once and its credential stops working.
func (s *Shard) applyRevokeDevice(op *Op) {
	u, d, ok := s.requester(op)
	if !ok {
		return
	}
	target := u.device(op.Target)
	switch {
	case target == nil || target.rec.Revoked:
		s.replyError(op.Conn, protocol.CodeNotFound, op.RID, 0)
		return
	case target.rec.Primary:
		s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0) // re-register to replace the primary
		return
	case target != d && !d.rec.Primary:
		s.replyError(op.Conn, protocol.CodeNotPrimary, op.RID, 0)
		return
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
	s.revoke(u, target)
	s.deleteAcknowledged(u)
}

// revoke marks d revoked, deletes its keys and closes its session.
func (s *Shard) revoke(u *user, d *device) {
	d.rec.Revoked = true
	s.batch.Set(deviceKey(nil, tagDevice, u.id, d.id), d.rec.encode(nil), nil)
	s.dropKeys(u, d)
	s.dropPush(u, d) // [S-19-2]
	if d.sess != nil {
		s.effects = append(s.effects, effect{kind: effClose, conn: d.sess.conn, code: protocol.CodeDeviceRevoked})
		s.endSession(u, d)
	}
}

// requester returns the user and device that sent op, answering the
// request itself when they are gone.
func (s *Shard) requester(op *Op) (*user, *device, bool) {
	u, err := s.loadUser(op.User)
	if err != nil {
		s.log.Error("load user", "user", op.User, "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return nil, nil, false
	}
	var d *device
	if u != nil {
		d = u.device(op.Device)
	}
	if d == nil || d.rec.Revoked {
		s.replyError(op.Conn, protocol.CodeNotFound, op.RID, 0)
		return nil, nil, false
	}
	return u, d, true
}

// linkExpiry is a link code in the order codes expire, which is the order
// they were issued (they all live linkTTL).
type linkExpiry struct {
	code    string
	expires time.Time
}

// expireLinks forgets link codes past their time, oldest first: the cost
// is the codes that expire, never a scan of those that wait.
func (s *Shard) expireLinks(now time.Time) {
	n := 0
	for n < len(s.linkOrder) && now.After(s.linkOrder[n].expires) {
		e := s.linkOrder[n]
		if l := s.links[e.code]; l != nil && l.expires.Equal(e.expires) {
			delete(s.links, e.code)
		}
		n++
	}
	if n > 0 {
		s.linkOrder = append(s.linkOrder[:0], s.linkOrder[n:]...)
	}
}
