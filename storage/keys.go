package storage

import (
	"encoding/binary"
	"hash/fnv"
)

// NumSlots is the fixed number of slots users and phone numbers hash to.
// Slots map to shards and shards to nodes; every key a slot owns starts
// with the slot, so a slot can move between shards without rewriting keys.
// It never changes: user ids encode their slot (SlotOfUser).
const NumSlots = 4096

// slotBits is log2(NumSlots): a user id's slot is its low slotBits bits.
const slotBits = 12

// SlotOfUser returns the slot that owns user id u. A user id's low 12 bits
// are its slot: accounts are created on the slot of their phone number, so
// a user and its phone number always live together.
func SlotOfUser(u uint64) uint16 { return uint16(u & (NumSlots - 1)) }

// SlotOfPhone returns the slot that owns a phone number: FNV-1a of its
// E.164 text, modulo NumSlots.
func SlotOfPhone(phone string) uint16 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(phone))
	return uint16(h.Sum64() & (NumSlots - 1))
}

// Key layout. Slot-owned keys start with the 2-byte big-endian slot and a
// tag byte; shard-owned keys start with 0xffff (no slot has that number).
// Integers are big-endian so keys sort numerically.
//
//	slot 'u' user                        user record
//	slot 'v' user device                 device record
//	slot 'c' user device                 device cursor (highest acked seq)
//	slot 'i' user seq                    inbox entry: kind byte + stored body
//	slot 'd' to from device cmid         send dedupe record: message id
//	slot 'D' group from device cmid      group send dedupe: message id, gseq
//	slot 'e' day <dedupe key after slot> dedupe expiry index: empty (written before the message index took its place; still swept)
//	slot 'G' group                       group record
//	slot 'M' group user                  group member record
//	slot 'l' user group                  a group the user belongs to
//	slot 'N'                             next group counter of the slot
//	slot 'p' phone                       phone number → user id
//	slot 'o' phone                       verification code state
//	slot 'E' day phone                   code state written that day (sweep index): empty
//	slot 'r' user reader group           highest id reader marked read (group 0: 1:1)
//	slot 'x' day user                    expiry index: user's last seq of that day; empty for the user's latest day (indexDay)
//	slot 'k' user device contact         a contact one device of user subscribes to
//	slot 'n'                             next user counter of the slot
//	slot 'K' user device                 a device's public keys (keyRecord)
//	slot 'P' user device prekey          a one-time prekey of a device: its public key
//	slot 'I' day kind owner id           message index: sender, device, cmid, seq (msgindex.go)
//	slot 'L' user blocked                a user the account blocks: when, Unix ms
//	slot 'T' user peer                   the disappearing-message timer of user's conversation with peer: seconds
//	slot 'X' second user seq             expiry index of a disappearing entry: empty (second: Unix seconds)
//	slot 'R' user device                 a device's push registration (shard_push.go)
//	ffff 'V'                             storage format version (formatVersion)
//	ffff 'g'                             last message id issued by the shard
//	ffff 'E'                             placement epoch the shard was last opened under, in a cluster (fence.go)
//	ffff 'O' dest outseq                 outbox: an entry for shard dest, in that pair's order
//	ffff 'S' dest                        last outseq assigned towards shard dest (never reused)
//	ffff 'W' source                      highest outseq applied from shard source (contiguous)
//	ffff 'b' group gseq                  a group message body, once per shard: its entry
//	ffff 'B' group gseq                  inbox references left to that body
//	ffff 'y' day group gseq              body expiry index: empty
//	ffff 'Z' second group gseq           expiry index of a disappearing group message's body: empty
//	ffff 'J' user device                 the push a device is owed: count, pushed, next time (shard_push.go)
const (
	tagUser         = 'u'
	tagDevice       = 'v'
	tagCursor       = 'c'
	tagInbox        = 'i'
	tagDedupe       = 'd'
	tagDedupeExpiry = 'e'
	tagGroupDedupe  = 'D'
	tagGroup        = 'G'
	tagMember       = 'M'
	tagUserGroup    = 'l'
	tagGroupCounter = 'N'
	tagBody         = 'b'
	tagBodyRefs     = 'B'
	tagBodyExpiry   = 'y'
	tagPhone        = 'p'
	tagCode         = 'o'
	tagCodeExpiry   = 'E'
	tagRead         = 'r'
	tagExpiry       = 'x'
	tagCounter      = 'n'
	tagContact      = 'k'
	tagKeys         = 'K'
	tagPreKey       = 'P'
	tagMsgIndex     = 'I'
	tagBlock        = 'L'
	tagTimer        = 'T'
	tagExpiring     = 'X'
	tagBodyExpiring = 'Z'

	tagVersion   = 'V'
	tagLastID    = 'g'
	tagEpoch     = 'E'
	tagOutbox    = 'O'
	tagOutSeq    = 'S'
	tagWatermark = 'W'

	// Format 1 keys, read only to upgrade a format 1 database: one outbox
	// sequence for all destinations (ffff 'q' outseq) and watermarks in it
	// (ffff 'w' source).
	tagOutboxV1    = 'q'
	tagWatermarkV1 = 'w'
)

const shardPrefix = 0xffff

func appendPrefix(dst []byte, slot uint16, tag byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, slot)
	return append(dst, tag)
}

func userKey(dst []byte, u uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagUser), u)
}

func deviceKey(dst []byte, tag byte, u uint64, d uint32) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tag), u)
	return binary.BigEndian.AppendUint32(dst, d)
}

func inboxKey(dst []byte, u, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagInbox), u)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func dedupeKey(dst []byte, to, from uint64, dev uint32, cmid uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(to), tagDedupe), to)
	return appendDedupeTail(dst, from, dev, cmid)
}

// groupDedupeKey is dedupeKey for a group message.
func groupDedupeKey(dst []byte, group, from uint64, dev uint32, cmid uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(group), tagGroupDedupe), group)
	return appendDedupeTail(dst, from, dev, cmid)
}

func appendDedupeTail(dst []byte, from uint64, dev uint32, cmid uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, from)
	dst = binary.BigEndian.AppendUint32(dst, dev)
	return binary.BigEndian.AppendUint64(dst, cmid)
}

func phoneKey(dst []byte, tag byte, phone string) []byte {
	return append(appendPrefix(dst, SlotOfPhone(phone), tag), phone...)
}

// codeExpiryKey indexes the code state of phone under the day it was
// written, so the sweep finds states no longer needed without a scan.
func codeExpiryKey(dst []byte, day uint32, phone string) []byte {
	dst = binary.BigEndian.AppendUint32(appendPrefix(dst, SlotOfPhone(phone), tagCodeExpiry), day)
	return append(dst, phone...)
}

func readKey(dst []byte, u, reader, group uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagRead), u)
	dst = binary.BigEndian.AppendUint64(dst, reader)
	return binary.BigEndian.AppendUint64(dst, group)
}

func expiryKey(dst []byte, day uint32, u uint64) []byte {
	dst = binary.BigEndian.AppendUint32(appendPrefix(dst, SlotOfUser(u), tagExpiry), day)
	return binary.BigEndian.AppendUint64(dst, u)
}

func contactKey(dst []byte, u uint64, device uint32, contact uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagContact), u)
	dst = binary.BigEndian.AppendUint32(dst, device)
	return binary.BigEndian.AppendUint64(dst, contact)
}

func counterKey(dst []byte, slot uint16) []byte { return appendPrefix(dst, slot, tagCounter) }

func shardKey(dst []byte, tag byte) []byte { return appendPrefix(dst, shardPrefix, tag) }

func outboxKey(dst []byte, dest uint16, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint16(shardKey(dst, tagOutbox), dest)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func outSeqKey(dst []byte, dest uint16) []byte {
	return binary.BigEndian.AppendUint16(shardKey(dst, tagOutSeq), dest)
}

func watermarkKey(dst []byte, source uint16) []byte {
	return binary.BigEndian.AppendUint16(shardKey(dst, tagWatermark), source)
}

func groupKey(dst []byte, g uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(g), tagGroup), g)
}

func memberKey(dst []byte, g, u uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(g), tagMember), g)
	return binary.BigEndian.AppendUint64(dst, u)
}

func userGroupKey(dst []byte, u, g uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagUserGroup), u)
	return binary.BigEndian.AppendUint64(dst, g)
}

func bodyKey(dst []byte, tag byte, g, gseq uint64) []byte {
	dst = binary.BigEndian.AppendUint64(shardKey(dst, tag), g)
	return binary.BigEndian.AppendUint64(dst, gseq)
}

func bodyExpiryKey(dst []byte, day uint32, g, gseq uint64) []byte {
	dst = binary.BigEndian.AppendUint32(shardKey(dst, tagBodyExpiry), day)
	dst = binary.BigEndian.AppendUint64(dst, g)
	return binary.BigEndian.AppendUint64(dst, gseq)
}

// preKeyKey is the key of one-time prekey id of device d of user u.
func preKeyKey(dst []byte, u uint64, d, id uint32) []byte {
	return binary.BigEndian.AppendUint32(deviceKey(dst, tagPreKey, u, d), id)
}
