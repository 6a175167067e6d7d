package tls13

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Config configures a Server. The zero value of every field but TLS means
// its default.
type Config struct {
	// TLS holds the certificates and any other server settings. NewServer
	// clones it and then forces MinVersion and MaxVersion to TLS 1.3 and
	// its own per-handshake KeyLogWriter and session ticket keys (see
	// TicketSecret); a GetConfigForClient callback keeps working, with the
	// same settings forced on its result. Session resumption (PSK with
	// (EC)DHE, one ticket per handshake, no 0-RTT) is on unless
	// TLS.SessionTicketsDisabled is set. Required.
	TLS *tls.Config

	// TicketSecret is the 32-byte secret the session ticket keys are
	// derived from: the key of rotation period p (Unix time divided by
	// TicketRotation) is HKDF-SHA256 of the secret with p (see ticketKey).
	// Tickets are encrypted under the current period's key and accepted
	// under the current and the previous one, so a ticket resumes for at
	// least one period and at most two. The same secret on every start
	// (and on every node behind one name) lets tickets survive restarts.
	// Nil means 32 random bytes drawn by NewServer (from TLS.Rand, or
	// crypto/rand), so tickets die with the Server.
	TicketSecret []byte

	// TicketRotation is the period of the ticket key. Zero means 24h.
	TicketRotation time.Duration

	// MaxHandshakes bounds the handshake goroutines running at once. A
	// connection takes a slot only once its whole ClientHello has arrived
	// (so a client that sends part of one and stalls holds none); while
	// all slots are taken it waits, its bytes left in gnet's buffer, until
	// a slot frees. Zero means 256.
	MaxHandshakes int

	// HandshakeTimeout bounds a handshake, counted from the moment the
	// whole ClientHello has arrived, including time spent waiting for a
	// slot. It bounds the handshake goroutine; the time a client may take
	// to send its ClientHello is the caller's to bound (the package has no
	// timers: see Conn.HelloReceived). Zero means 10s.
	HandshakeTimeout time.Duration

	// MaxHandshakesPerSource bounds the handshakes running or waiting for
	// a slot at once for one source (see Source). A connection whose
	// ClientHello would go over it fails with ErrTooManyHandshakes. Zero
	// means 16; it has no effect without Source.
	MaxHandshakesPerSource int

	// Source maps a client's address to the source its handshakes are
	// counted under for MaxHandshakesPerSource, for example its IP
	// address; the zero netip.Addr is not limited. It is called on the
	// event loop once per connection, when the ClientHello is complete.
	// Nil means no per-source limit.
	Source func(remote net.Addr) netip.Addr

	// MaxHandshakeInput caps, in bytes, the ciphertext a client may have
	// buffered (in gnet's buffer and ours) before the server has sent its
	// Finished: its ClientHello, possibly twice after a HelloRetryRequest.
	// A ClientHello that declares more is refused before it has arrived.
	// Zero means 16 KiB.
	MaxHandshakeInput int

	// MaxPipelinedInput caps, in bytes, the ciphertext buffered after the
	// server has sent its Finished and before the handshake goroutine has
	// read the client's: the client's last flight plus any application data
	// it writes right behind it, which waits in gnet's buffer for the record
	// layer. It is separate from MaxHandshakeInput so that a client that
	// sends a large first burst the moment its handshake completes is not
	// cut off. Zero means 256 KiB.
	MaxPipelinedInput int
}

const (
	defaultMaxHandshakes     = 256
	defaultMaxPerSource      = 16
	defaultHandshakeTimeout  = 10 * time.Second
	defaultMaxHandshakeInput = 16 << 10
	defaultMaxPipelinedInput = 256 << 10
	defaultTicketRotation    = 24 * time.Hour
	ticketSecretLen          = 32
)

// validate reports every problem with c at once.
func (c *Config) validate() error {
	var errs []error
	if c.TLS == nil {
		errs = append(errs, errors.New("tls13: Config.TLS is nil"))
	} else if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil {
		errs = append(errs, errors.New("tls13: Config.TLS has no certificate (Certificates, GetCertificate or GetConfigForClient)"))
	}
	if c.MaxHandshakes < 0 {
		errs = append(errs, errors.New("tls13: Config.MaxHandshakes is negative"))
	}
	if c.MaxHandshakesPerSource < 0 {
		errs = append(errs, errors.New("tls13: Config.MaxHandshakesPerSource is negative"))
	}
	if c.HandshakeTimeout < 0 {
		errs = append(errs, errors.New("tls13: Config.HandshakeTimeout is negative"))
	}
	if c.MaxHandshakeInput < 0 {
		errs = append(errs, errors.New("tls13: Config.MaxHandshakeInput is negative"))
	} else if c.MaxHandshakeInput > 0 && c.MaxHandshakeInput < recordHeaderLen+maxPlaintext/8 {
		errs = append(errs, errors.New("tls13: Config.MaxHandshakeInput is below 2 KiB, too small for a ClientHello"))
	}
	if c.TicketSecret != nil && len(c.TicketSecret) != ticketSecretLen {
		errs = append(errs, fmt.Errorf("tls13: Config.TicketSecret is %d bytes, want %d", len(c.TicketSecret), ticketSecretLen))
	}
	if c.TicketRotation < 0 {
		errs = append(errs, errors.New("tls13: Config.TicketRotation is negative"))
	} else if c.TicketRotation > 0 && c.TicketRotation < time.Minute {
		errs = append(errs, errors.New("tls13: Config.TicketRotation is below one minute"))
	}
	if c.MaxPipelinedInput < 0 {
		errs = append(errs, errors.New("tls13: Config.MaxPipelinedInput is negative"))
	} else if c.MaxPipelinedInput > 0 && c.MaxPipelinedInput < recordHeaderLen+maxCiphertext {
		errs = append(errs, errors.New("tls13: Config.MaxPipelinedInput is below one full record (16,645 bytes)"))
	}
	return errors.Join(errs...)
}

// Server holds what the connections of one listener share: the TLS
// configuration and the bound on concurrent handshakes. Its methods are
// safe for concurrent use.
type Server struct {
	tls          *tls.Config // immutable after NewServer; cloned per handshake
	max          int
	maxPerSource int
	source       func(net.Addr) netip.Addr // nil: no per-source limit
	timeout      time.Duration
	maxInput     int
	maxPipelined int
	rekeyAfter   uint64           // records per sending key; tests lower it
	now          func() time.Time // the clock for handshake deadlines and ticket key periods
	tickets      *ticketKeys      // nil when session tickets are disabled

	ctx    context.Context // canceled by Close; parent of every handshake
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running handshake goroutine

	mu         sync.Mutex
	closed     bool                 // guarded by mu
	active     int                  // guarded by mu: slots held by running or granted handshakes
	waiting    int                  // guarded by mu: handshakes in the queue
	head, tail *handshake           // guarded by mu: FIFO of handshakes waiting for a slot
	sources    map[netip.Addr]int32 // guarded by mu: handshakes running or waiting, per limited source
}

// NewServer validates cfg and returns a Server. It starts no goroutine.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		tls:          forceSettings(cfg.TLS.Clone()),
		max:          cfg.MaxHandshakes,
		maxPerSource: cfg.MaxHandshakesPerSource,
		source:       cfg.Source,
		sources:      make(map[netip.Addr]int32),
		timeout:      cfg.HandshakeTimeout,
		maxInput:     cfg.MaxHandshakeInput,
		maxPipelined: cfg.MaxPipelinedInput,
		rekeyAfter:   defaultRekeyAfter,
		now:          time.Now,
	}
	if s.max == 0 {
		s.max = defaultMaxHandshakes
	}
	if s.maxPerSource == 0 {
		s.maxPerSource = defaultMaxPerSource
	}
	if s.timeout == 0 {
		s.timeout = defaultHandshakeTimeout
	}
	if s.maxInput == 0 {
		s.maxInput = defaultMaxHandshakeInput
	}
	if s.maxPipelined == 0 {
		s.maxPipelined = defaultMaxPipelinedInput
	}
	if !s.tls.SessionTicketsDisabled {
		tk, err := newTicketKeys(cfg.TicketSecret, cfg.TicketRotation, s.tls.Rand)
		if err != nil {
			return nil, err
		}
		s.tickets = tk
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func forceSettings(c *tls.Config) *tls.Config {
	c.MinVersion = tls.VersionTLS13
	c.MaxVersion = tls.VersionTLS13
	c.KeyLogWriter = nil
	return c
}

// NewConn returns the TLS state for a connection gnet just opened; call it
// from OnOpen. It starts no goroutine and costs one small allocation.
func (s *Server) NewConn() *Conn {
	return &Conn{srv: s}
}

// Close cancels running handshakes, fails the connections waiting for a
// handshake slot (their next Feed returns ErrHandshake) and waits for the
// handshake goroutines to exit. Established connections are unaffected.
// Handshake goroutines need nothing from the event loops to exit, so Close
// may be called from any goroutine, a loop included. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for h := s.head; h != nil; h = h.next {
		h.queued = false
		_ = h.gc.Wake(nil) // Feed then sees closed and fails the connection
	}
	s.head, s.tail, s.waiting = nil, nil, 0
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Slots reports the handshake slots in use (running handshakes, and
// granted ones about to start) and the handshakes waiting for one. It is
// safe for concurrent use; the figures may be stale as soon as it returns.
func (s *Server) Slots() (busy, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active, s.waiting
}

// errServerClosed is the cause wrapped in ErrHandshake when a handshake
// cannot start, or is cancelled, because Close was called.
var errServerClosed = errors.New("server closed")

// claim reports whether h holds a handshake slot, taking a free one or
// putting h in the queue on its first call; the caller then calls start.
// Loop only.
func (s *Server) claim(h *handshake) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.granted {
		return true, nil
	}
	if s.closed {
		return false, errServerClosed
	}
	if h.queued {
		return false, nil
	}
	if h.source.IsValid() && !h.counted {
		if int(s.sources[h.source]) >= s.maxPerSource {
			return false, ErrTooManyHandshakes
		}
		s.sources[h.source]++
		h.counted = true
	}
	if s.active < s.max && s.head == nil {
		s.active++
		h.granted = true
		return true, nil
	}
	h.queued = true
	h.prev, h.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = h
	} else {
		s.head = h
	}
	s.tail = h
	s.waiting++
	return false, nil
}

// start runs h's goroutine on the slot h was granted. Loop only.
func (s *Server) start(h *handshake) error {
	s.mu.Lock()
	if s.closed {
		s.releaseLocked(h)
		h.granted = false
		s.mu.Unlock()
		return errServerClosed
	}
	h.started = true
	s.wg.Add(1)
	s.mu.Unlock()
	go h.run(s.configFor(h))
	return nil
}

// forget removes h from the queue, or gives back a slot h was granted but
// never used, and stops counting h against its source. A started
// handshake keeps its slot and its count until its goroutine exits. Loop
// only.
func (s *Server) forget(h *handshake) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case h.started:
		return
	case h.queued:
		if h.prev != nil {
			h.prev.next = h.next
		} else {
			s.head = h.next
		}
		if h.next != nil {
			h.next.prev = h.prev
		} else {
			s.tail = h.prev
		}
		h.prev, h.next, h.queued = nil, nil, false
		s.waiting--
		s.uncountLocked(h)
	case h.granted:
		h.granted = false
		s.releaseLocked(h)
	default:
		s.uncountLocked(h)
	}
}

// release gives back the slot of h, whose goroutine is exiting.
func (s *Server) release(h *handshake) {
	s.mu.Lock()
	s.releaseLocked(h)
	s.mu.Unlock()
}

// uncountLocked stops counting h against its source. s.mu must be held.
func (s *Server) uncountLocked(h *handshake) {
	if !h.counted {
		return
	}
	h.counted = false
	if n := s.sources[h.source] - 1; n > 0 {
		s.sources[h.source] = n
	} else {
		delete(s.sources, h.source)
	}
}

// releaseLocked takes back the slot old held, stops counting old against
// its source, and hands the slot to the first waiting handshake, waking
// its connection, or returns it to the pool. s.mu must be held.
func (s *Server) releaseLocked(old *handshake) {
	s.uncountLocked(old)
	h := s.head
	if h == nil || s.closed {
		s.active--
		return
	}
	s.head = h.next
	if s.head != nil {
		s.head.prev = nil
	} else {
		s.tail = nil
	}
	h.prev, h.next, h.queued = nil, nil, false
	s.waiting--
	h.granted = true
	// A queued h has not been closed: Conn.Close dequeues under s.mu.
	_ = h.gc.Wake(nil)
}

// configFor returns the crypto/tls configuration for one handshake: the
// server's, with h capturing the traffic secrets and the ticket keys of
// the current and previous periods. (A clone made before crypto/tls has
// generated its automatic ticket keys would generate its own, so that no
// ticket would ever resume: the keys are always set here.)
func (s *Server) configFor(h *handshake) *tls.Config {
	var keys [][32]byte
	if s.tickets != nil {
		keys = s.tickets.current(s.now())
	}
	finish := func(c *tls.Config) {
		c.KeyLogWriter = (*keyLogWriter)(h)
		if keys != nil && !c.SessionTicketsDisabled {
			c.SetSessionTicketKeys(keys)
		}
	}
	cfg := s.tls.Clone()
	finish(cfg)
	if user := cfg.GetConfigForClient; user != nil {
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := user(hello)
			if c == nil || err != nil {
				return c, err
			}
			c = forceSettings(c.Clone())
			finish(c)
			return c, nil
		}
	}
	return cfg
}
