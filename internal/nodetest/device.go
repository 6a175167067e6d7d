package nodetest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Entry is one inbox entry as a device got it. Entries are comparable: two
// devices of one user must get equal entries at equal seqs.
type Entry struct {
	Seq        uint64
	Kind       protocol.Kind // Message, Receipt, GroupEvent or Receipts
	ID         uint64        // a message's or a group event's id
	From       uint64        // a message's sender; a group event's actor
	FromDevice uint32        // a message's sending device
	To         uint64        // the recipient, in a copy of one's own message ([S-8-17])
	Group      uint64        // a group message's or event's group
	GSeq       uint64        // its place in the group's order
	Body       string        // a message's body; a group event's op and members
}

// send is one SEND a device wrote: what the test asked for, and the id
// its SENT carried.
type send struct {
	dev    *Device
	cmid   uint64
	to     uint64 // recipient user (1:1), or 0
	group  uint64 // group, or 0
	body   []byte
	clock  uint64 // the recorder's clock when written
	resent bool   // written more than once
	id     uint64 // from SENT; 0 until it comes
	// refused is the code of a retriable refusal (OVERLOADED,
	// SHARD_UNAVAILABLE) of its last write; 0 if none came.
	refused protocol.Code
}

// Device is one device of a user, driven over the raw wire protocol: it
// logs in resuming from the highest seq it got, reads its stream on a
// goroutine, records every entry and answer with its Recorder, and
// acknowledges each frame's entries at once.
type Device struct {
	// User is the device's account and credentials.
	User wiretest.User

	rec    *Recorder
	name   string // "user/device", for messages
	joined uint64 // the recorder's clock when the device was added

	mu   sync.Mutex    // guards conn, done and via; taken before rec.mu
	via  Target        // guarded by mu: where Connect goes; nil: the recorder's node
	conn net.Conn      // guarded by mu; nil when disconnected
	done chan struct{} // guarded by mu: closed when conn's reader returns

	// Guarded by rec.mu:
	cursor   uint64                 // highest seq got
	entries  []Entry                // every entry got, in arrival order
	msgSeq   map[uint64]uint64      // message id → the seq it came at
	lastGSeq map[uint64]uint64      // group → highest gseq got
	sends    map[uint64]*send       // by cmid
	nextCMID uint64                 // the last cmid used
	nextRID  uint32                 // the last request id used
	answers  map[uint32]codec.Frame // by rid: answers to Request not yet taken
	conns    int                    // connections opened
	synced   int                    // the last connection whose Synced came
}

// Connect opens a connection, logs in resuming after the highest seq the
// device got, and starts reading. A device already connected is left as
// it is. Trouble (the node unreachable) is recorded as a violation, so
// Connect may be called from any goroutine.
func (d *Device) Connect() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		select {
		case <-d.done: // the node closed it: connect again
			d.conn.Close()
			d.conn = nil
		default:
			return
		}
	}
	to := d.via
	if to == nil {
		to = d.rec.n
	}
	conn, err := tls.Dial("tcp", to.Addr().String(), wiretest.TLSConfig(to.Fingerprint()))
	if err != nil {
		d.rec.violate("%s: connect: %v", d.name, err)
		return
	}
	r := d.rec
	r.mu.Lock()
	cursor := d.cursor
	d.conns++
	connNo := d.conns
	r.mu.Unlock()
	login, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{
		Version: protocol.Version, User: d.User.ID, Device: d.User.Device, Credential: d.User.Cred, Cursor: cursor,
	})
	if _, err := conn.Write(login); err != nil {
		conn.Close()
		d.rec.violate("%s: write login: %v", d.name, err)
		return
	}
	d.conn, d.done = conn, make(chan struct{})
	go d.read(conn, d.done, connNo)
}

// Via makes the device's next connections go to target (one node of a
// cluster, say) instead of the recorder's node.
func (d *Device) Via(target Target) {
	d.mu.Lock()
	d.via = target
	d.mu.Unlock()
}

// Disconnect drops the connection without a goodbye, as a phone losing
// its network does, and waits for its reader to stop.
func (d *Device) Disconnect() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return
	}
	d.conn.Close()
	<-d.done
	d.conn = nil
}

// Resync reconnects and waits for the new connection's SYNCED: every
// entry the inbox held at the login has then been delivered and checked.
// For the test's goroutine.
func (d *Device) Resync() {
	d.rec.t.Helper()
	d.Disconnect()
	d.Connect()
	d.WaitSynced()
}

// WaitSynced waits until the current connection got its SYNCED. For the
// test's goroutine.
func (d *Device) WaitSynced() {
	d.rec.t.Helper()
	r := d.rec
	r.Wait(d.name+" synced", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return d.synced == d.conns
	})
}

// WaitSyncedWithin is WaitSynced with a deadline of within that returns
// an error instead of failing the test: a client that logs in again when
// its login goes unanswered (a call lost with a node's restart) waits
// for SYNCED this way. It may be called from any goroutine.
func (d *Device) WaitSyncedWithin(within time.Duration) error {
	r := d.rec
	if !r.awaitWithin(within, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return d.synced == d.conns
	}) {
		return fmt.Errorf("nodetest: %s: no SYNCED in %v", d.name, within)
	}
	return nil
}

// Send writes a 1:1 SEND of body to user to with the device's next cmid,
// and returns the cmid. ok is false if the device is not connected (then
// nothing was written and no cmid used) or the write failed (then the
// cmid is used and the SEND may have reached the node: a client must
// Resend it, [S-8-14]).
func (d *Device) Send(to uint64, body []byte) (cmid uint64, ok bool) {
	return d.send(to, 0, body)
}

// SendGroup is Send for a message to a group.
func (d *Device) SendGroup(group uint64, body []byte) (cmid uint64, ok bool) {
	return d.send(0, group, body)
}

func (d *Device) send(to, group uint64, body []byte) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return 0, false
	}
	r := d.rec
	r.mu.Lock()
	d.nextCMID++
	r.clock++
	s := &send{dev: d, cmid: d.nextCMID, to: to, group: group, body: append([]byte(nil), body...), clock: r.clock}
	d.sends[s.cmid] = s
	r.mu.Unlock()
	_, err := d.conn.Write(codec.AppendSend(nil, codec.Send{To: to, Group: group, CMID: s.cmid, Body: body}))
	return s.cmid, err == nil
}

// Resend writes the SEND of cmid again, identical, as a client without
// its SENT must ([S-8-14]); false if not connected or the write failed.
func (d *Device) Resend(cmid uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rec
	r.mu.Lock()
	s := d.sends[cmid]
	if s != nil {
		s.resent, s.refused = true, 0
	}
	r.mu.Unlock()
	if s == nil {
		panic(fmt.Sprintf("nodetest: %s: Resend of cmid %d, never sent", d.name, cmid))
	}
	if d.conn == nil {
		return false
	}
	_, err := d.conn.Write(codec.AppendSend(nil, codec.Send{To: s.to, Group: s.group, CMID: cmid, Body: s.body}))
	return err == nil
}

// WaitSent waits up to Timeout for the SENT of cmid and returns the
// message id it carried. It may be called from any goroutine.
func (d *Device) WaitSent(cmid uint64) (uint64, error) { return d.WaitSentWithin(cmid, Timeout) }

// WaitSentWithin is WaitSent with a deadline of within: a test that
// resends after a retriable error (the SEND then gets no SENT) waits a
// little and resends. It may be called from any goroutine.
func (d *Device) WaitSentWithin(cmid uint64, within time.Duration) (uint64, error) {
	r := d.rec
	var id uint64
	if !r.awaitWithin(within, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if s := d.sends[cmid]; s != nil {
			id = s.id
		}
		return id != 0
	}) {
		return 0, fmt.Errorf("nodetest: %s: no SENT for cmid %d in %v", d.name, cmid, within)
	}
	return id, nil
}

// WaitAnswer waits up to within for the answer to the last write of the
// SEND of cmid: its SENT, whose message id it returns, or a retriable
// refusal (OVERLOADED, SHARD_UNAVAILABLE), whose code it returns. It
// returns an error when neither came in time, and ErrConnectionEnded
// when the device's connection ended first (its SEND may then have been
// stored or not: Resend it on the next, [S-8-14]). A client's retry
// loop (Connect, Send or Resend, WaitAnswer) uses it to resend at once
// after a refusal. It may be called from any goroutine.
func (d *Device) WaitAnswer(cmid uint64, within time.Duration) (id uint64, refused protocol.Code, err error) {
	r := d.rec
	ended := false
	if !r.awaitWithin(within, func() bool {
		ended = !d.Connected()
		r.mu.Lock()
		defer r.mu.Unlock()
		if s := d.sends[cmid]; s != nil {
			id, refused = s.id, s.refused
		}
		return id != 0 || refused != 0 || ended
	}) {
		return 0, 0, fmt.Errorf("nodetest: %s: no answer to cmid %d in %v", d.name, cmid, within)
	}
	if id == 0 && refused == 0 {
		return 0, 0, fmt.Errorf("nodetest: %s: cmid %d: %w", d.name, cmid, ErrConnectionEnded)
	}
	return id, refused, nil
}

// ErrConnectionEnded means a device's connection ended before the answer
// waited for came.
var ErrConnectionEnded = errors.New("connection ended")

// Connected reports whether the device has a connection that the node
// has not closed (nor the network lost): false before Connect, after
// Disconnect, and once its reader stopped. Any goroutine may call it.
func (d *Device) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Entries returns a copy of the entries the device got, in arrival order.
func (d *Device) Entries() []Entry {
	d.rec.mu.Lock()
	defer d.rec.mu.Unlock()
	return append([]Entry(nil), d.entries...)
}

// Cursor returns the highest seq the device got.
func (d *Device) Cursor() uint64 {
	d.rec.mu.Lock()
	defer d.rec.mu.Unlock()
	return d.cursor
}

// WaitFor waits until cond holds over the entries the device got. cond
// runs with the recorder locked: it must not keep got or call the
// recorder. For the test's goroutine.
func (d *Device) WaitFor(what string, cond func(got []Entry) bool) {
	d.rec.t.Helper()
	r := d.rec
	r.Wait(d.name+": "+what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return cond(d.entries)
	})
}

// String names the device as "user/device".
func (d *Device) String() string { return d.name }

// read reads conn until it fails, recording every frame and acknowledging
// the entries of each frame (a Batch is one frame) at once. Its end wakes
// the recorder's waiters (WaitAnswer).
func (d *Device) read(conn net.Conn, done chan struct{}, connNo int) {
	defer func() {
		close(done)
		d.rec.mu.Lock()
		d.rec.notifyLocked()
		d.rec.mu.Unlock()
	}()
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		d.rec.violate("%s: %v", d.name, err)
		return
	}
	defer dec.Close()
	rd := codec.NewReader(conn, protocol.MaxFrameBody, dec)
	r := d.rec
	var ack []byte
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		var last uint64
		r.mu.Lock()
		if f.Kind == protocol.KindBatch {
			for rest := f.Body; len(rest) > 0; {
				inner, next, err := codec.NextFrame(rest, protocol.MaxFrameBody)
				if err != nil {
					r.violateLocked("%s: bad frame in a batch: %v", d.name, err)
					break
				}
				rest = next
				last = max(last, d.handleLocked(inner, connNo))
			}
		} else {
			last = d.handleLocked(f, connNo)
		}
		r.notifyLocked()
		r.mu.Unlock()
		if last > 0 {
			ack = codec.AppendAck(ack[:0], last)
			if _, err := conn.Write(ack); err != nil {
				return
			}
		}
	}
}

// handleLocked records one frame and returns its seq if it is an entry.
func (d *Device) handleLocked(f codec.Frame, connNo int) uint64 {
	r := d.rec
	switch f.Kind {
	case protocol.KindLoginOK:
		var ok pb.LoginOk
		if err := codec.ParseProto(f.Body, &ok); err != nil {
			r.violateLocked("%s: LoginOk: %v", d.name, err)
			return 0
		}
		// [S-8-7]: the stream resumes where the device says it is; a new
		// device starts where the node puts it.
		if d.cursor > 0 && ok.Cursor != d.cursor {
			r.violateLocked("%s: LoginOk resumes after seq %d, the device has up to %d", d.name, ok.Cursor, d.cursor)
		}
		d.cursor = ok.Cursor
		d.nextCMID = max(d.nextCMID, ok.MaxCmid) // [S-8-19]
	case protocol.KindMessage:
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			r.violateLocked("%s: Message: %v", d.name, err)
			return 0
		}
		e := Entry{Seq: m.Seq, Kind: f.Kind, ID: m.ID, From: m.From, FromDevice: m.FromDevice, To: m.To, Group: m.Group, GSeq: m.GSeq, Body: string(m.Body)}
		if at, ok := d.msgSeq[m.ID]; ok {
			r.violateLocked("%s: message %d delivered twice, at seq %d and %d", d.name, m.ID, at, m.Seq)
		}
		d.msgSeq[m.ID] = m.Seq
		if m.Group != 0 {
			r.groupEntryLocked(d, e)
		}
		return d.entryLocked(e)
	case protocol.KindReceipt:
		rc, err := codec.ParseReceipt(f.Body)
		if err != nil {
			r.violateLocked("%s: Receipt: %v", d.name, err)
			return 0
		}
		return d.entryLocked(Entry{Seq: rc.Seq, Kind: f.Kind, From: rc.Peer, ID: rc.UpTo, Body: rc.Type.String()})
	case protocol.KindGroupEvent:
		var ev pb.GroupEvent
		if err := codec.ParseProto(f.Body, &ev); err != nil {
			r.violateLocked("%s: GroupEvent: %v", d.name, err)
			return 0
		}
		e := Entry{Seq: ev.Seq, Kind: f.Kind, ID: ev.Id, From: ev.Actor, Group: ev.Group, GSeq: ev.Gseq, Body: fmt.Sprintf("%v%v", ev.Op, ev.Members)}
		r.groupEventLocked(d, &ev)
		r.groupEntryLocked(d, e)
		return d.entryLocked(e)
	case protocol.KindReceipts:
		var rs pb.Receipts
		if err := codec.ParseProto(f.Body, &rs); err != nil {
			r.violateLocked("%s: Receipts: %v", d.name, err)
			return 0
		}
		body := rs.Type.String()
		for _, it := range rs.Items {
			body += fmt.Sprintf(" %d:%d", it.Peer, it.UpTo)
		}
		return d.entryLocked(Entry{Seq: rs.Seq, Kind: f.Kind, Body: body})
	case protocol.KindSent:
		var sent pb.Sent
		if err := codec.ParseProto(f.Body, &sent); err != nil {
			r.violateLocked("%s: Sent: %v", d.name, err)
			return 0
		}
		r.sentLocked(d, sent.Cmid, sent.Id)
	case protocol.KindSynced:
		var s pb.Synced
		if err := codec.ParseProto(f.Body, &s); err != nil {
			r.violateLocked("%s: Synced: %v", d.name, err)
			return 0
		}
		// [S-8-6]: the highest seq sent before it, or the resume point.
		if s.Seq != d.cursor {
			r.violateLocked("%s: Synced at seq %d, the device has up to %d", d.name, s.Seq, d.cursor)
		}
		d.synced = connNo
	case protocol.KindError:
		var e pb.Error
		_ = codec.ParseProto(f.Body, &e)
		switch {
		case e.Rid != 0 && e.Cmid == 0:
			d.answerLocked(e.Rid, f)
		case e.Code != protocol.CodeOverloaded && e.Code != protocol.CodeShardUnavailable:
			r.violateLocked("%s: error %v (rid %d, cmid %d)", d.name, e.Code, e.Rid, e.Cmid)
		case e.Cmid != 0:
			if s := d.sends[e.Cmid]; s != nil && s.id == 0 {
				s.refused = e.Code
			}
		}
	case protocol.KindPong, protocol.KindGoAway, protocol.KindPresence, protocol.KindIsTyping:
	case protocol.KindRevoked:
		var rv pb.Revoked
		if err := codec.ParseProto(f.Body, &rv); err != nil {
			r.violateLocked("%s: Revoked: %v", d.name, err)
			return 0
		}
		// [S-18-2], [S-18-3]: in place of the message, with its gseq, or
		// after it, with the deletion's.
		e := Entry{Seq: rv.Seq, Kind: f.Kind, ID: rv.Id, From: rv.From, To: rv.To, Group: rv.Group, GSeq: rv.Gseq, Body: "revoked"}
		if rv.Group != 0 {
			r.groupEntryLocked(d, e)
		}
		return d.entryLocked(e)
	default:
		if f.Kind >= protocol.FirstReservedEntryKind {
			// An entry of a later revision ([S-12-6]): recorded and
			// acknowledged like any other.
			return d.entryLocked(Entry{Seq: entrySeq(f.Body), Kind: f.Kind})
		}
		// An answer to a request: its rid is field 1 ([S-7-*]).
		if num, typ, n := protowire.ConsumeTag(f.Body); n > 0 && num == 1 && typ == protowire.VarintType {
			if rid, m := protowire.ConsumeVarint(f.Body[n:]); m > 0 && rid != 0 {
				d.answerLocked(uint32(rid), f)
			}
		}
	}
	return 0
}

// entrySeq returns field 1 of an entry body, its seq ([S-12-6]).
func entrySeq(body []byte) uint64 {
	if num, typ, n := protowire.ConsumeTag(body); n > 0 && num == 1 && typ == protowire.VarintType {
		if seq, m := protowire.ConsumeVarint(body[n:]); m > 0 {
			return seq
		}
	}
	return 0
}

// answerLocked keeps the answer to the request rid for Request.
func (d *Device) answerLocked(rid uint32, f codec.Frame) {
	if rid <= d.nextRID {
		d.answers[rid] = codec.Frame{Kind: f.Kind, Body: append([]byte(nil), f.Body...)}
	}
}

// Request writes a request of kind k holding m, with its rid set to the
// device's next request id, and waits up to Timeout for the answer with
// that rid (an Error, or the request's own answer). The device must be
// connected. It may be called from any goroutine.
func (d *Device) Request(k protocol.Kind, m proto.Message) (codec.Frame, error) {
	r := d.rec
	r.mu.Lock()
	d.nextRID++
	rid := d.nextRID
	r.mu.Unlock()
	fd := m.ProtoReflect().Descriptor().Fields().ByName("rid")
	if fd == nil {
		return codec.Frame{}, fmt.Errorf("nodetest: %v has no rid", k)
	}
	m.ProtoReflect().Set(fd, protoreflect.ValueOfUint32(rid))
	b, err := codec.AppendProto(nil, k, m)
	if err != nil {
		return codec.Frame{}, err
	}
	d.mu.Lock()
	conn := d.conn
	d.mu.Unlock()
	if conn == nil {
		return codec.Frame{}, fmt.Errorf("nodetest: %s: request while disconnected", d.name)
	}
	if _, err := conn.Write(b); err != nil {
		return codec.Frame{}, fmt.Errorf("nodetest: %s: %w", d.name, err)
	}
	var f codec.Frame
	if !r.await(func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var ok bool
		if f, ok = d.answers[rid]; ok {
			delete(d.answers, rid)
		}
		return ok
	}) {
		return codec.Frame{}, fmt.Errorf("nodetest: %s: no answer to %v (rid %d) in %v", d.name, k, rid, Timeout)
	}
	return f, nil
}

// entryLocked checks that e continues the device's stream with no gap,
// duplicate or reorder ([S-8-9]), records it and returns its seq.
func (d *Device) entryLocked(e Entry) uint64 {
	switch {
	case e.Seq <= d.cursor:
		d.rec.violateLocked("%s: seq %d after %d: a duplicate or a reorder (%v)", d.name, e.Seq, d.cursor, e.Kind)
	case e.Seq > d.cursor+1:
		d.rec.violateLocked("%s: seq %d after %d: a gap", d.name, e.Seq, d.cursor)
	}
	d.cursor = max(d.cursor, e.Seq)
	d.entries = append(d.entries, e)
	return e.Seq
}
