package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/protocol"
)

// The message index.
//
// The shard that gives a message its id (the recipient's for a 1:1
// message, the group's for a group message) keeps one small record of it
// for the deduplication period, under a key made from the message id:
//
//	slot 'I' day kind owner id → sender, device, cmid, seq, flags
//
// where day is the day of the id's time ([S-2-4]), kind is msgToUser or
// msgToGroup, and owner the recipient or the group. A Revoke finds the
// message from its id alone, with one read: its sender (who alone may
// revoke it) and its place (the recipient's inbox seq, or its gseq). The
// record replaces the dedupe record's expiry index entry of earlier
// versions: it names the dedupe record (sender, device, cmid), so the
// maintenance sweep deletes both when the day is past retention
// (expireMsgIndex), and a send costs no more writes than before.

// Kinds of message index records: the owner is a user or a group (their
// ids are name spaces of their own, [S-2-3]).
const (
	msgToUser  byte = 'u'
	msgToGroup byte = 'g'
)

// Flags of a message index record.
const (
	// msgRevoked: the message was deleted for everyone ([S-18-1]).
	msgRevoked uint64 = 1 << iota
)

// msgRecord is the message index record of one message.
type msgRecord struct {
	From   uint64
	Device uint32
	CMID   uint64
	// Seq is where the message is: the recipient's inbox seq (1:1) or the
	// message's gseq (group); 0 for a 1:1 message that was not stored (the
	// recipient blocks its sender, [S-18-6]).
	Seq   uint64
	Flags uint64
}

func (m *msgRecord) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.uint(m.From)
	w.uint(uint64(m.Device))
	w.uint(m.CMID)
	w.uint(m.Seq)
	w.uint(m.Flags)
	return w.b
}

func (m *msgRecord) decode(b []byte) error {
	r := newRecordReader(b)
	m.From = r.uint()
	m.Device = uint32(r.uint())
	m.CMID = r.uint()
	m.Seq = r.uint()
	m.Flags = r.uint()
	return r.done("message index")
}

// idDay returns the day (since the Unix epoch, UTC) of message id's time.
func idDay(id uint64) uint32 {
	return uint32(protocol.MessageTime(id).Unix() / 86400)
}

// msgIndexKey is the message index key of message id sent to owner, a
// user (msgToUser) or a group (msgToGroup).
func msgIndexKey(dst []byte, kind byte, owner, id uint64) []byte {
	dst = binary.BigEndian.AppendUint32(appendPrefix(dst, SlotOfUser(owner), tagMsgIndex), idDay(id))
	dst = append(dst, kind)
	dst = binary.BigEndian.AppendUint64(dst, owner)
	return binary.BigEndian.AppendUint64(dst, id)
}

// indexMessage writes the message index record of message id.
func (s *Shard) indexMessage(kind byte, owner, id uint64, m msgRecord) {
	s.key, s.rec = msgIndexKey(s.key[:0], kind, owner, id), m.encode(s.rec[:0])
	s.batch.Set(s.key, s.rec, nil)
}

// lookupMessage reads the message index record of message id; found is
// false when the shard knows no such message. An error aborts the cycle.
func (s *Shard) lookupMessage(kind byte, owner, id uint64) (m msgRecord, found bool, err error) {
	v, err := s.get(msgIndexKey(nil, kind, owner, id))
	if err != nil || v == nil {
		return m, false, err
	}
	if err := m.decode(v); err != nil {
		err = fmt.Errorf("storage: message %d of %d: %w", id, owner, err)
		s.abort(err)
		return m, false, err
	}
	return m, true, nil
}

// expireMsgIndex deletes one message index record of a day past retention
// and the dedupe record it names.
func (s *Shard) expireMsgIndex(k, v []byte) {
	s.batch.Delete(k, nil)
	// slot(2) 'I' day(4) kind(1) owner(8) id(8)
	var m msgRecord
	if len(k) != 24 || m.decode(v) != nil {
		return
	}
	owner := binary.BigEndian.Uint64(k[8:])
	switch k[7] {
	case msgToUser:
		s.batch.Delete(dedupeKey(s.scratch[:0], owner, m.From, m.Device, m.CMID), nil)
	case msgToGroup:
		s.batch.Delete(groupDedupeKey(s.scratch[:0], owner, m.From, m.Device, m.CMID), nil)
	}
}

// emit records e for the analytics sink (Config.Events), with the time
// and this shard's number. The cycle's events reach the sink once the
// cycle has committed (emitEvents); an aborted cycle's are dropped.
func (s *Shard) emit(e analytics.Event) {
	if s.cfg.Events == nil {
		return
	}
	e.TimeMS, e.Shard = s.cfg.Now().UnixMilli(), int(s.cfg.ID)
	s.events = append(s.events, e)
}

// emitEvents hands the committed cycle's events to the sink.
func (s *Shard) emitEvents() {
	for i := range s.events {
		s.cfg.Events.Emit(s.events[i])
	}
	s.events = s.events[:0]
}
