package loadtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// device is one account's device and what survives its reconnects: the
// cursor and the sends not yet answered.
type device struct {
	w     *Worker
	index int // account index in the run
	user  uint64
	id    uint32
	cred  []byte
	peer  *device    // the device this one talks to; nil if none
	out   *direction // this device → peer
	in    *direction // peer → this device
	// tlsConfig holds the device's session cache with Config.Resume (made
	// on its first connect; connects of one device never overlap).
	tlsConfig *tls.Config

	// cursor is the highest inbox seq processed. Written by the reader of
	// the live session (one at a time), read when logging in.
	cursor atomic.Uint64
	// waited is the highest inbox seq processed of an entry whose Ack may
	// not wait LazyAckDelay: a one-to-one message from another user (its
	// sender waits for the delivered receipt our Ack makes) or one of 4 KiB
	// or more ([S-8-5]). Written by the reader of the live session.
	waited atomic.Uint64
	// credit is signalled (capacity 1) when a Sent frees a send slot.
	credit chan struct{}
	// keep reconnects the device after an unexpected drop.
	keep atomic.Bool

	// rid numbers this device's requests ([S-6-6]).
	rid atomic.Uint32
	// group is the group state of a groups run (scenario_groups.go); nil
	// otherwise.
	group atomic.Pointer[deviceGroups]

	mu       sync.Mutex
	sess     *session           // guarded by mu: the logged-in session, or nil
	live     chan struct{}      // guarded by mu: closed once sess is set
	nextCMID uint64             // guarded by mu: the next cmid to use
	unacked  map[uint64]pending // guarded by mu: sent, Sent not seen yet
	// refused holds the unacked sends refused with a retriable code whose
	// resend is due (guarded by mu): they go out again together, in cmid
	// order, when the lowest one's wait is over ([S-8-13]).
	refused map[uint64]struct{}
	// groupEvents is, per group id, the highest gseq of the GROUP_EVENT
	// entries seen (guarded by mu); createdGroup the group this device
	// created. Groups runs only.
	groupEvents  map[uint64]uint64
	createdGroup uint64

	// An envelopes run (scenario_envelopes.go): a primary's companions
	// (linked devices of its user), a companion's primary, the ledgers of
	// a primary's sends beyond out (one per other receiving device), and
	// on a companion the ledger of its primary's copies. Set before the
	// traffic, read-only after.
	companions []*device
	primary    *device
	fanout     []*direction
	copies     *direction
}

// pending is a send whose Sent has not arrived: enough to resend it
// byte for byte ([S-8-14]).
type pending struct{ intended, actual int64 }

func newDevice(w *Worker, index int) *device {
	return &device{w: w, index: index, credit: make(chan struct{}, 1), live: make(chan struct{}), nextCMID: 1, unacked: map[uint64]pending{}, refused: map[uint64]struct{}{}}
}

// session is one connection of a device. Its reader goroutine owns the
// read side; writes from any goroutine go through write.
type session struct {
	d      *device
	raw    *net.TCPConn
	conn   *tls.Conn
	window int

	loggedIn chan struct{} // closed at LoginOk
	synced   chan struct{} // closed at Synced
	done     chan struct{} // closed when the reader has exited

	wmu       sync.Mutex
	ackedSeq  uint64          // guarded by wmu: the last Ack written
	ackTimer  *time.Timer     // guarded by wmu: writes a delayed Ack; reused
	ackArmed  bool            // guarded by wmu: ackTimer is set to fire
	ackAt     time.Time       // guarded by wmu: when the armed ackTimer fires
	wbuf      []byte          // guarded by wmu: an Ack and what rides with it
	deadline  int64           // guarded by wmu: the write deadline, unix nanos
	lastWrite atomic.Int64    // unix nanos
	closing   atomic.Bool     // closed on purpose: not a drop
	inflate   []byte          // owned by the reader
	body      []byte          // owned by the reader
	sent      codec.SentState // owned by the reader: resolves compact SENTs ([S-7-16])
	loginErr  error           // set by the reader before loggedIn or done closes

	reqMu sync.Mutex
	reqs  map[uint32]chan reply // guarded by reqMu: requests waiting for their answer
}

// reply is the answer to a request: its frame kind and a copy of its body.
type reply struct {
	kind protocol.Kind
	body []byte
}

// errOverloaded is a Login answered with OVERLOADED: try again later.
type errOverloaded struct{ after time.Duration }

func (e errOverloaded) Error() string {
	return fmt.Sprintf("login overloaded, retry after %v", e.after)
}

// connect dials, logs the device in, resends its unanswered sends and
// waits for Synced. It returns how long that took.
func (d *device) connect(ctx context.Context) (time.Duration, error) {
	w := d.w
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := w.dialer.DialContext(ctx, "tcp", w.spec.addrOf(d.index))
	if err != nil {
		w.stats.dialErrors.Add(1)
		return 0, fmt.Errorf("dial: %w", err)
	}
	raw := nc.(*net.TCPConn)
	cfg := w.tlsConfig
	if w.spec.Config.Resume {
		if d.tlsConfig == nil {
			d.tlsConfig = w.tlsConfig.Clone()
			d.tlsConfig.SessionTicketsDisabled = false
			d.tlsConfig.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		cfg = d.tlsConfig
	}
	cc := &countingConn{Conn: raw, w: w}
	tc := tls.Client(cc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		w.stats.dialErrors.Add(1)
		return 0, fmt.Errorf("tls: %w", err)
	}
	// This connection's bytes until the handshake returned: the client's
	// flights and what it read of the server's (its ticket included when
	// it came in the same read).
	w.stats.handshakes.Add(1)
	w.stats.handshakeBytesUp.Add(cc.up.Load())
	w.stats.handshakeBytesDown.Add(cc.down.Load())
	if tc.ConnectionState().DidResume {
		w.stats.resumed.Add(1)
	}
	cursor := d.cursor.Load()
	// Login.cursor acknowledges up to cursor ([S-8-7]): no Ack may precede
	// LoginOk, which an Ack riding on the Login would.
	s := &session{d: d, raw: raw, conn: tc, ackedSeq: cursor,
		loggedIn: make(chan struct{}), synced: make(chan struct{}), done: make(chan struct{})}
	login, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{
		Version: protocol.Version, User: d.user, Device: d.id, Credential: d.cred, Cursor: cursor,
		CompactSent: true, // [S-7-16]
	})
	if err := s.write(login); err != nil {
		raw.Close()
		return 0, err
	}
	w.stats.connected.Add(1)
	go s.read()
	select {
	case <-s.loggedIn:
	case <-s.done:
		return 0, s.loginErr
	case <-ctx.Done():
		s.close(true)
		<-s.done
		return 0, ctx.Err()
	}
	// Resend what is unanswered, in cmid order, before any new send.
	d.mu.Lock()
	if isClosed(s.done) {
		d.mu.Unlock()
		return 0, fmt.Errorf("connection lost after LoginOk: %w", s.loginErr)
	}
	clear(d.refused) // all resent here, in order
	if len(d.unacked) > 0 {
		var buf []byte
		for _, cmid := range sortedKeys(d.unacked) {
			p := d.unacked[cmid]
			buf = d.appendSend(buf, cmid, p)
			d.out.MarkResent(cmid)
			w.stats.resent.Add(1)
		}
		_ = s.write(buf)
	}
	d.sess = s
	close(d.live)
	d.mu.Unlock()
	w.stats.logins.Add(1)
	select {
	case <-s.synced:
	case <-s.done:
		return 0, errors.New("connection lost before Synced")
	case <-ctx.Done():
		// End the session, which is live: a retry's session would
		// otherwise find d.live closed already.
		s.close(true)
		<-s.done
		return 0, ctx.Err()
	}
	took := time.Since(start)
	w.connectTimes.record(took)
	return took, nil
}

// appendSend appends the Send frame for cmid. d.mu must be held.
func (d *device) appendSend(dst []byte, cmid uint64, p pending) []byte {
	var body [128]byte
	switch d.w.spec.Config.Scenario {
	case groupEnvelopesName:
		return d.appendGroupEnvelopeSend(dst, cmid, p)
	case envelopesName:
		return d.appendEnvelopeSend(dst, cmid, appendBody(body[:0], p.intended, p.actual, cmid, d.w.spec.Config.MessageSize+envelopeOverhead))
	}
	b := appendBody(body[:0], p.intended, p.actual, cmid, d.w.spec.Config.MessageSize)
	if d.peer == nil {
		return codec.AppendSend(dst, codec.Send{Group: d.group.Load().sendTo, CMID: cmid, Body: b})
	}
	return codec.AppendSend(dst, codec.Send{To: d.peer.user, CMID: cmid, Body: b})
}

// disconnect closes the live session on purpose; abrupt drops it with a
// TCP reset and no close_notify, like a phone losing its network.
func (d *device) disconnect(abrupt bool) {
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()
	if s != nil {
		s.close(abrupt)
		<-s.done
	}
}

// session returns the live session, or nil.
func (d *device) session() *session {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sess
}

// write writes b on the connection, with an Ack in front when entries
// are waiting for one: acks ride along with sends.
func (s *session) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(b, false)
}

// writeLocked writes b, prefixed by a due Ack; with b empty it writes the
// Ack alone if force is set. s.wmu must be held.
//
// It allocates nothing: the Ack and b are joined in the session's buffer,
// and the write deadline (10 s) is moved only when less than 5 s of it
// are left, not before every write (each move is a timer update in the
// runtime's poller).
func (s *session) writeLocked(b []byte, force bool) error {
	if c := s.d.cursor.Load(); c > s.ackedSeq && (len(b) > 0 || force) {
		s.wbuf = append(codec.AppendAck(s.wbuf[:0], c), b...)
		b = s.wbuf
		s.ackedSeq = c
		if s.ackArmed {
			s.ackTimer.Stop()
			s.ackArmed = false
		}
	}
	if len(b) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	if s.deadline-now < int64(5*time.Second) {
		s.deadline = now + int64(10*time.Second)
		_ = s.conn.SetWriteDeadline(time.Unix(0, s.deadline))
	}
	_, err := s.conn.Write(b)
	s.lastWrite.Store(now)
	s.d.w.stats.frameBytesUp.Add(int64(len(b)))
	if err != nil {
		_ = s.raw.Close()
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// maybeAck acknowledges what the reader processed: at once when half the
// window is unacknowledged (or AckDelay is 0), else within AckDelay, or
// within LazyAckDelay while the Ack would newly cover no one-to-one
// message from another user,
// as the SDK does ([S-8-5]).
func (s *session) maybeAck() error {
	cfg := &s.d.w.spec.Config
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c := s.d.cursor.Load()
	switch {
	case c <= s.ackedSeq:
		return nil
	case cfg.AckDelay <= 0 || int(c-s.ackedSeq) >= max(1, s.window/2):
		return s.writeLocked(nil, true)
	}
	delay := cfg.AckDelay
	if s.d.waited.Load() <= s.ackedSeq {
		delay = cfg.LazyAckDelay
	}
	now := time.Now()
	if s.ackArmed && !now.Add(delay).Before(s.ackAt) {
		return nil
	}
	s.ackArmed, s.ackAt = true, now.Add(delay)
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(delay, s.ackDue)
	} else {
		s.ackTimer.Reset(delay)
	}
	return nil
}

// ackDue writes the delayed Ack. A late run after the timer was stopped
// writes only an Ack that is due anyway.
func (s *session) ackDue() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ackArmed = false
	_ = s.writeLocked(nil, true)
}

// close ends the session on purpose. abrupt resets the TCP connection.
func (s *session) close(abrupt bool) {
	s.closing.Store(true)
	if abrupt {
		_ = s.raw.SetLinger(0)
		_ = s.raw.Close()
		return
	}
	s.wmu.Lock()
	s.deadline = time.Now().Add(time.Second).UnixNano()
	_ = s.conn.SetWriteDeadline(time.Unix(0, s.deadline))
	_ = s.conn.Close() // close_notify, then close
	s.wmu.Unlock()
}

// read is the session's reader goroutine.
func (s *session) read() {
	d, w := s.d, s.d.w
	defer func() {
		_ = s.raw.Close()
		s.wmu.Lock()
		if s.ackTimer != nil {
			s.ackTimer.Stop()
			s.ackArmed = false
		}
		s.wmu.Unlock()
		d.mu.Lock()
		wasLive := d.sess == s
		if wasLive {
			d.sess = nil
			d.live = make(chan struct{})
		}
		close(s.done) // under d.mu: connect checks it there
		d.mu.Unlock()
		w.stats.connected.Add(-1)
		if wasLive && !s.closing.Load() {
			w.stats.drops.Add(1)
			if d.keep.Load() {
				go d.reconnect()
			}
		}
	}()
	br := bufio.NewReaderSize(s.conn, 4096)
	for {
		f, err := s.readFrame(br)
		if err != nil {
			if s.loginErr == nil {
				s.loginErr = fmt.Errorf("read: %w", err)
			}
			return
		}
		if err := s.handle(f); err != nil {
			s.loginErr = err
			return
		}
		if br.Buffered() == 0 && s.maybeAck() != nil {
			return
		}
	}
}

// readFrame reads one frame, inflating a compressed body. The body is
// valid until the next call.
func (s *session) readFrame(br *bufio.Reader) (codec.Frame, error) {
	var hdr [protocol.MaxHeaderLen]byte
	n := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return codec.Frame{}, err
		}
		hdr[n] = b
		n++
		if n >= 2 && hdr[n-2] < 0x80 {
			break
		}
		if n == len(hdr) {
			return codec.Frame{}, codec.ErrMalformed
		}
	}
	_, _, need, err := codec.Parse(hdr[:n], protocol.MaxFrameBody)
	if err != nil {
		return codec.Frame{}, err
	}
	if need == 0 {
		return codec.Frame{}, codec.ErrMalformed
	}
	bodyLen := need - n
	if cap(s.body) < bodyLen {
		s.body = make([]byte, bodyLen)
	}
	s.body = s.body[:bodyLen]
	if _, err := io.ReadFull(br, s.body); err != nil {
		return codec.Frame{}, err
	}
	s.d.w.stats.frameBytesDown.Add(int64(need))
	kb := hdr[n-1]
	f := codec.Frame{Kind: protocol.Kind(kb &^ protocol.FlagCompressed), Compressed: kb&protocol.FlagCompressed != 0, Body: s.body}
	if f.Compressed {
		s.inflate, err = s.d.w.dec.Decompress(s.inflate, f.Body)
		if err != nil {
			return codec.Frame{}, err
		}
		f.Body, f.Compressed = s.inflate, false
	}
	return f, nil
}

// handle processes one frame from the server.
func (s *session) handle(f codec.Frame) error {
	d, w := s.d, s.d.w
	switch f.Kind {
	case protocol.KindLoginOK:
		var ok pb.LoginOk
		if err := codec.ParseProto(f.Body, &ok); err != nil {
			return err
		}
		s.window = int(ok.Window)
		w.heartbeat.CompareAndSwap(0, int64(ok.HeartbeatS))
		d.cursor.Store(ok.Cursor) // [S-8-7]
		s.wmu.Lock()
		s.ackedSeq = ok.Cursor
		s.wmu.Unlock()
		close(s.loggedIn)
	case protocol.KindSynced:
		select {
		case <-s.synced:
		default:
			close(s.synced)
		}
	case protocol.KindBatch:
		for rest := f.Body; len(rest) > 0; {
			inner, r, err := codec.NextFrame(rest, protocol.MaxFrameBody)
			if err != nil {
				return err
			}
			if err := s.entry(inner); err != nil {
				return err
			}
			rest = r
		}
	case protocol.KindMessage, protocol.KindReceipt, protocol.KindGroupEvent, protocol.KindReceipts, protocol.KindKeysChanged:
		return s.entry(f)
	case protocol.KindOK, protocol.KindGroupInfo, protocol.KindMediaUploadSlot, protocol.KindMediaDownloadURL,
		protocol.KindLookupResult, protocol.KindGroupListResult:
		s.answer(f, uint32(firstVarint(f.Body)))
	case protocol.KindSent:
		cmid, _, err := s.sent.ParseSent(f.Body) // without a proto.Unmarshal
		if err != nil {
			return err
		}
		d.mu.Lock()
		_, ok := d.unacked[cmid]
		delete(d.unacked, cmid)
		d.mu.Unlock()
		if ok && (d.out == nil || d.out.Ack(cmid)) {
			w.stats.acked.Add(1)
		}
		if ok {
			for _, f := range d.fanout {
				f.Ack(cmid)
			}
		}
		select {
		case d.credit <- struct{}{}:
		default:
		}
	case protocol.KindError:
		var e pb.Error
		if err := codec.ParseProto(f.Body, &e); err != nil {
			return err
		}
		w.countError(e.Code)
		if e.Rid != 0 && s.answer(f, e.Rid) {
			return nil
		}
		switch {
		case e.Cmid != 0 && protocol.Retried(e.Code):
			// [S-8-14], [S-8-23]: the identical SEND again, after the wait.
			d.mu.Lock()
			d.refused[e.Cmid] = struct{}{}
			d.mu.Unlock()
			after := max(time.Duration(e.RetryAfterMs)*time.Millisecond, 10*time.Millisecond)
			time.AfterFunc(after, func() { d.resend(e.Cmid) })
		case e.Code == protocol.CodeOverloaded && !isClosed(s.loggedIn):
			s.closing.Store(true)
			return errOverloaded{after: time.Duration(e.RetryAfterMs) * time.Millisecond}
		case int(e.Code) < 32:
			if !isClosed(s.loggedIn) {
				s.closing.Store(true)
			}
			return fmt.Errorf("server closed the connection: %v", e.Code)
		}
	case protocol.KindGoAway:
		w.stats.goAways.Add(1)
	case protocol.KindPong:
	default:
		// [S-12-4] ignore kinds we do not know.
	}
	return nil
}

// entry processes one inbox entry.
func (s *session) entry(f codec.Frame) error {
	d, w := s.d, s.d.w
	var seq uint64
	var m codec.Message
	var err error
	switch f.Kind {
	case protocol.KindMessage:
		m, err = codec.ParseMessage(f.Body)
		seq = m.Seq
	case protocol.KindReceipt:
		var r codec.Receipt
		r, err = codec.ParseReceipt(f.Body)
		seq = r.Seq
	case protocol.KindReceipts, protocol.KindKeysChanged:
		seq = firstVarint(f.Body)
	case protocol.KindGroupEvent:
		var ev pb.GroupEvent
		err = codec.ParseProto(f.Body, &ev)
		seq = ev.Seq
		if err == nil {
			d.groupEvent(&ev)
		}
	default:
		return nil
	}
	if err != nil {
		return err
	}
	cur := d.cursor.Load()
	switch {
	case seq <= cur:
		w.stats.duplicated.Add(1) // [S-8-9]: delivered again past the cursor
		w.logAnomaly("entry at or below the cursor", d, seq, cur)
		return nil
	case seq != cur+1:
		w.stats.gaps.Add(1)
		w.logAnomaly("gap in inbox seq", d, seq, cur)
	}
	d.cursor.Store(seq)
	switch f.Kind {
	case protocol.KindReceipt, protocol.KindReceipts:
		w.stats.receipts.Add(1)
		return nil
	case protocol.KindGroupEvent, protocol.KindKeysChanged:
		return nil
	}
	if f.Kind == protocol.KindMessage && protocol.AckIsAwaited(m.Group, m.From, d.user, len(m.Body)) {
		d.waited.Store(seq) // its sender waits for the delivered receipt our Ack makes, or it is large ([S-8-5])
	}
	now := time.Now().UnixNano()
	if m.Group != 0 {
		w.groupDelivery(d, m, now)
		return nil
	}
	if w.spec.Config.Scenario == groupEnvelopesName {
		w.keyDelivery(d, m)
		return nil
	}
	flow := d.in
	if m.From == d.user {
		if len(m.Body) == 0 {
			return nil // its own envelope send, which carries nothing for it ([S-17-10])
		}
		flow = d.copies // a companion's copy of its primary's message
	}
	intended, actual, cmid, ok := parseBody(m.Body)
	if !ok || flow == nil || d.peer == nil || (m.From != d.peer.user && m.From != d.user) ||
		(w.spec.Config.Scenario == envelopesName && !envelopeIsFor(m.Body, m.From, cmid, d.id)) {
		w.stats.foreign.Add(1)
		return nil
	}
	w.receive(d, flow, cmid)
	if n := w.spec.Config.InjectDuplicate; n > 0 && w.stats.delivered.Load()%int64(n) == 0 {
		w.receive(d, flow, cmid) // injected fault: the same message processed twice
	}
	w.latency.record(d.index, intended, actual, now)
	return nil
}

// resend sends cmid again, once its wait after a retriable refusal is
// over, with every later refused send, in cmid order: the server refuses
// a conversation's later sends until the first refused one comes again
// ([S-8-13]). While an earlier refused send still waits, it does nothing:
// that one's resend takes cmid along.
func (d *device) resend(cmid uint64) {
	d.mu.Lock()
	s := d.sess
	if _, ok := d.refused[cmid]; !ok || s == nil {
		d.mu.Unlock()
		return // resent already, with an earlier one or on reconnecting
	}
	var again []uint64
	for c := range d.refused {
		if _, ok := d.unacked[c]; !ok {
			delete(d.refused, c)
			continue
		}
		if c < cmid {
			d.mu.Unlock()
			return
		}
		again = append(again, c)
	}
	slices.Sort(again)
	var buf []byte
	for _, c := range again {
		delete(d.refused, c)
		buf = d.appendSend(buf, c, d.unacked[c])
		d.out.MarkResent(c)
		for _, f := range d.fanout {
			f.MarkResent(c)
		}
	}
	d.mu.Unlock()
	if buf != nil {
		d.w.stats.resent.Add(int64(len(again)))
		_ = s.write(buf)
	}
}

// reconnect brings a dropped device back, with jittered backoff.
func (d *device) reconnect() {
	w := d.w
	backoff := 50 * time.Millisecond
	for w.ctx.Err() == nil && d.keep.Load() {
		time.Sleep(jitter(backoff))
		if _, err := d.connect(w.ctx); err == nil {
			w.stats.reconnects.Add(1)
			return
		} else if o, ok := err.(errOverloaded); ok {
			backoff = max(backoff, o.after)
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// countingConn counts the bytes that cross the socket (TLS records
// included).
type countingConn struct {
	net.Conn
	w        *Worker
	up, down atomic.Int64 // this connection's
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.stats.bytesDown.Add(int64(n))
	c.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.stats.bytesUp.Add(int64(n))
	c.up.Add(int64(n))
	return n, err
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// request sends a request frame (kind, with rid set by fill) and waits
// for the answer with that rid: its frame, or an Error frame.
func (s *session) request(ctx context.Context, kind protocol.Kind, fill func(rid uint32) proto.Message) (reply, error) {
	rid := s.d.rid.Add(1)
	ch := make(chan reply, 1)
	s.reqMu.Lock()
	if s.reqs == nil {
		s.reqs = map[uint32]chan reply{}
	}
	s.reqs[rid] = ch
	s.reqMu.Unlock()
	defer func() {
		s.reqMu.Lock()
		delete(s.reqs, rid)
		s.reqMu.Unlock()
	}()
	b, err := codec.AppendProto(nil, kind, fill(rid))
	if err != nil {
		return reply{}, err
	}
	if err := s.write(b); err != nil {
		return reply{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-s.done:
		return reply{}, fmt.Errorf("connection lost waiting for the answer to %v: %w", kind, s.loginErr)
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// answer hands f to the request waiting for rid; it reports whether one
// was.
func (s *session) answer(f codec.Frame, rid uint32) bool {
	s.reqMu.Lock()
	ch, ok := s.reqs[rid]
	delete(s.reqs, rid)
	s.reqMu.Unlock()
	if ok {
		ch <- reply{kind: f.Kind, body: append([]byte(nil), f.Body...)}
	}
	return ok
}

// firstVarint returns the value of field 1 of a protobuf body when it is
// a varint (the rid of an answer, the seq of an entry); 0 otherwise.
func firstVarint(b []byte) uint64 {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 1 || typ != protowire.VarintType {
		return 0
	}
	v, m := protowire.ConsumeVarint(b[n:])
	if m < 0 {
		return 0
	}
	return v
}
