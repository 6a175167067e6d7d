package storage

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// apply runs one op against the current batch.
func (s *Shard) apply(op *Op) {
	if !op.Kind.cheap() {
		s.promise()
	}
	switch op.Kind {
	case OpSend:
		s.applySendInOrder(op)
	case OpAck:
		s.applyAck(op)
	case OpRead:
		s.applyRead(op)
	case OpLogin:
		s.applyLogin(op)
	case OpLogout:
		s.applyLogout(op)
	case OpConnGone:
		s.applyConnGone(op)
	case OpRequestCode:
		s.applyRequestCode(op)
	case OpVerify:
		s.applyVerify(op)
	case OpLookup:
		s.applyLookup(op)
	case OpForward:
		s.applyForward(op)
	case OpForwardDone:
		s.applyForwardDone(op)
	case OpLinkRequest:
		s.applyLinkRequest(op)
	case OpLinkApprove:
		s.applyLinkApprove(op)
	case OpLinkDevice:
		s.applyLinkDevice(op)
	case OpDevices:
		s.applyDevices(op)
	case OpRevokeDevice:
		s.applyRevokeDevice(op)
	case OpSubscribe:
		s.applySubscribe(op)
	case OpWatch:
		s.applyWatch(op)
	case OpUnwatch:
		s.applyUnwatch(op)
	case OpSetPrivacy:
		s.applySetPrivacy(op)
	case OpTyping:
		s.applyTyping(op)
	case OpGroupCreate:
		s.applyGroupCreate(op)
	case OpGroupUpdate:
		s.applyGroupUpdate(op)
	case OpGroupGet:
		s.applyGroupGet(op)
	case OpGroupList:
		s.applyGroupList(op)
	case OpGroupJoin:
		s.applyGroupJoin(op)
	case OpGroupJoined:
		s.applyGroupJoined(op)
	case OpKeysPublish:
		s.applyKeysPublish(op)
	case OpKeysFetch:
		s.applyKeysFetch(op)
	case OpRevoke:
		s.applyRevoke(op)
	case OpBlock, OpUnblock:
		s.applyBlock(op)
	case OpBlockList:
		s.applyBlockList(op)
	case OpSetTimer:
		s.applySetTimer(op)
	case OpPushRegister:
		s.applyPushRegister(op)
	case OpPushDone:
		s.applyPushDone(op)
	default:
		s.log.Error("unknown op", "kind", op.Kind)
	}
}

// applySend appends a message to the recipient's inbox, once per
// (sender device, cmid, recipient), and a copy to the sender's own inbox
// for its other devices, and answers Sent.
func (s *Shard) applySend(op *Op) {
	if op.Group != 0 {
		s.applyGroupSend(op)
		return
	}
	if op.Envelopes != nil {
		s.applyEnvelopeSend(op)
		return
	}
	u, err := s.loadUser(op.User)
	if err != nil {
		s.log.Error("send: load recipient", "user", op.User, "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	}
	if u == nil {
		s.replyError(op.Conn, protocol.CodeNotFound, 0, op.CMID)
		return
	}
	s.sendKey = dedupeKey(s.sendKey[:0], op.User, op.From, op.FromDevice, op.CMID)
	dk := s.sendKey
	prev, err := s.dedupeLookup(u, op, dk)
	if err != nil {
		s.abort(err)
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	}
	sum := bodySum(op)
	if prev != nil {
		s.answerRepeat(op, prev, sum)
		return
	}
	if s.heldBack(op) || !s.roomFor(op) {
		return
	}
	// [S-18-6] a send from a user the recipient blocks is answered as any
	// other and stored nowhere in the recipient's inbox.
	blocked := s.blocks(u, op.From)
	if !blocked && s.inboxFull(u, len(op.Body)) {
		s.quotaRefusals.Add(1)
		s.replyRetry(op.Conn, protocol.CodeInboxFull, 0, op.CMID, retryFullMS)
		return
	}
	id := s.ids.next(s.cfg.Now())
	ttl := s.timerWith(u, op.From) // [S-18-10]
	var seq uint64                 // 0: not stored (msgRecord.Seq)
	if !blocked {
		s.scratch = append(s.scratch[:0], byte(protocol.KindMessage))
		s.scratch = codec.AppendMessageEntry(s.scratch, codec.Message{
			ID: id, From: op.From, Body: op.Body, Type: op.Type, FromDevice: op.FromDevice, Cipher: op.Cipher, TTL: ttl,
			Forwarded: op.Forwarded, Ref: op.Ref,
		})
		s.appendLocal(u, s.scratch)
		seq = u.rec.Head
		s.indexExpiring(u, seq, id, ttl)
	}
	if op.From != op.User {
		// [S-8-17] the sender's other devices get a copy, in their order.
		s.entry = codec.AppendMessageEntry(append(s.entry[:0], byte(protocol.KindMessage)), codec.Message{
			ID: id, From: op.From, Body: op.Body, Type: op.Type, FromDevice: op.FromDevice, To: op.User, Cipher: op.Cipher, TTL: ttl,
			Forwarded: op.Forwarded, Ref: op.Ref,
		})
		s.appendCopy(op.From, s.entry, id, ttl)
	}
	s.batch.Set(dk, binary.BigEndian.AppendUint64(be64(id), sum), nil)
	s.indexMessage(msgToUser, op.User, id, msgRecord{From: op.From, Device: op.FromDevice, CMID: op.CMID, Seq: seq})
	s.emit(analytics.Event{Type: analytics.TypeMessageAccepted, User: op.From, Device: op.FromDevice, Peer: op.User, ID: id, Size: int64(len(op.Body))})
	start := len(s.out)
	s.out = codec.AppendSent(s.out, op.CMID, id)
	s.reply(op.Conn, start)
}

// answerRepeat answers a 1:1 send whose dedupe record prev exists: a
// retry with the stored message's id ([S-8-14]), another message under a
// used cmid with CMID_REUSED ([S-8-20]). sum is the send's bodySum.
func (s *Shard) answerRepeat(op *Op, prev []byte, sum uint64) {
	s.repeated(op)
	if len(prev) < 8 || (len(prev) >= 16 && binary.BigEndian.Uint64(prev[8:]) != sum) {
		s.replyError(op.Conn, protocol.CodeCMIDReused, 0, op.CMID)
		return
	}
	start := len(s.out)
	s.out = codec.AppendSent(s.out, op.CMID, binary.BigEndian.Uint64(prev))
	s.reply(op.Conn, start)
}

// repeated lowers the barrier of op's conversation when op, answered as a
// repeat of a stored message, is the refused SEND the barrier waits for
// ([S-8-13]). The send steps answer a repeat before they look at
// barriers, and a closed fence refuses a SEND without knowing it stored
// it before: without this, that barrier would hold the conversation's
// later SENDs back until sendorder.TTL, the client retrying them in vain.
func (s *Shard) repeated(op *Op) { s.holdBarrier(op) }

// bodySum is what a dedupe record keeps of a send's content, to tell a
// retry from another message under the same cmid: xxHash64 of the content
// type, the cipher (when set) and the body, or the envelopes.
func bodySum(op *Op) uint64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write([]byte{byte(op.Type)})
	if op.Cipher != 0 {
		_, _ = d.Write([]byte{0xff, byte(op.Cipher)})
	}
	_, _ = d.Write(op.Body)
	if op.Envelopes != nil {
		op.Envelopes.hash(&d)
	}
	if op.Ref != 0 || op.Forwarded != 0 {
		_, _ = d.Write(binary.AppendUvarint(binary.AppendUvarint([]byte{0xfd}, op.Ref), uint64(op.Forwarded)))
	}
	return d.Sum64()
}

// retryFullMS is the delay suggested with STORAGE_FULL and INBOX_FULL.
const retryFullMS = 30_000

// roomFor answers op STORAGE_FULL and reports false when the node is short
// of disk space (SetFull): then the shard stores nothing new, while
// acknowledgements, deletions and deliveries go on.
func (s *Shard) roomFor(op *Op) bool {
	if !s.full.Load() {
		return true
	}
	s.fullRefusals.Add(1)
	s.replyRetry(op.Conn, protocol.CodeStorageFull, op.RID, op.CMID, retryFullMS)
	return false
}

// senderDevice names one sending device.
type senderDevice struct {
	user   uint64
	device uint32
}

// dedupeLookup returns the dedupe record of op (nil if op is new). Clients
// number their sends with a counter ([S-8-11]), so a cmid above the
// highest this recipient has from that device is new without a lookup;
// the highest is found once per device with one seek.
func (s *Shard) dedupeLookup(u *user, op *Op, dk []byte) ([]byte, error) {
	sd := senderDevice{op.From, op.FromDevice}
	top, ok := u.topCMID[sd]
	if !ok {
		prefix := dk[:len(dk)-8]
		it, err := s.batch.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return nil, err
		}
		if it.Last() {
			k := it.Key()
			top = binary.BigEndian.Uint64(k[len(k)-8:])
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
		if u.topCMID == nil {
			u.topCMID = make(map[senderDevice]uint64)
		}
	}
	u.topCMID[sd] = max(top, op.CMID)
	if op.CMID > top {
		return nil, nil
	}
	return s.get(dk)
}

// applyRead records that op.From read op.User's messages up to op.UpTo and
// sends op.User a read receipt.
func (s *Shard) applyRead(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil {
		s.log.Error("read: load user", "user", op.User, "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	if u == nil {
		s.replyError(op.Conn, protocol.CodeNotFound, op.RID, 0)
		return
	}
	rk := readKey(nil, op.User, op.From, op.Group)
	prev, err := s.get(rk)
	if err != nil {
		s.log.Error("read: watermark", "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	if len(prev) != 8 || binary.BigEndian.Uint64(prev) < op.UpTo {
		s.emit(analytics.Event{Type: analytics.TypeMessageRead, User: op.From, Peer: op.User, Group: op.Group, ID: op.UpTo})
		s.batch.Set(rk, be64(op.UpTo), nil)
		s.scratch = append(s.scratch[:0], byte(protocol.KindReceipt))
		s.scratch = codec.AppendReceiptEntry(s.scratch, codec.Receipt{Peer: op.From, Type: pb.ReceiptType_RECEIPT_READ, UpTo: op.UpTo, Group: op.Group})
		s.appendLocal(u, s.scratch)
		// [S-10-6] the reader's other devices learn what was read.
		mine := append([]byte{byte(protocol.KindReceipt)}, codec.AppendReceiptEntry(nil, codec.Receipt{
			Peer: op.User, Type: pb.ReceiptType_RECEIPT_SELF_READ, UpTo: op.UpTo, Group: op.Group,
		})...)
		s.appendEntry(op.From, mine, FlagCompanions)
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// receiptKey groups the receipts of one cycle that coalesce into one
// Receipts entry: for one user, in one group, of one type.
type receiptKey struct {
	user, group uint64
	typ         pb.ReceiptType
}

// appendLocal appends entry to the inbox of u, a user of this shard. A
// receipt on a group message is held until the end of the cycle and
// coalesced with the others for the same group ([S-16-8]).
func (s *Shard) appendLocal(u *user, entry []byte) {
	if len(entry) > 0 && protocol.Kind(entry[0]) == protocol.KindReceipt {
		if r, err := codec.ParseReceipt(entry[1:]); err == nil && r.Group != 0 {
			k := receiptKey{u.id, r.Group, r.Type}
			s.noteReceipt(k, r.Peer, r.UpTo)
			s.touch(u)
			return
		}
	}
	s.appendRaw(u, entry, nil)
}

// receiptBatches are the group receipts of one cycle, coalesced by key.
// Its memory is kept from cycle to cycle, items included, so coalescing
// allocates only when a cycle holds more receipts than any before it.
type receiptBatches struct {
	index   map[receiptKey]int // key → its batch in batches
	batches []receiptBatch     // the cycle's, in the order their keys came; beyond len, spares
	msg     pb.Receipts        // the entry being encoded (flushReceipts)
}

// receiptBatch is the Receipts entry being coalesced under key: items[:n]
// are this cycle's; the rest of items are spares for later cycles.
type receiptBatch struct {
	key   receiptKey
	n     int
	items []*pb.ReceiptItem
}

// reset forgets the cycle's receipts, keeping their memory.
func (r *receiptBatches) reset() {
	if r.index == nil {
		r.index = make(map[receiptKey]int)
	}
	clear(r.index)
	r.batches = r.batches[:0]
}

// noteReceipt adds a receipt from peer up to upTo to the Receipts entry
// being coalesced under k: one item per peer, with its highest upTo
// ([S-16-8]).
func (s *Shard) noteReceipt(k receiptKey, peer, upTo uint64) {
	r := &s.receipts
	i, ok := r.index[k]
	if !ok {
		i = len(r.batches)
		r.index[k] = i
		r.batches = slices.Grow(r.batches, 1)[:i+1] // a spare batch's items are kept
		r.batches[i].key, r.batches[i].n = k, 0
	}
	b := &r.batches[i]
	for _, it := range b.items[:b.n] {
		if it.Peer == peer {
			it.UpTo = max(it.UpTo, upTo)
			return
		}
	}
	if b.n == len(b.items) {
		b.items = append(b.items, &pb.ReceiptItem{})
	}
	b.items[b.n].Peer, b.items[b.n].UpTo = peer, upTo
	b.n++
}

// flushReceipts appends one Receipts entry per coalesced key, in key order:
// here for this shard's users, through the outbox for others.
func (s *Shard) flushReceipts() {
	r := &s.receipts
	if len(r.batches) == 0 {
		return
	}
	slices.SortFunc(r.batches, func(a, b receiptBatch) int {
		return cmp.Or(cmp.Compare(a.key.user, b.key.user), cmp.Compare(a.key.group, b.key.group), cmp.Compare(a.key.typ, b.key.typ))
	})
	defer r.reset()
	for i := range r.batches {
		b := &r.batches[i]
		k := b.key
		r.msg.Group, r.msg.Type, r.msg.Items = k.group, k.typ, b.items[:b.n]
		entry, err := appendProtoEntry(append(s.entry[:0], byte(protocol.KindReceipts)), &r.msg)
		r.msg.Items = nil
		if err != nil {
			s.abort(fmt.Errorf("storage: receipts entry: %w", err))
			return
		}
		s.entry = entry
		if u := s.users[k.user]; u != nil && s.cfg.Forwarder.ShardOf(k.user) == s.cfg.ID {
			s.appendRaw(u, entry, nil)
		} else {
			s.appendEntry(k.user, entry, 0) // another shard's user, or not loaded
		}
	}
}

// appendRaw appends entry to u's inbox as it is. ref is the body a group
// reference points to, nil for other entries.
func (s *Shard) appendRaw(u *user, entry, ref []byte) {
	if !u.appended {
		u.appended, u.headBefore = true, u.rec.Head
	}
	u.rec.Head++
	s.promiseEntry(entry) // a device will acknowledge this seq
	s.batch.Set(inboxKey(nil, u.id, u.rec.Head), entry, nil)
	u.inboxBytes += int64(len(entry))
	if u.live > 0 {
		if ref == nil {
			// entry may alias scratch space: the pump needs its own copy.
			n := len(s.arena)
			s.arena = append(s.arena, entry...)
			entry = s.arena[n:len(s.arena):len(s.arena)]
		}
		u.recent.add(metaOf(u.rec.Head, entry, ref))
	}
	s.notePush(u, entry, ref)
	s.entries.Add(1)
	s.flow.noteAppended(entry)
	s.touch(u) // Head is not rewritten: loadUser finds it from the last entry
}
