package storage

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// codeDigits is the length of a verification code.
const codeDigits = 6

// applyRequestCode issues a verification code for a phone number, within
// the per-phone rate limits ([S-9-2]).
func (s *Shard) applyRequestCode(op *Op) {
	if !s.roomFor(op) {
		return
	}
	now := s.cfg.Now()
	nowMS := uint64(now.UnixMilli())
	ck := phoneKey(nil, tagCode, op.Phone)
	var rec codeRecord
	if err := s.getRecord(ck, rec.decode); err != nil {
		s.log.Error("request code: load", "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	hourAgo := nowMS - uint64(time.Hour.Milliseconds())
	recent := rec.SentMS[:0]
	for _, t := range rec.SentMS {
		if t > hourAgo {
			recent = append(recent, t)
		}
	}
	rec.SentMS = recent
	if next := s.nextCodeMS(&rec); next > nowMS {
		s.replyRetry(op.Conn, protocol.CodeRateLimited, op.RID, 0, uint32(next-nowMS))
		return
	}
	code := s.newCode()
	test := s.cfg.TestPrefix != "" && strings.HasPrefix(op.Phone, s.cfg.TestPrefix)
	if test {
		code = s.cfg.TestCode
	}
	rec.CodeHash = s.codeHash(op.Phone, code)
	rec.ExpiresMS = nowMS + uint64(s.cfg.CodeTTL.Milliseconds())
	rec.Attempts = 0
	rec.SentMS = append(rec.SentMS, nowMS)
	s.setCodeRecord(op.Phone, ck, &rec)
	s.flow.codes.Add(1)
	sent := &pb.CodeSent{
		Rid:         op.RID,
		CodeLength:  codeDigits,
		ExpiresInS:  uint32(s.cfg.CodeTTL / time.Second),
		RetryAfterS: uint32(s.cfg.CodeInterval / time.Second),
	}
	if test {
		s.replyProto(op.Conn, protocol.KindCodeSent, sent)
		return
	}
	// [S-9-16] The answer waits for the gateway: the sender calls back.
	answer := &codeAnswer{conns: s.cfg.Conns, conn: op.Conn, sent: sent, retryMS: uint32(s.nextCodeMS(&rec) - nowMS)}
	s.effectWith(effSendCode, ConnRef{}, effectMore{phone: op.Phone, text: code, answer: answer})
}

// nextCodeMS returns when a phone with code state rec (its sends of the
// past hour) may be sent its next code ([S-9-2]), in Unix milliseconds; 0
// when it may now.
func (s *Shard) nextCodeMS(rec *codeRecord) uint64 {
	n := len(rec.SentMS)
	if n == 0 {
		return 0
	}
	next := rec.SentMS[n-1] + uint64(s.cfg.CodeInterval.Milliseconds())
	if n >= s.cfg.CodesPerHour {
		next = max(next, rec.SentMS[0]+uint64(time.Hour.Milliseconds()))
	}
	return next
}

// setCodeRecord writes the code state of phone (under key ck) and indexes
// it under today, for the sweep (expireCode).
func (s *Shard) setCodeRecord(phone string, ck []byte, rec *codeRecord) {
	s.batch.Set(ck, rec.encode(nil), nil)
	s.batch.Set(codeExpiryKey(nil, s.day(), phone), nil, nil)
}

// expireCode takes one key of the code sweep index and deletes the code
// state it names once nothing needs it: its code expired and its last
// send is over an hour old (the per-phone rate limits look back one
// hour). The index key goes either way: a later write added its own.
func (s *Shard) expireCode(k, _ []byte) {
	s.batch.Delete(k, nil)
	if len(k) < 8 {
		return
	}
	phone := string(k[7:])
	ck := phoneKey(nil, tagCode, phone)
	var rec codeRecord
	if err := s.getRecord(ck, rec.decode); err != nil {
		if s.cycleErr == nil {
			s.batch.Delete(ck, nil) // undecodable: nothing to keep
		}
		return
	}
	nowMS := uint64(s.cfg.Now().UnixMilli())
	last := uint64(0)
	if n := len(rec.SentMS); n > 0 {
		last = rec.SentMS[n-1]
	}
	if nowMS >= rec.ExpiresMS && nowMS-last >= uint64(time.Hour.Milliseconds()) {
		s.batch.Delete(ck, nil)
		s.codesSwept.Add(1)
	}
}

// newCode returns a uniformly random decimal code.
func (s *Shard) newCode() string {
	var b [8]byte
	const space = 1_000_000 // 10^codeDigits
	for {
		s.cfg.Rand(b[:])
		v := binary.BigEndian.Uint64(b[:])
		if v < (1<<64-1)/space*space { // reject the biased tail
			return fmt.Sprintf("%0*d", codeDigits, v%space)
		}
	}
}

// codeHash binds a code to its phone number under the shard's code key:
// a copy of the database alone does not give away live codes, whose space
// (10^6) a plain hash would not protect.
func (s *Shard) codeHash(phone, code string) []byte {
	m := hmac.New(sha256.New, s.cfg.CodeKey)
	m.Write([]byte(phone))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

// applyVerify checks a verification code and registers a device,
// creating the account on the number's first verification ([S-9-4]).
func (s *Shard) applyVerify(op *Op) {
	if !s.roomFor(op) {
		return
	}
	nowMS := uint64(s.cfg.Now().UnixMilli())
	ck := phoneKey(nil, tagCode, op.Phone)
	var rec codeRecord
	if err := s.getRecord(ck, rec.decode); err != nil {
		s.log.Error("verify: load code", "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	if len(rec.CodeHash) == 0 || nowMS >= rec.ExpiresMS {
		s.replyError(op.Conn, protocol.CodeCodeExpired, op.RID, 0)
		return
	}
	if !hmac.Equal(s.codeHash(op.Phone, op.Code), rec.CodeHash) {
		rec.Attempts++
		code := protocol.CodeCodeInvalid
		if int(rec.Attempts) >= s.cfg.CodeAttempts {
			rec.CodeHash = nil // [S-9-5] the code is spent
			code = protocol.CodeTooManyAttempts
		}
		s.setCodeRecord(op.Phone, ck, &rec)
		s.replyError(op.Conn, code, op.RID, 0)
		return
	}
	rec.CodeHash = nil
	s.setCodeRecord(op.Phone, ck, &rec)

	u, err := s.accountOf(op.Phone, nowMS)
	if err != nil {
		s.log.Error("verify: account", "err", err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	// Re-registration revokes the old devices; the new one starts where the
	// oldest of them stopped, so waiting messages reach the new install.
	cursor := u.rec.Head
	for _, d := range u.devices {
		if !d.rec.Revoked {
			cursor = min(cursor, d.cursor)
			s.revoke(u, d)
		}
	}
	d, credential := s.addDevice(u, op.Name, cursor, true, nowMS)
	s.emit(analytics.Event{Type: analytics.TypeRegistered, User: u.id, Device: d.id})
	s.flow.registrations.Add(1)
	s.replyProto(op.Conn, protocol.KindRegistered, &pb.Registered{
		Rid: op.RID, User: u.id, Device: d.id, Credential: credential,
	})
}

// accountOf returns the account of phone, creating it if there is none.
func (s *Shard) accountOf(phone string, nowMS uint64) (*user, error) {
	pk := phoneKey(nil, tagPhone, phone)
	v, err := s.get(pk)
	if err != nil {
		return nil, err
	}
	if len(v) == 8 {
		id := binary.BigEndian.Uint64(v)
		u, err := s.loadUser(id)
		if err != nil {
			return nil, err
		}
		if u == nil {
			return nil, fmt.Errorf("storage: phone maps to missing user %d", id)
		}
		return u, nil
	}
	slot := SlotOfPhone(phone)
	nk := counterKey(nil, slot)
	var n uint64
	if c, err := s.get(nk); err != nil {
		return nil, err
	} else if len(c) == 8 {
		n = binary.BigEndian.Uint64(c)
	}
	n++
	s.batch.Set(nk, be64(n), nil)
	id := n<<slotBits | uint64(slot)
	u := &user{id: id, rec: userRecord{Phone: phone, CreatedMS: nowMS, NextDevice: 1}, groups: 0}
	s.users[id] = u
	s.batch.Set(pk, be64(id), nil)
	s.markDirty(u)
	return u, nil
}

// applyLookup finds the registered numbers among op.Phones.
func (s *Shard) applyLookup(op *Op) {
	var found []*pb.Contact
	for _, phone := range op.Phones {
		v, err := s.get(phoneKey(s.scratch[:0], tagPhone, phone))
		if err != nil {
			s.log.Error("lookup", "err", err)
			continue
		}
		if len(v) == 8 {
			found = append(found, &pb.Contact{Phone: phone, User: binary.BigEndian.Uint64(v)})
		}
	}
	s.effectWith(effLookup, op.Conn, effectMore{lookup: op.Seq, contacts: found})
}

// getRecord reads key and decodes it with decode; a missing key leaves
// the record zero.
func (s *Shard) getRecord(key []byte, decode func([]byte) error) error {
	v, err := s.get(key)
	if err != nil || v == nil {
		return err
	}
	return decode(v)
}
