package storage

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Push notifications (spec.md section 19).
//
// A device's push registration lives on its user's shard (slot 'R' user
// device). When the actor appends a waking entry ([S-19-3]) to a user's
// inbox, every device of the user with a registration and no live session
// is owed a push: its push-due record (ffff 'J' user device) counts the
// entry, in the same batch as the entry, so the decision is as durable as
// the entry itself. Once the cycle is durable, the record goes to the
// Pusher (an effect), whose own goroutines send it; the Pusher reports
// back with OpPushDone, which advances the record (Pushed, NextMS) or, for
// a token the provider refused, deletes the registration. The record stays
// while the device is offline, so that its count keeps growing for the
// next push; a login deletes it. At Open the records still owing a push
// are handed to the Pusher again: a push the provider took just before a
// crash, before OpPushDone was committed, is sent once more ([S-19-6]).
//
// OpPushDone writes nothing a client can see, so it is cheap: lost in a
// crash, a push is repeated, which the spec allows once.

// Push key tags (keys.go lists the layout).
const (
	tagPushReg = 'R' // slot 'R' user device: the device's push registration (pushReg)
	tagPushDue = 'J' // ffff 'J' user device: what the device is owed (pushDue)
)

// Op kinds of push notifications. Their values are apart from op.go's
// sequence so that either list can grow on its own.
const (
	// OpPushRegister: User, Device, Push (Provider, Token, ShowSender),
	// RID, EP. Sets or, with an empty Token, removes the device's push
	// registration; answers Ok ([S-19-1]).
	OpPushRegister OpKind = 200 + iota
	// OpPushDone: User, Device, Push (Token, Sent, NextMS, Outcome). The
	// Pusher reports what became of a PushJob. Internal.
	OpPushDone
)

// PushOp is the push part of an Op.
type PushOp struct {
	// OpPushRegister, and Token for OpPushDone (the token pushed to).
	Provider   pb.PushProvider
	Token      string
	ShowSender bool
	// OpPushDone.
	Sent    uint64      // the PushJob.Count that was pushed
	NextMS  uint64      // Unix ms before which the device gets no other push
	Outcome PushOutcome // what the provider said
}

// PushOutcome is what became of a PushJob.
type PushOutcome uint8

// Push outcomes.
const (
	// PushSent: the provider took the push.
	PushSent PushOutcome = iota + 1
	// PushFailed: every attempt failed; the device is still owed the push,
	// which the shard hands over again for NextMS.
	PushFailed
	// PushTokenInvalid: the provider said the token is no longer valid;
	// the shard deletes the registration if it still holds that token.
	PushTokenInvalid
)

// Pusher sends push notifications; package push implements it. The shard
// calls PushDue and PushCancel among a cycle's effects (from its actor or
// its syncer), so they must not block nor call into the shard. Offers is
// called from the actor.
type Pusher interface {
	// Offers reports whether the node can push through p.
	Offers(p pb.PushProvider) bool
	// PushDue hands over a push the device is owed, to be sent at
	// j.NotBefore at the earliest; a later PushDue for the same device
	// replaces an earlier one not yet sent. The Pusher answers with an
	// OpPushDone.
	PushDue(j PushJob)
	// PushCancel withdraws what the device was owed: it connected, was
	// revoked, or removed its registration.
	PushCancel(user uint64, device uint32)
}

// PushJob is one push a device is owed ([S-19-5]).
type PushJob struct {
	User       uint64
	Device     uint32
	Provider   pb.PushProvider
	Token      string
	ShowSender bool
	// Count is how many waking entries were stored for the device since
	// its last session ended.
	Count uint64
	// Sender and Group are the sender and the group (0: a 1:1 message) of
	// the latest of them; zero unless ShowSender.
	Sender, Group uint64
	// NotBefore is when the push may be sent: the end of the device's
	// interval after its last push; zero means at once.
	NotBefore time.Time
}

// PushStats are a shard's push counters since Open.
type PushStats struct {
	// Coalesced counts waking entries counted into a push the device was
	// already owed, rather than deciding a push of their own.
	Coalesced uint64
	// TokensRemoved counts registrations deleted because the provider
	// reported their token invalid.
	TokensRemoved uint64
}

// PushStats returns the shard's push counters. It may be called from any
// goroutine.
func (s *Shard) PushStats() PushStats {
	return PushStats{Coalesced: s.push.coalesced.Load(), TokensRemoved: s.push.tokensRemoved.Load()}
}

// pushState is the shard's push bookkeeping. Actor-owned but for the
// counters.
type pushState struct {
	dirty         []pushKey // due records changed in this cycle, to write and hand over
	coalesced     atomic.Uint64
	tokensRemoved atomic.Uint64
}

// pushKey names one device of a loaded user.
type pushKey struct {
	u      *user
	device uint32
}

// userPush is what the shard knows of a user's push registrations and
// push-due records, read on first use. Actor-owned.
type userPush struct {
	regs map[uint32]*pushReg // by device
	due  map[uint32]*pushDue // by device
}

// pushReg is a device's push registration ([S-19-1]).
type pushReg struct {
	Provider   pb.PushProvider
	Token      string
	ShowSender bool
}

func (r *pushReg) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.uint(uint64(r.Provider))
	w.string(r.Token)
	w.bool(r.ShowSender)
	return w.b
}

func (r *pushReg) decode(b []byte) error {
	rd := newRecordReader(b)
	r.Provider = pb.PushProvider(rd.uint())
	r.Token = rd.string()
	r.ShowSender = rd.bool()
	return rd.done("push registration")
}

// pushDue is what an offline device with a registration is owed.
type pushDue struct {
	Count  uint64 // waking entries since the device's last session ended
	Pushed uint64 // Count as of the last push the provider took
	NextMS uint64 // Unix ms before which no other push goes out
	Sender uint64 // of the latest waking entry, when the device allows it
	Group  uint64
	dirty  bool // in pushState.dirty
}

func (d *pushDue) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.uint(d.Count)
	w.uint(d.Pushed)
	w.uint(d.NextMS)
	w.uint(d.Sender)
	w.uint(d.Group)
	return w.b
}

func (d *pushDue) decode(b []byte) error {
	r := newRecordReader(b)
	d.Count = r.uint()
	d.Pushed = r.uint()
	d.NextMS = r.uint()
	d.Sender = r.uint()
	d.Group = r.uint()
	return r.done("push due")
}

func pushRegKey(dst []byte, u uint64, d uint32) []byte { return deviceKey(dst, tagPushReg, u, d) }

func pushDueKey(dst []byte, u uint64, d uint32) []byte {
	dst = binary.BigEndian.AppendUint64(shardKey(dst, tagPushDue), u)
	return binary.BigEndian.AppendUint32(dst, d)
}

// loadPush returns u's push state, reading it on first use. An error
// aborts the cycle.
func (s *Shard) loadPush(u *user) (*userPush, error) {
	if u.push != nil {
		return u.push, nil
	}
	p := &userPush{regs: map[uint32]*pushReg{}, due: map[uint32]*pushDue{}}
	regs := pushRegKey(nil, u.id, 0)
	if err := s.scan(regs[:len(regs)-4], func(k, v []byte) error {
		r := &pushReg{}
		if err := r.decode(v); err != nil {
			return err
		}
		p.regs[binary.BigEndian.Uint32(k[len(k)-4:])] = r
		return nil
	}); err != nil {
		err = fmt.Errorf("storage: push registrations of %d: %w", u.id, err)
		s.abort(err)
		return nil, err
	}
	if len(p.regs) > 0 {
		dues := pushDueKey(nil, u.id, 0)
		if err := s.scan(dues[:len(dues)-4], func(k, v []byte) error {
			d := &pushDue{}
			if err := d.decode(v); err != nil {
				return err
			}
			p.due[binary.BigEndian.Uint32(k[len(k)-4:])] = d
			return nil
		}); err != nil {
			err = fmt.Errorf("storage: push records of %d: %w", u.id, err)
			s.abort(err)
			return nil, err
		}
	}
	u.push = p
	return p, nil
}

// notePush counts the entry just appended to u's inbox (entry; ref is the
// body a group reference points to) for each device of u that is owed a
// push for it ([S-19-3], [S-19-4]).
func (s *Shard) notePush(u *user, entry, ref []byte) {
	if s.cfg.Pusher == nil || len(entry) == 0 {
		return
	}
	offline := false
	for _, d := range u.devices {
		if d.sess == nil && !d.rec.Revoked {
			offline = true
			break
		}
	}
	if !offline {
		return
	}
	p, err := s.loadPush(u)
	if err != nil || len(p.regs) == 0 {
		return
	}
	from, group, ok := wakingSender(entry, ref)
	if !ok || from == u.id {
		return // not waking, or the user's own message: a copy ([S-8-17])
	}
	for _, d := range u.devices {
		reg := p.regs[d.id]
		if reg == nil || d.sess != nil || d.rec.Revoked {
			continue
		}
		due := p.due[d.id]
		if due == nil {
			due = &pushDue{}
			p.due[d.id] = due
		}
		if due.Count > due.Pushed {
			s.push.coalesced.Add(1)
		}
		due.Count++
		if reg.ShowSender {
			due.Sender, due.Group = from, group
		}
		if !due.dirty {
			due.dirty = true
			s.push.dirty = append(s.push.dirty, pushKey{u, d.id})
		}
	}
}

// wakingSender returns the sender and the group of a waking entry
// ([S-19-3]), and false for an entry that wakes nothing.
func wakingSender(entry, ref []byte) (from, group uint64, ok bool) {
	var fields []byte
	switch {
	case entry[0] == kindGroupRef:
		if len(ref) == 0 || protocol.Kind(ref[0]) != protocol.KindMessage {
			return 0, 0, false
		}
		fields = ref[1:]
	case entry[0] == kindEnvelopes:
		f, ok := envelopeFields(entry)
		if !ok {
			return 0, 0, false
		}
		fields = f
	case protocol.Kind(entry[0]) == protocol.KindMessage:
		fields = entry[1:]
	default:
		return 0, 0, false
	}
	m, err := codec.ParseMessage(fields)
	if err != nil || m.Type == pb.ContentType_CONTENT_REACTION || m.Type == pb.ContentType_CONTENT_EDIT {
		return 0, 0, false
	}
	return m.From, m.Group, true
}

// flushPush writes the due records changed in this cycle and hands each
// to the Pusher once the cycle is durable. finishCycle calls it before the
// commit.
func (s *Shard) flushPush() {
	dirty := s.push.dirty
	s.push.dirty = s.push.dirty[:0]
	if s.cycleErr != nil {
		return // nothing of the cycle commits; memory is reloaded
	}
	for _, k := range dirty {
		p := k.u.push
		due := p.due[k.device]
		if due == nil || !due.dirty {
			continue // the device came online or was removed in this cycle
		}
		due.dirty = false
		s.batch.Set(pushDueKey(nil, k.u.id, k.device), due.encode(nil), nil)
		if reg := p.regs[k.device]; reg != nil && due.Count > due.Pushed {
			s.pushEffect(k.u.id, k.device, reg, due)
		}
	}
	clear(dirty)
}

// pushEffect hands the push device is owed to the Pusher after the cycle.
func (s *Shard) pushEffect(user uint64, device uint32, reg *pushReg, due *pushDue) {
	j := &PushJob{
		User: user, Device: device, Provider: reg.Provider, Token: reg.Token, ShowSender: reg.ShowSender,
		Count: due.Count,
	}
	if reg.ShowSender {
		j.Sender, j.Group = due.Sender, due.Group
	}
	if due.NextMS > 0 {
		j.NotBefore = time.UnixMilli(int64(due.NextMS))
	}
	s.effectWith(effPushDue, ConnRef{}, effectMore{job: j})
}

// dropPushDue deletes what device d of u is owed and withdraws it from the
// Pusher.
func (s *Shard) dropPushDue(u *user, p *userPush, d uint32) {
	if due := p.due[d]; due != nil {
		due.dirty = false
		delete(p.due, d)
		s.batch.Delete(pushDueKey(nil, u.id, d), nil)
		s.effectWith(effPushCancel, ConnRef{}, effectMore{job: &PushJob{User: u.id, Device: d}})
	}
}

// pushOnline ends what device d is owed now that it has a live session
// ([S-19-4]): its count starts again.
func (s *Shard) pushOnline(u *user, d *device) {
	if s.cfg.Pusher == nil {
		return
	}
	if p, err := s.loadPush(u); err == nil {
		s.dropPushDue(u, p, d.id)
	}
}

// dropPush deletes device d's registration and what it is owed: it was
// revoked ([S-19-2]).
func (s *Shard) dropPush(u *user, d *device) {
	p, err := s.loadPush(u)
	if err != nil {
		return
	}
	s.dropPushDue(u, p, d.id)
	if p.regs[d.id] != nil {
		delete(p.regs, d.id)
		s.batch.Delete(pushRegKey(nil, u.id, d.id), nil)
	}
}

// applyPushRegister sets or removes the requesting device's registration
// ([S-19-1]). The server has checked the token's form.
func (s *Shard) applyPushRegister(op *Op) {
	u, d, ok := s.requester(op)
	if !ok {
		return
	}
	reg := op.Push
	if reg == nil {
		s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0)
		return
	}
	if reg.Token != "" && (s.cfg.Pusher == nil || !s.cfg.Pusher.Offers(reg.Provider)) {
		s.replyError(op.Conn, protocol.CodePushUnavailable, op.RID, 0)
		return
	}
	if reg.Token != "" && !s.roomFor(op) {
		return
	}
	p, err := s.loadPush(u)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	if reg.Token == "" {
		s.dropPush(u, d)
	} else {
		r := &pushReg{Provider: reg.Provider, Token: reg.Token, ShowSender: reg.ShowSender}
		p.regs[d.id] = r
		s.batch.Set(pushRegKey(nil, u.id, d.id), r.encode(nil), nil)
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// applyPushDone records what became of a push ([S-19-6]).
func (s *Shard) applyPushDone(op *Op) {
	if op.Push == nil {
		return
	}
	u, err := s.loadUser(op.User)
	if err != nil || u == nil {
		return
	}
	p, err := s.loadPush(u)
	if err != nil {
		return
	}
	reg, due := p.regs[op.Device], p.due[op.Device]
	if op.Push.Outcome == PushTokenInvalid {
		if reg != nil && reg.Token == op.Push.Token {
			s.push.tokensRemoved.Add(1)
			s.log.Info("push token refused by the provider: registration removed", "user", u.id, "device", op.Device, "provider", reg.Provider)
			delete(p.regs, op.Device)
			s.batch.Delete(pushRegKey(nil, u.id, op.Device), nil)
			s.dropPushDue(u, p, op.Device)
		}
		return
	}
	if due == nil {
		return // the device connected, or its registration went
	}
	if reg == nil {
		s.dropPushDue(u, p, op.Device)
		return
	}
	if op.Push.Outcome == PushSent && reg.Token == op.Push.Token {
		due.Pushed = max(due.Pushed, min(op.Push.Sent, due.Count))
	}
	due.NextMS = max(due.NextMS, op.Push.NextMS)
	s.batch.Set(pushDueKey(nil, u.id, op.Device), due.encode(nil), nil)
	if due.Count > due.Pushed {
		s.pushEffect(u.id, op.Device, reg, due) // more came meanwhile, or it failed
	}
}

// replayPush hands the Pusher every push owed in the database: at Open,
// and after a restart in place ([S-19-6]).
func (s *Shard) replayPush() {
	if s.cfg.Pusher == nil {
		return
	}
	n := 0
	err := s.scan(shardKey(nil, tagPushDue), func(k, v []byte) error {
		if len(k) != 3+12 {
			return fmt.Errorf("%w: push due key %x", errCorrupt, k)
		}
		var due pushDue
		if err := due.decode(v); err != nil {
			return err
		}
		if due.Count <= due.Pushed {
			return nil
		}
		user, device := binary.BigEndian.Uint64(k[3:]), binary.BigEndian.Uint32(k[11:])
		rv, err := s.get(pushRegKey(nil, user, device))
		if err != nil || rv == nil {
			return err
		}
		var reg pushReg
		if err := reg.decode(rv); err != nil {
			return err
		}
		s.pushEffect(user, device, &reg, &due)
		n++
		return nil
	})
	if err != nil {
		s.abort(fmt.Errorf("storage: replay push records: %w", err))
		return
	}
	if n > 0 {
		s.log.Info("replaying pushes owed", "devices", n)
	}
}
