package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/parley-im/parley/codec"
)

// Errors returned by Send and SetPeer.
var (
	// ErrQueueFull means the peer's queue is at QueueMessages or
	// QueueBytes: the message was not taken. The caller's retry path (an
	// outbox's resend) sends it again later; the peer is told of the gap.
	ErrQueueFull = errors.New("link: peer queue full")
	// ErrUnknownPeer means no address was set for the peer (SetPeer).
	ErrUnknownPeer = errors.New("link: unknown peer")
	// ErrTooLarge means the message exceeds Config.MaxMessage.
	ErrTooLarge = errors.New("link: message too large")
	// ErrClosed means the Link was closed.
	ErrClosed = errors.New("link: closed")
	// ErrType means the message type is 0, which the link reserves.
	ErrType = errors.New("link: message type 0 is reserved")
)

// Link is one node's end of its links to the other nodes of the cluster:
// it listens for peers, dials the peers it was given addresses for, and
// carries messages to them. See the package doc for the contract.
type Link struct {
	cfg    Config
	id     uint32
	ln     net.Listener
	server *tls.Config
	comp   *codec.Compressor
	dec    *codec.Decompressor
	hsSem  chan struct{} // inbound handshakes running
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// onAcked, if set (by tests, before SetPeer), is called after a peer's
	// confirmation was applied to its queue.
	onAcked func()

	mu     sync.RWMutex
	peers  map[uint32]*peer  // guarded by mu; a peer is never removed
	inbox  map[net.Conn]bool // raw inbound connections, guarded by mu
	closed bool              // guarded by mu
}

// New starts a Link: it listens on cfg.Addr at once and dials the peers
// later given to SetPeer. Close stops it.
func New(cfg Config) (*Link, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	comp, err := codec.NewCompressor()
	if err != nil {
		return nil, err
	}
	dec, err := codec.NewDecompressor(maxFrame)
	if err != nil {
		comp.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		comp.Close()
		dec.Close()
		return nil, fmt.Errorf("link: listen: %w", err)
	}
	l := &Link{
		cfg:   cfg,
		id:    cfg.Credentials.ID,
		ln:    ln,
		comp:  comp,
		dec:   dec,
		hsSem: make(chan struct{}, cfg.MaxHandshakes),
		peers: map[uint32]*peer{},
		inbox: map[net.Conn]bool{},
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.server = &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cfg.Credentials.Cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              cfg.Credentials.CA,
		SessionTicketsDisabled: true,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// clientTLS returns the TLS configuration for dialing peer: only a
// certificate of the cluster CA naming that peer is accepted.
func (l *Link) clientTLS(peer uint32) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{l.cfg.Credentials.Cert},
		RootCAs:      l.cfg.Credentials.CA,
		ServerName:   NodeName(peer),
	}
}

// ID returns this node's id.
func (l *Link) ID() uint32 { return l.id }

// Addr returns the address the Link listens on.
func (l *Link) Addr() net.Addr { return l.ln.Addr() }

// SetPeer sets the address of node id's link listener and keeps a link to
// it from then on, redialing after any failure; a new address replaces
// the old one (the current connection is dropped and the new address
// dialed, the queue kept). It never blocks.
func (l *Link) SetPeer(id uint32, addr string) error {
	if id == 0 || id == l.id {
		return fmt.Errorf("link: peer id %d (this node is %d)", id, l.id)
	}
	if addr == "" {
		return errors.New("link: empty peer address")
	}
	p, err := l.peer(id)
	if err != nil {
		return err
	}
	p.setAddr(addr)
	return nil
}

// RemovePeer stops dialing node id and drops what is queued for it; Send
// to it then returns ErrUnknownPeer until the next SetPeer. The peer may
// still dial this node, and its messages are still delivered.
func (l *Link) RemovePeer(id uint32) {
	l.mu.RLock()
	p := l.peers[id]
	l.mu.RUnlock()
	if p != nil {
		p.setAddr("")
	}
}

// peer returns node id's state, creating it.
func (l *Link) peer(id uint32) (*peer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	p := l.peers[id]
	if p == nil {
		p = newPeer(l, id)
		l.peers[id] = p
	}
	return p, nil
}

// Send queues a message of type typ (1–255) for node to. It copies body
// and never blocks: it returns ErrQueueFull when the peer's queue is full,
// ErrUnknownPeer when the peer has no address, ErrTooLarge, ErrType or
// ErrClosed. A nil error means the message will be delivered to the peer
// once, in order, unless the peer restarts first (package doc). Safe for
// concurrent use; messages sent by one goroutine are delivered in the
// order that goroutine sent them.
func (l *Link) Send(to uint32, typ uint8, body []byte) error {
	if typ == typeGap {
		return ErrType
	}
	if len(body) > l.cfg.MaxMessage {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), l.cfg.MaxMessage)
	}
	l.mu.RLock()
	p, closed := l.peers[to], l.closed
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if p == nil {
		return ErrUnknownPeer
	}
	return p.send(typ, body)
}

// PeerStatus describes the link towards one peer.
type PeerStatus struct {
	ID   uint32
	Addr string // "" when the peer only dials this node
	Up   bool   // a connection towards it is established
	Gen  uint32 // its boot generation last seen; 0 before the first hello
	// Queued and QueuedBytes are the messages (and their bytes) accepted
	// by Send and not yet confirmed by the peer.
	Queued, QueuedBytes int
	// Sent is the sequence of the last message accepted for the peer's
	// current generation, Acked the last it confirmed.
	Sent, Acked uint64
	// Received is the sequence of the last message delivered from it.
	Received uint64
	// BytesOut counts the bytes of frames written to it (compressed
	// where they were, before TLS), since the Link started; Writes counts
	// the TLS writes of batches that carried them.
	BytesOut, Writes uint64
}

// Peers returns the status of every peer the Link knows, in no order.
func (l *Link) Peers() []PeerStatus {
	l.mu.RLock()
	ps := make([]*peer, 0, len(l.peers))
	for _, p := range l.peers {
		ps = append(ps, p)
	}
	l.mu.RUnlock()
	out := make([]PeerStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.status())
	}
	return out
}

// Close stops the Link: it closes the listener and every connection, drops
// every queue and waits for its goroutines. Messages queued and not yet
// confirmed are lost (a node that stops loses its links' state; peers
// see its next start as a restart). Close is idempotent.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	peers := make([]*peer, 0, len(l.peers))
	for _, p := range l.peers {
		peers = append(peers, p)
	}
	for c := range l.inbox {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.cancel()
	err := l.ln.Close()
	for _, p := range peers {
		p.shutdown()
	}
	l.wg.Wait()
	l.comp.Close()
	l.dec.Close()
	return err
}

// isClosed reports whether Close has begun.
func (l *Link) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

// track records an inbound raw connection so Close can close it; it
// returns false (and closes c) if the Link is closing.
func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return false
	}
	l.inbox[c] = true
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.inbox, c)
	l.mu.Unlock()
	_ = c.Close()
}
