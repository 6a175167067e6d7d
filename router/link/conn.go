package link

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/parley-im/parley/codec"
)

// conn is one established link connection: TLS over a raw TCP
// connection, framed by codec. One goroutine reads, one writes.
type conn struct {
	raw       net.Conn // closed to end the connection (no close_notify: nothing waits on it)
	tls       *tls.Conn
	r         *codec.Reader
	deadAfter time.Duration
}

func newConn(l *Link, raw net.Conn, tc *tls.Conn) *conn {
	return &conn{raw: raw, tls: tc, r: codec.NewReader(tc, maxFrame, l.dec), deadAfter: l.cfg.DeadAfter}
}

// read reads the next frame; the connection is dead if nothing arrives
// for DeadAfter. The frame's body is valid until the next read.
func (c *conn) read() (codec.Frame, error) {
	if err := c.raw.SetReadDeadline(time.Now().Add(c.deadAfter)); err != nil {
		return codec.Frame{}, err
	}
	return c.r.ReadFrame()
}

// write writes b in one TLS write; the connection is dead if the peer
// takes more than DeadAfter to take it.
func (c *conn) write(b []byte) error {
	if err := c.raw.SetWriteDeadline(time.Now().Add(c.deadAfter)); err != nil {
		return err
	}
	_, err := c.tls.Write(b)
	return err
}

// dial connects to the peer at addr, authenticates both ends and
// exchanges hellos. On success the session is the peer's current one.
func (p *peer) dial(addr string) (*outSession, error) {
	l := p.l
	cfg := &l.cfg
	d := net.Dialer{Timeout: cfg.HandshakeTimeout}
	raw, err := d.DialContext(l.ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link: dial: %w", err)
	}
	// Registered at once so that Close and RemovePeer can interrupt the
	// handshake.
	p.mu.Lock()
	if p.addr != addr || l.isClosed() {
		p.mu.Unlock()
		_ = raw.Close()
		return nil, errors.New("link: peer address changed")
	}
	p.out = raw
	p.mu.Unlock()
	s, err := p.handshake(raw)
	if err != nil {
		p.mu.Lock()
		if p.out == raw {
			p.out = nil
		}
		p.mu.Unlock()
		_ = raw.Close()
		return nil, err
	}
	return s, nil
}

func (p *peer) handshake(raw net.Conn) (*outSession, error) {
	l := p.l
	if err := raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout)); err != nil {
		return nil, err
	}
	tc := tls.Client(raw, l.clientTLS(p.id))
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("link: TLS handshake with peer %d: %w", p.id, err)
	}
	c := newConn(l, raw, tc)
	if _, err := tc.Write(appendHello(nil, kindHello, hello{node: l.id, gen: l.cfg.Gen, target: uint64(p.id)})); err != nil {
		return nil, fmt.Errorf("link: hello to peer %d: %w", p.id, err)
	}
	f, err := c.r.ReadFrame()
	if err != nil {
		return nil, fmt.Errorf("link: welcome from peer %d: %w", p.id, err)
	}
	if f.Kind != kindWelcome {
		return nil, fmt.Errorf("%w: kind %d instead of a welcome", errWire, f.Kind)
	}
	w, err := parseHello(f.Body)
	if err != nil {
		return nil, err
	}
	if w.node != p.id {
		return nil, fmt.Errorf("link: dialed peer %d, welcome from %d", p.id, w.node)
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	p.recvMu.Lock()
	err = p.observeLocked(w.gen, raw)
	p.recvMu.Unlock()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out != raw {
		return nil, errors.New("link: session replaced during handshake")
	}
	// The peer delivered everything up to w.target: resume after it.
	if err := p.ackLocked(w.target); err != nil {
		return nil, fmt.Errorf("%w (was this node's Gen reused after a restart?)", err)
	}
	p.q.written = 0
	p.up = true
	signal(p.wake)
	return &outSession{conn: c, done: make(chan struct{})}, nil
}

// acceptLoop accepts inbound connections until the listener closes.
func (l *Link) acceptLoop() {
	defer l.wg.Done()
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.cfg.Logger.Error("link: accept", "err", err)
			return
		}
		select {
		case l.hsSem <- struct{}{}:
		default:
			l.cfg.Logger.Warn("link: too many inbound handshakes, connection closed", "remote", raw.RemoteAddr())
			_ = raw.Close()
			continue
		}
		if !l.track(raw) {
			<-l.hsSem
			continue
		}
		l.wg.Add(1)
		go l.serveInbound(raw)
	}
}

// inConn is an inbound connection once its peer is known: its reader
// delivers the peer's messages, its acker confirms them.
type inConn struct {
	*conn
	ackDue chan struct{} // cap 1
	done   chan struct{} // closed when the reader stops
}

func (ic *inConn) close() { _ = ic.raw.Close() }

// serveInbound authenticates an inbound connection, then reads the
// peer's batches until the connection fails.
func (l *Link) serveInbound(raw net.Conn) {
	defer l.wg.Done()
	defer l.untrack(raw)
	p, ic, err := l.acceptHandshake(raw)
	<-l.hsSem
	if err != nil {
		if !l.isClosed() {
			l.cfg.Logger.Warn("link: inbound connection refused", "remote", raw.RemoteAddr(), "err", err)
		}
		return
	}
	l.wg.Add(1)
	go p.ack(ic)
	err = p.receive(ic)
	close(ic.done)
	if !l.isClosed() {
		l.cfg.Logger.Debug("link: inbound connection ended", "peer", p.id, "err", err)
	}
}

func (l *Link) acceptHandshake(raw net.Conn) (*peer, *inConn, error) {
	if err := raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout)); err != nil {
		return nil, nil, err
	}
	tc := tls.Server(raw, l.server)
	if err := tc.Handshake(); err != nil {
		return nil, nil, fmt.Errorf("link: TLS handshake: %w", err)
	}
	id, err := NodeIDOf(tc.ConnectionState().PeerCertificates[0])
	if err != nil {
		return nil, nil, err
	}
	c := newConn(l, raw, tc)
	f, err := c.r.ReadFrame()
	if err != nil {
		return nil, nil, fmt.Errorf("link: hello from node %d: %w", id, err)
	}
	if f.Kind != kindHello {
		return nil, nil, fmt.Errorf("%w: kind %d instead of a hello", errWire, f.Kind)
	}
	h, err := parseHello(f.Body)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case h.node != id:
		return nil, nil, fmt.Errorf("link: hello names node %d, certificate node %d", h.node, id)
	case id == l.id:
		return nil, nil, fmt.Errorf("link: node %d dialed itself", id)
	case h.target != uint64(l.id):
		return nil, nil, fmt.Errorf("link: node %d meant to reach node %d, this is %d", id, h.target, l.id)
	}
	p, err := l.peer(id)
	if err != nil {
		return nil, nil, err
	}
	ic := &inConn{conn: c, ackDue: make(chan struct{}, 1), done: make(chan struct{})}
	p.recvMu.Lock()
	if err := p.observeLocked(h.gen, raw); err != nil {
		p.recvMu.Unlock()
		return nil, nil, err
	}
	if p.inConn != nil {
		p.inConn.close() // the peer redialed: its old connection is dead or dying
	}
	p.inConn = ic
	seq := p.recvSeq.Load()
	p.recvMu.Unlock()
	if _, err := tc.Write(appendHello(nil, kindWelcome, hello{node: l.id, gen: l.cfg.Gen, target: seq})); err != nil {
		return nil, nil, fmt.Errorf("link: welcome to node %d: %w", id, err)
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	return p, ic, nil
}

// receive delivers the batches of an inbound connection until it fails or
// another connection of the peer replaces it.
func (p *peer) receive(ic *inConn) error {
	cfg := &p.l.cfg
	for {
		f, err := ic.read()
		if err != nil {
			return err
		}
		switch f.Kind {
		case kindPing:
			continue
		case kindBatch:
		default:
			return fmt.Errorf("%w: kind %d from a dialer", errWire, f.Kind)
		}
		first, n := binary.Uvarint(f.Body)
		if n <= 0 {
			return fmt.Errorf("%w: batch without a sequence", errWire)
		}
		recs := f.Body[n:]
		p.recvMu.Lock()
		if p.inConn != ic {
			p.recvMu.Unlock()
			return errors.New("link: connection replaced")
		}
		next := p.recvSeq.Load() + 1
		if first > next && (len(recs) == 0 || recs[0] != typeGap) {
			// Only a gap marker may skip sequences: the sender dropped
			// what it had queued (RemovePeer).
			p.recvMu.Unlock()
			return fmt.Errorf("%w: batch from %d, expected %d", errWire, first, next)
		}
		for seq := first; len(recs) > 0; seq++ {
			typ, body, rest, err := nextRecord(recs)
			if err != nil {
				p.recvMu.Unlock()
				return err
			}
			recs = rest
			if seq < next {
				continue // already delivered before a reconnect
			}
			if typ == typeGap {
				if cfg.OnGap != nil {
					cfg.OnGap(p.id)
				}
			} else {
				cfg.OnMessage(p.id, typ, body)
			}
			p.recvSeq.Store(seq)
		}
		p.recvMu.Unlock()
		signal(ic.ackDue)
	}
}

// ackEvery is how many delivered messages the acker confirms at once,
// without waiting for AckDelay.
const ackEvery = 1024

// ack confirms what an inbound connection delivered: AckDelay after a
// batch (so that one Ack confirms all the batches of a burst), at once
// when ackEvery messages wait for it, and every Heartbeat as the
// acceptor's heartbeat.
func (p *peer) ack(ic *inConn) {
	defer p.l.wg.Done()
	cfg := &p.l.cfg
	tick := time.NewTicker(cfg.Heartbeat)
	defer tick.Stop()
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	defer delay.Stop()
	var buf []byte
	last, armed := p.recvSeq.Load(), false
	for {
		select {
		case <-ic.done:
			return
		case <-ic.ackDue:
			seq := p.recvSeq.Load()
			if seq == last {
				continue
			}
			if seq-last < ackEvery && cfg.AckDelay > 0 {
				if !armed {
					delay.Reset(cfg.AckDelay)
					armed = true
				}
				continue
			}
		case <-delay.C:
			armed = false
			if p.recvSeq.Load() == last {
				continue
			}
		case <-tick.C:
		}
		if armed {
			delay.Stop()
			armed = false
		}
		last = p.recvSeq.Load()
		if err := ic.write(appendAck(buf[:0], last)); err != nil {
			ic.close()
			return
		}
	}
}
