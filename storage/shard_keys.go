package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// The key directory (spec.md section 17.1). A device's public keys live
// on its user's shard, like everything else of the user, so the actor is
// the only writer of them: two fetches of the same device's bundle are
// applied one after the other, and each takes (deletes) a different
// one-time prekey in the batch the next one reads through. A fetch makes
// its cycle a promise, so its answer goes out only once the deletion is
// durable: a crash cannot hand the same prekey out again.

// maxNoticeContacts bounds the users one KEYS_CHANGED notice goes to.
const maxNoticeContacts = 4096

// kindToMembers wraps a KEYS_CHANGED entry on its way to the shards of the
// groups of the user it names: kindToMembers, that user (8 bytes), the
// entry. A delivery with it names groups, not users; each group's shard
// hands the entry to the group's other members ([S-17-5]). It is never
// stored in an inbox.
const kindToMembers = 0xf1

// maxPreKeyTakers bounds the (requester, device) pairs a shard counts
// one-time prekeys for in a day; when full, the counts start over.
const maxPreKeyTakers = 1 << 16

// preKeyTaker names a user taking one-time prekeys of one device.
type preKeyTaker struct {
	from, user uint64
	device     uint32
}

// preKeyTakes counts the one-time prekeys each user took of each device
// on day ([S-17-4]). Actor-owned, in memory only: a limit, not a quota.
type preKeyTakes struct {
	day uint32
	n   map[preKeyTaker]*int
}

// preKeysTaken returns the count of one-time prekeys user from took of
// device d of user u today, to read and to increment.
func (s *Shard) preKeysTaken(from, u uint64, d uint32) *int {
	t := &s.preKeyTakes
	if day := s.day(); t.n == nil || t.day != day || len(t.n) >= maxPreKeyTakers {
		t.day, t.n = day, make(map[preKeyTaker]*int)
	}
	k := preKeyTaker{from, u, d}
	n := t.n[k]
	if n == nil {
		n = new(int)
		t.n[k] = n
	}
	return n
}

// loadKeyed reads, once per user in memory, which of u's active devices
// have published keys.
func (s *Shard) loadKeyed(u *user) error {
	if u.keysKnown {
		return nil
	}
	for _, d := range u.devices {
		if d.rec.Revoked {
			continue
		}
		v, err := s.get(deviceKey(s.scratch[:0], tagKeys, u.id, d.id))
		if err != nil {
			return err
		}
		d.hasKeys = v != nil
	}
	u.keysKnown = true
	return nil
}

// keyedDevices returns the ids of u's active devices that published keys,
// in increasing order: the devices a message to u is encrypted for.
func (s *Shard) keyedDevices(u *user) ([]uint32, error) {
	if err := s.loadKeyed(u); err != nil {
		return nil, err
	}
	var ids []uint32
	for _, d := range u.devices {
		if !d.rec.Revoked && d.hasKeys {
			ids = append(ids, d.id)
		}
	}
	return ids, nil
}

// loadKeys reads device d's key record; have is false when it published
// none.
func (s *Shard) loadKeys(u *user, d uint32) (rec keyRecord, have bool, err error) {
	v, err := s.get(deviceKey(s.scratch[:0], tagKeys, u.id, d))
	if err != nil || v == nil {
		return rec, false, err
	}
	if err := rec.decode(v); err != nil {
		return rec, false, fmt.Errorf("storage: keys of %d/%d: %w", u.id, d, err)
	}
	return rec, true, nil
}

// applyKeysPublish stores the keys a device publishes ([S-17-2]): its
// identity key once, a signed prekey that replaces the previous one, and
// one-time prekeys added to those it has.
func (s *Shard) applyKeysPublish(op *Op) {
	if !s.roomFor(op) {
		return
	}
	u, d, ok := s.requester(op)
	if !ok {
		return
	}
	if err := s.loadKeyed(u); err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	rec, have, err := s.loadKeys(u, d.id)
	if err != nil {
		s.log.Error("keys publish", "user", u.id, "device", d.id, "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	k := op.Keys
	switch {
	case !have && (len(k.IdentityKey) == 0 || k.SignedPrekey == nil):
		s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0)
		return
	case have && len(k.IdentityKey) > 0 && (!bytes.Equal(k.IdentityKey, rec.Identity) || k.RegistrationId != rec.RegistrationID):
		// [S-17-3] an identity key changes only with a new device.
		s.replyError(op.Conn, protocol.CodeIdentityKeyChanged, op.RID, 0)
		return
	}
	added := uint32(0)
	for _, p := range k.Prekeys {
		v, err := s.get(preKeyKey(s.scratch[:0], u.id, d.id, p.Id))
		if err != nil {
			s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
			return
		}
		if v == nil {
			added++
		}
	}
	if rec.PreKeys+added > protocol.MaxPreKeys {
		s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0)
		return
	}
	if !have {
		rec.Identity, rec.RegistrationID = k.IdentityKey, k.RegistrationId
	}
	if sp := k.SignedPrekey; sp != nil {
		rec.SignedID, rec.Signed, rec.Signature = sp.Id, sp.Key, sp.Signature
	}
	for _, p := range k.Prekeys {
		s.batch.Set(preKeyKey(nil, u.id, d.id, p.Id), p.Key, nil)
	}
	rec.PreKeys += added
	if rec.PreKeys > protocol.PreKeysLow {
		rec.LowSent = false
	}
	s.batch.Set(deviceKey(nil, tagKeys, u.id, d.id), rec.encode(nil), nil)
	if !have {
		// [S-17-5] a new device's keys: its user's contacts are told.
		d.hasKeys = true
		u.keysChanged = true
		s.touch(u)
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// applyKeysFetch answers the key bundles of a user's devices, each with
// a one-time prekey that no other fetch gets ([S-17-4]).
func (s *Shard) applyKeysFetch(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	if u == nil {
		s.replyError(op.Conn, protocol.CodeNotFound, op.RID, 0)
		return
	}
	devices, err := s.keyedDevices(u)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	res := &pb.KeyBundles{Rid: op.RID, User: u.id}
	for _, id := range devices {
		if len(op.Devices) > 0 && !slices.Contains(op.Devices, id) {
			continue
		}
		b, err := s.takeBundle(u, id, s.preKeysTaken(op.From, u.id, id))
		if err != nil {
			s.log.Error("keys fetch", "user", u.id, "device", id, "err", err)
			s.abort(err)
			s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
			return
		}
		res.Bundles = append(res.Bundles, b)
	}
	s.replyProto(op.Conn, protocol.KindKeyBundles, res)
}

// takeBundle returns device d's bundle with its first one-time prekey,
// which it deletes, and appends PREKEYS_LOW when the device runs low.
// taken counts the prekeys of d the requester took today: at
// PreKeysPerRequester, the bundle comes without one.
func (s *Shard) takeBundle(u *user, d uint32, taken *int) (*pb.KeyBundle, error) {
	rec, have, err := s.loadKeys(u, d)
	if err != nil {
		return nil, err
	}
	if !have {
		return nil, fmt.Errorf("storage: keys of %d/%d: missing", u.id, d)
	}
	b := &pb.KeyBundle{
		Device: d, RegistrationId: rec.RegistrationID, IdentityKey: rec.Identity,
		SignedPrekey: &pb.SignedPreKey{Id: rec.SignedID, Key: rec.Signed, Signature: rec.Signature},
	}
	if *taken >= s.cfg.PreKeysPerRequester {
		return b, nil // the requester took its share of this device's today
	}
	lo := deviceKey(nil, tagPreKey, u.id, d)
	it, err := s.batch.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	var key []byte
	if it.First() {
		k := it.Key()
		b.Prekey = &pb.PreKey{Id: binary.BigEndian.Uint32(k[len(k)-4:]), Key: bytes.Clone(it.Value())}
		key = bytes.Clone(k)
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	if key == nil {
		return b, nil
	}
	s.batch.Delete(key, nil)
	*taken++
	if rec.PreKeys > 0 {
		rec.PreKeys--
	}
	if rec.PreKeys <= protocol.PreKeysLow && !rec.LowSent {
		// [S-17-6] the device is told once, until it publishes more.
		rec.LowSent = true
		entry, err := appendProtoEntry([]byte{byte(protocol.KindPreKeysLow)}, &pb.PreKeysLow{Device: d, Count: rec.PreKeys})
		if err != nil {
			return nil, err
		}
		s.appendLocal(u, entry)
	}
	s.batch.Set(deviceKey(nil, tagKeys, u.id, d), rec.encode(nil), nil)
	return b, nil
}

// dropKeys deletes the keys of device d, which is being revoked
// ([S-17-7]), and marks its user's contacts to be told.
func (s *Shard) dropKeys(u *user, d *device) {
	k := deviceKey(nil, tagKeys, u.id, d.id)
	v, err := s.get(k)
	if err != nil || v == nil {
		return
	}
	s.batch.Delete(k, nil)
	lo := deviceKey(nil, tagPreKey, u.id, d.id)
	s.batch.DeleteRange(lo, prefixEnd(lo), nil)
	d.hasKeys = false
	u.keysChanged = true
	s.touch(u)
}

// flushKeyNotices appends, for every user whose devices with keys changed
// in this cycle, one KEYS_CHANGED entry to the inbox of each of its
// contacts and to its own for its other devices ([S-17-5]).
func (s *Shard) flushKeyNotices() {
	for i := 0; i < len(s.touched); i++ {
		u := s.touched[i]
		if !u.keysChanged {
			continue
		}
		u.keysChanged = false
		devices, err := s.keyedDevices(u)
		if err != nil {
			return
		}
		entry, err := appendProtoEntry([]byte{byte(protocol.KindKeysChanged)}, &pb.KeysChanged{User: u.id, Devices: devices})
		if err != nil {
			s.abort(fmt.Errorf("storage: keys changed entry: %w", err))
			return
		}
		s.appendEntry(u.id, entry, FlagCompanions)
		contacts, err := s.contactsOf(u)
		if err != nil {
			s.abort(err)
			return
		}
		for _, c := range contacts {
			s.appendEntry(c, entry, 0)
		}
		groups, err := s.groupsOf(u)
		if err != nil {
			s.abort(err)
			return
		}
		if len(groups) > 0 {
			// [S-17-5] the co-members of its groups, through the groups'
			// shards, which know the members.
			wrapped := binary.BigEndian.AppendUint64([]byte{kindToMembers}, u.id)
			s.deliver(delivery{users: groups, entry: append(wrapped, entry...)})
		}
	}
}

// groupsOf returns the groups u belongs to, in increasing order, as this
// cycle leaves them.
func (s *Shard) groupsOf(u *user) ([]uint64, error) {
	lo := userGroupKey(nil, u.id, 0)
	lo = lo[:len(lo)-8] // slot, tag, user
	it, err := s.batch.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("storage: groups of %d: %w", u.id, err)
	}
	var out []uint64
	for ok := it.First(); ok && len(out) < protocol.MaxGroupsPerUser; ok = it.Next() {
		k := it.Key()
		out = append(out, binary.BigEndian.Uint64(k[len(k)-8:]))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("storage: groups of %d: %w", u.id, err)
	}
	return out, nil
}

// applyToMembers applies a kindToMembers delivery on the shard of its
// groups: the wrapped entry goes to every member of those groups but the
// user it is about, once per member however many of the groups it shares
// with that user. A group the user is no longer in is skipped. It reports
// false when the cycle is aborted or the delivery is corrupt.
func (s *Shard) applyToMembers(d *delivery) bool {
	if len(d.entry) < 10 {
		s.log.Error("member notice cannot be decoded", "len", len(d.entry))
		return false
	}
	about, entry := binary.BigEndian.Uint64(d.entry[1:]), d.entry[9:]
	seen := map[uint64]bool{about: true}
	var members []uint64
	for _, id := range d.users {
		g, err := s.loadGroup(id)
		if err != nil {
			return false // loadGroup aborted the cycle
		}
		if g == nil || g.member(about) == nil {
			continue
		}
		for _, m := range g.users() {
			if !seen[m] {
				seen[m] = true
				members = append(members, m)
			}
		}
	}
	slices.Sort(members)
	for len(members) > 0 {
		// A delivery names at most MaxGroupMembers users.
		n := min(len(members), protocol.MaxGroupMembers)
		s.deliver(delivery{users: members[:n], entry: entry})
		members = members[n:]
	}
	return true
}

// contactsOf returns the users in the contact lists of every device u
// ever had, revoked ones included (the people who knew its previous
// installation are those who must learn that its keys changed), at most
// maxNoticeContacts, in increasing order.
func (s *Shard) contactsOf(u *user) ([]uint64, error) {
	lo := contactKey(nil, u.id, 0, 0)
	lo = lo[:len(lo)-12] // slot, tag, user
	it, err := s.batch.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("storage: contacts of %d: %w", u.id, err)
	}
	seen := map[uint64]bool{}
	var out []uint64
	for ok := it.First(); ok && len(out) < maxNoticeContacts; ok = it.Next() {
		k := it.Key()
		c := binary.BigEndian.Uint64(k[len(k)-8:])
		if c != u.id && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("storage: contacts of %d: %w", u.id, err)
	}
	slices.Sort(out)
	return out, nil
}
