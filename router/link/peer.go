package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/codec"
)

// peer is this node's state for one other node: the queue of messages
// for it and the dialer that carries them (sending side), and the
// position in its stream of messages (receiving side).
//
// Lock order: recvMu before mu. recvMu is held while the handlers
// (OnMessage, OnGap, OnPeerRestart) run for this peer; mu is never held
// across I/O or a handler.
type peer struct {
	l  *Link
	id uint32

	wake chan struct{} // cap 1: the queue has something to write
	ctl  chan struct{} // cap 1: the address changed or the Link closes

	bytesOut atomic.Uint64 // bytes of frames written to the peer
	writes   atomic.Uint64 // TLS writes of batches to the peer

	recvMu  sync.Mutex
	inConn  *inConn       // the current inbound connection; guarded by recvMu
	recvSeq atomic.Uint64 // last sequence delivered from gen; written under recvMu

	mu      sync.Mutex
	gen     uint32   // the peer's boot generation last seen, 0 before any; guarded by mu
	addr    string   // where to dial it, "" for none; guarded by mu
	dialing bool     // a dialer goroutine runs; guarded by mu
	out     net.Conn // the raw outbound connection while a session runs; guarded by mu
	up      bool     // a session is established; guarded by mu
	q       queue    // guarded by mu
}

func newPeer(l *Link, id uint32) *peer {
	p := &peer{l: l, id: id, wake: make(chan struct{}, 1), ctl: make(chan struct{}, 1)}
	p.q.reset()
	return p
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// queue holds the messages accepted for the peer and not yet confirmed,
// encoded as batch records in chunks. chunks[:written] were written on
// the current connection; the others wait for the writer. A chunk handed
// to the writer is sealed and never changes again; confirmed chunks are
// dropped (the writer may still hold them: they are not reused).
type queue struct {
	chunks  []*chunk
	written int
	next    uint64 // sequence the next record gets
	acked   uint64 // the peer confirmed every record up to here
	count   int    // records in chunks
	bytes   int    // bytes of records in chunks
	gap     bool   // a message was refused since the last record
}

type chunk struct {
	first  uint64 // sequence of the first record
	n      int    // records
	buf    []byte // the records
	sealed bool
}

func (q *queue) reset() {
	*q = queue{next: 1}
}

// drop discards every record, keeping the sequence: the records count as
// confirmed, and a gap marker precedes the next one if any was unconfirmed.
func (q *queue) drop() {
	if q.count > 0 {
		q.gap = true
	}
	*q = queue{next: q.next, acked: q.next - 1, gap: q.gap}
}

// append appends one record to the open chunk, or to a new one.
func (q *queue) append(typ uint8, body []byte, batchBytes int) {
	rec := recordLen(len(body))
	var c *chunk
	if n := len(q.chunks); n > 0 && !q.chunks[n-1].sealed && len(q.chunks[n-1].buf)+rec <= batchBytes {
		c = q.chunks[n-1]
	} else {
		c = &chunk{first: q.next, buf: make([]byte, 0, min(max(rec, 512), batchBytes))}
		q.chunks = append(q.chunks, c)
	}
	c.buf = appendRecord(c.buf, typ, body)
	c.n++
	q.next++
	q.count++
	q.bytes += rec
}

// ack drops the chunks the peer confirmed up to seq.
func (q *queue) ack(seq uint64) {
	if seq <= q.acked {
		return
	}
	q.acked = seq
	drop := 0
	for _, c := range q.chunks {
		if c.first+uint64(c.n)-1 > seq {
			break
		}
		q.count -= c.n
		q.bytes -= len(c.buf)
		drop++
	}
	clear(q.chunks[:drop])
	q.chunks = q.chunks[drop:]
	q.written = max(q.written-drop, 0)
}

// send queues a message for the peer (Link.Send).
func (p *peer) send(typ uint8, body []byte) error {
	cfg := &p.l.cfg
	p.mu.Lock()
	if p.addr == "" {
		// A peer that only dialed this node (its address not known yet):
		// the refused message leaves a gap in the stream, as a full
		// queue does, so the peer learns that it missed something once
		// this node can reach it.
		p.q.gap = true
		p.mu.Unlock()
		return ErrUnknownPeer
	}
	need, recs := recordLen(len(body)), 1
	if p.q.gap {
		need, recs = need+recordLen(0), 2
	}
	if p.q.count+recs > cfg.QueueMessages || p.q.bytes+need > cfg.QueueBytes {
		p.q.gap = true
		p.mu.Unlock()
		return ErrQueueFull
	}
	if p.q.gap {
		p.q.append(typeGap, nil, cfg.BatchBytes)
		p.q.gap = false
	}
	p.q.append(typ, body, cfg.BatchBytes)
	p.mu.Unlock()
	signal(p.wake)
	return nil
}

// ackLocked handles the peer's confirmation up to seq on the current
// session (an older one is ignored: the queue may have dropped records
// unconfirmed). A gap still unsignalled is queued now that there is room,
// so the peer learns of it even if nothing else is sent.
func (p *peer) ackLocked(seq uint64) error {
	if seq >= p.q.next {
		return fmt.Errorf("%w: peer %d confirms %d, sent %d, confirmed %d", errWire, p.id, seq, p.q.next-1, p.q.acked)
	}
	p.q.ack(seq)
	if p.q.gap && p.q.count < p.l.cfg.QueueMessages {
		p.q.append(typeGap, nil, p.l.cfg.BatchBytes)
		p.q.gap = false
		signal(p.wake)
	}
	return nil
}

// setAddr sets the dial address ("" stops dialing and drops the queue)
// and starts the dialer if none runs.
func (p *peer) setAddr(addr string) {
	p.mu.Lock()
	changed := p.addr != addr
	p.addr = addr
	if addr == "" {
		p.q.drop()
	}
	start := addr != "" && !p.dialing
	if start {
		// Under Link.mu, so that Close either sees this dialer in its
		// WaitGroup or the dialer is never started.
		p.l.mu.RLock()
		if start = !p.l.closed; start {
			p.dialing = true
			p.l.wg.Add(1)
		}
		p.l.mu.RUnlock()
	}
	out := p.out
	p.mu.Unlock()
	if changed && out != nil {
		_ = out.Close() // the session ends; the dialer picks up the new address
	}
	signal(p.ctl)
	if start {
		go p.dialLoop()
	}
}

// shutdown closes the peer's connections for Link.Close.
func (p *peer) shutdown() {
	p.mu.Lock()
	out := p.out
	p.mu.Unlock()
	if out != nil {
		_ = out.Close()
	}
	p.recvMu.Lock()
	if p.inConn != nil {
		p.inConn.close()
	}
	p.recvMu.Unlock()
	signal(p.ctl)
}

// observeLocked records the peer's generation gen, seen in a hello or a
// welcome on connection self; recvMu must be held. A generation older
// than the one known is stale (an error). A newer one means the peer
// restarted: the queue and the receive position are reset, the other
// connections to it closed, and OnPeerRestart called (unless it is the
// first generation seen).
func (p *peer) observeLocked(gen uint32, self net.Conn) error {
	p.mu.Lock()
	old := p.gen
	switch {
	case gen == old:
		p.mu.Unlock()
		return nil
	case gen < old:
		p.mu.Unlock()
		return fmt.Errorf("link: peer %d shows generation %d, older than %d", p.id, gen, old)
	}
	p.gen = gen
	var out net.Conn
	if old != 0 {
		p.q.reset()
		if p.out != self {
			out, p.out = p.out, nil
		}
	}
	p.mu.Unlock()
	if old == 0 {
		return nil
	}
	if out != nil {
		_ = out.Close()
	}
	if p.inConn != nil && p.inConn.raw != self {
		p.inConn.close()
		p.inConn = nil
	}
	p.recvSeq.Store(0)
	p.l.cfg.Logger.Info("link: peer restarted", "peer", p.id, "old_gen", old, "gen", gen)
	if f := p.l.cfg.OnPeerRestart; f != nil {
		f(p.id, old, gen)
	}
	return nil
}

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PeerStatus{
		ID: p.id, Addr: p.addr, Up: p.up, Gen: p.gen,
		Queued: p.q.count, QueuedBytes: p.q.bytes,
		Sent: p.q.next - 1, Acked: p.q.acked,
		Received: p.recvSeq.Load(), BytesOut: p.bytesOut.Load(), Writes: p.writes.Load(),
	}
}

// dialLoop keeps a session with the peer while it has an address: dial,
// run the session until it fails, wait a jittered backoff, dial again.
func (p *peer) dialLoop() {
	defer p.l.wg.Done()
	cfg := &p.l.cfg
	attempt := 0
	for {
		// A signal from before this attempt is stale: the attempt reads
		// the address now. One arriving during it cuts the backoff after.
		select {
		case <-p.ctl:
		default:
		}
		p.mu.Lock()
		addr := p.addr
		if addr == "" || p.l.isClosed() {
			p.dialing = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		s, err := p.dial(addr)
		if err == nil {
			start := time.Now()
			err = p.run(s)
			if time.Since(start) >= cfg.DeadAfter {
				attempt = 0
				continue // the session worked for a while: redial at once
			}
			// A session the peer ended at once counts as a failed attempt,
			// so a peer refusing every session is redialed with backoff.
		}
		if !p.l.isClosed() {
			cfg.Logger.Debug("link: no session", "peer", p.id, "addr", addr, "err", err)
		}
		d := backoff(cfg, attempt)
		attempt = min(attempt+1, 30)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-p.ctl:
			t.Stop()
		case <-p.l.ctx.Done():
			t.Stop()
		}
	}
}

// backoff returns the delay before dial attempt n+1 after n failures:
// BackoffMin doubled n times, capped at BackoffMax, less a uniform random
// part of its second half.
func backoff(cfg *Config, n int) time.Duration {
	d := cfg.BackoffMax
	if n < 30 && cfg.BackoffMin<<n < cfg.BackoffMax {
		d = cfg.BackoffMin << n
	}
	if half := int64(d / 2); half > 0 {
		d -= time.Duration(cfg.Rand(half))
	}
	return d
}

// outSession is an established outbound connection.
type outSession struct {
	conn *conn
	done chan struct{} // closed when the ack reader stops
	err  error         // why the ack reader stopped; read after done
}

// run carries the queue to the peer until the session fails, and returns
// why it did.
func (p *peer) run(s *outSession) error {
	cfg := &p.l.cfg
	p.l.wg.Add(1)
	go p.readAcks(s)
	if f := cfg.OnPeerState; f != nil {
		f(p.id, true)
	}
	cfg.Logger.Info("link: peer up", "peer", p.id)
	err := p.write(s)
	_ = s.conn.raw.Close()
	<-s.done
	if err == nil {
		err = s.err
	}
	p.mu.Lock()
	if p.out == s.conn.raw {
		p.out = nil
	}
	p.up = false
	p.mu.Unlock()
	if !p.l.isClosed() {
		cfg.Logger.Info("link: peer down", "peer", p.id, "err", err)
	}
	if f := cfg.OnPeerState; f != nil {
		f(p.id, false)
	}
	return err
}

// write is the session's writer: it writes what the queue holds as batch
// frames as soon as it can (what accumulates meanwhile is the next
// batch), and a ping when it wrote nothing for a heartbeat.
func (p *peer) write(s *outSession) error {
	cfg := &p.l.cfg
	tick := time.NewTicker(cfg.Heartbeat)
	defer tick.Stop()
	var (
		buf, scratch, body []byte
		todo               []*chunk
		wrote              bool
	)
	for {
		p.mu.Lock()
		if p.out != s.conn.raw {
			p.mu.Unlock()
			return errors.New("link: session replaced")
		}
		todo = append(todo[:0], p.q.chunks[p.q.written:]...)
		for _, c := range todo {
			c.sealed = true
		}
		p.q.written = len(p.q.chunks)
		acked := p.q.acked
		p.mu.Unlock()

		buf = buf[:0]
		for i, c := range todo {
			skip := 0
			if acked >= c.first {
				skip = int(acked - c.first + 1)
			}
			body = binary.AppendUvarint(body[:0], c.first+uint64(skip))
			body = append(body, skipRecords(c.buf, skip)...)
			if cfg.CompressMin > 0 && len(c.buf) >= cfg.CompressMin {
				buf, scratch = p.l.comp.AppendFrame(buf, scratch, kindBatch, body)
			} else {
				buf = codec.AppendFrame(buf, kindBatch, body)
			}
			todo[i] = nil
			if len(buf) >= 4*cfg.BatchBytes || i == len(todo)-1 {
				if err := s.conn.write(buf); err != nil {
					return err
				}
				p.bytesOut.Add(uint64(len(buf)))
				p.writes.Add(1)
				buf, wrote = buf[:0], true
			}
		}
		select {
		case <-p.wake:
		case <-tick.C:
			if !wrote {
				if err := s.conn.write(codec.AppendFrame(buf[:0], kindPing, nil)); err != nil {
					return err
				}
			}
			wrote = false
		case <-s.done:
			return s.err
		}
	}
}

// readAcks reads the peer's acks and heartbeats on an outbound session.
func (p *peer) readAcks(s *outSession) {
	defer p.l.wg.Done()
	defer close(s.done)
	for {
		f, err := s.conn.read()
		if err != nil {
			s.err = err
			return
		}
		if f.Kind != kindAck {
			s.err = fmt.Errorf("%w: kind %d from an acceptor", errWire, f.Kind)
			return
		}
		seq, err := parseAck(f.Body)
		if err == nil {
			p.mu.Lock()
			if p.out == s.conn.raw {
				err = p.ackLocked(seq)
			}
			p.mu.Unlock()
			if p.l.onAcked != nil {
				p.l.onAcked()
			}
		}
		if err != nil {
			s.err = err
			_ = s.conn.raw.Close()
			return
		}
	}
}
