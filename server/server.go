package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/tls13"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// Server accepts client connections and runs their protocol.
type Server struct {
	gnet.BuiltinEventEngine

	cfg   Config
	log   *slog.Logger
	tls   *tls13.Server // nil in plaintext mode
	wheel *wheel
	bufs  bufPool

	booted   chan struct{} // closed once the engine runs and the listener is open
	addr     net.Addr      // set before booted is closed; nil if the server failed to start
	eng      gnet.Engine   // set in OnBoot, before booted is closed
	acc      *acceptor     // set before booted is closed
	running  chan struct{} // closed by the first OnTick: the event loops are up
	runOnce  sync.Once
	stopping atomic.Bool
	stopOnce sync.Once
	stopErr  error // set by stopOnce

	stats Stats
	// The rate limits kept across connections (ratelimit.go).
	lookups    *keyedBudgets[uint64]     // LOOKUP by account
	keyFetches *keyedBudgets[uint64]     // KEYS_FETCH by account
	sends      *keyedBudgets[uint64]     // 1:1 SEND by account
	groupSends *keyedBudgets[uint64]     // group SEND by account
	links      *keyedBudgets[netip.Addr] // LINK_REQUEST by client address
	codes      codeLimits                // REQUEST_CODE that costs an SMS
	// lookupIDs numbers the LOOKUPs of every connection (Op.Seq), so a
	// connection needs no counter of its own.
	lookupIDs atomic.Uint64
}

// Stats are the server's counters since start. Every field is read with
// its Load method.
type Stats struct {
	Accepted       atomic.Uint64 // connections accepted
	Open           atomic.Int64  // connections open now
	Authenticated  atomic.Int64  // connections logged in now
	FramesIn       atomic.Uint64 // frames received
	FramesOut      atomic.Uint64 // frames sent (Batch counts once)
	BytesIn        atomic.Uint64 // bytes received, before decryption
	BytesOut       atomic.Uint64 // bytes sent, after encryption
	Handshakes     atomic.Uint64 // TLS handshakes completed
	HandshakeFails atomic.Uint64 // TLS handshakes failed, refused or timed out
	// Closed counts connections closed by the server, by connection-scope
	// error code.
	Closed [32]atomic.Uint64
	// ErrorsSent counts Error frames sent, by code (the last counts every
	// code beyond it); see countFrames.
	ErrorsSent [128]atomic.Uint64

	// Connections reset on arrival, before any byte was read, by cause.
	RefusedMaxConns atomic.Uint64 // Config.MaxConns reached
	RefusedPerIP    atomic.Uint64 // Config.MaxConnsPerIP reached for the client's address
	RefusedFDLimit  atomic.Uint64 // shed while the process had no file descriptor left
	// RefusedHandshakesPerIP counts connections closed when their
	// ClientHello went over Config.MaxHandshakesPerIP.
	RefusedHandshakesPerIP atomic.Uint64
	// AcceptErrors counts failed accepts (EMFILE, ENFILE, ENOBUFS …); each
	// pauses accepting for 5 ms to 1 s, never stops it.
	AcceptErrors atomic.Uint64
	// HelloTimeouts counts connections closed for not sending their whole
	// ClientHello within Config.ClientHelloTimeout of the accept.
	HelloTimeouts atomic.Uint64
	// HandshakeTimeouts counts connections closed for not completing the
	// TLS handshake within Config.HandshakeTimeout of the accept.
	HandshakeTimeouts atomic.Uint64
	// RateLimited counts requests and SENDs refused RATE_LIMITED, by the
	// limit that refused them; a SEND held back behind a refused one
	// ([S-8-13]) counts under that one's limit.
	RateLimited [NumLimits]atomic.Uint64
	// HeldSends counts SENDs refused behind an earlier retriable refusal
	// of the same connection and conversation ([S-8-13]).
	HeldSends atomic.Uint64
}

// New returns a Server for cfg. Serve starts it.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		booted:     make(chan struct{}),
		running:    make(chan struct{}),
		lookups:    newKeyedBudgets[uint64](Budget{PerSecond: float64(cfg.LookupsPerMinute) / 60, Burst: cfg.LookupsPerMinute}),
		keyFetches: newKeyedBudgets[uint64](Budget{PerSecond: float64(cfg.KeyFetchesPerMinute) / 60, Burst: cfg.KeyFetchesPerMinute}),
		sends:      newKeyedBudgets[uint64](cfg.Sends),
		groupSends: newKeyedBudgets[uint64](cfg.GroupSends),
		links:      newKeyedBudgets[netip.Addr](cfg.LinksPerIP),
		codes: codeLimits{
			perIP:     newKeyedBudgets[netip.Addr](cfg.CodesPerIP),
			perPrefix: newKeyedBudgets[string](cfg.CodesPerPrefix),
			node:      cfg.CodesPerNode.limiter(),
			digits:    cfg.CodePrefixDigits,
		},
	}
	s.wheel = newWheel(s)
	if !cfg.Plaintext {
		t, err := tls13.NewServer(tls13.Config{
			TLS:                    cfg.TLS,
			TicketSecret:           cfg.TicketSecret,
			TicketRotation:         cfg.TicketRotation,
			MaxHandshakes:          cfg.MaxHandshakes,
			HandshakeTimeout:       cfg.HandshakeTimeout,
			MaxHandshakesPerSource: cfg.MaxHandshakesPerIP,
			Source:                 s.limitKey,
		})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		s.tls = t
	}
	return s, nil
}

// Serve listens and serves until Shutdown; it returns the engine's error,
// nil after a clean Shutdown.
func (s *Server) Serve() error {
	err := s.serve()
	if s.tls != nil {
		s.tls.Close()
	}
	select {
	case <-s.booted:
	default:
		close(s.booted) // failed before boot: unblock Addr
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

func (s *Server) serve() error {
	lc := net.ListenConfig{KeepAlive: -1} // as gnet: no TCP keep-alive timers per idle connection
	ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	acc := newAcceptor(s, ln.(*net.TCPListener))
	ran := make(chan error, 1)
	go func() {
		// gnet gets no TCP listener of its own: the acceptor hands it
		// connections. Its engine refuses to work (Register, Stop) without
		// some listener, so each loop gets a loopback UDP socket it never
		// needs: UDP has no accept, so nothing there can end the engine,
		// and a stray datagram only reaches OnTraffic, which ignores it.
		err := gnet.Run(s, "udp4://127.0.0.1:0",
			gnet.WithMulticore(s.cfg.Loops > 1),
			gnet.WithNumEventLoop(s.cfg.Loops),
			gnet.WithLoadBalancing(gnet.LeastConnections), // Engine.Register needs one other than RoundRobin
			gnet.WithTicker(true),
			gnet.WithLogger(gnetLogger{s.log}),
		) // TCP_NODELAY needs no option: Go's accept sets it
		acc.close() // the engine is gone: stop accepting
		ran <- err
	}()
	select {
	case <-s.running:
	case err := <-ran:
		acc.close()
		acc.run() // returns at once: only releases the spare descriptor
		return err
	}
	s.acc, s.addr = acc, ln.Addr()
	close(s.booted)
	s.log.Info("listening", "addr", s.addr.String(), "tls", s.tls != nil, "loops", s.cfg.Loops,
		"max_conns", s.cfg.MaxConns, "max_conns_per_ip", s.cfg.MaxConnsPerIP)
	acc.run()
	return <-ran
}

// Addr waits until the server listens and returns its address, or nil if
// it failed to start.
func (s *Server) Addr() net.Addr {
	<-s.booted
	return s.addr
}

// Stats returns the server's live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// MaxConns returns the connection cap in force (Config.MaxConns, or the
// value derived from the open-file limit).
func (s *Server) MaxConns() int { return s.cfg.MaxConns }

// HandshakeSlots reports the TLS handshake slots in use and the
// handshakes waiting for one (both 0 in plaintext mode). It is safe for
// concurrent use.
func (s *Server) HandshakeSlots() (busy, waiting int) {
	if s.tls == nil {
		return 0, 0
	}
	return s.tls.Slots()
}

// Shutdown stops the server gracefully: new connections are refused, every
// client gets GoAway with a jittered reconnect delay, and after the
// clients leave (or ShutdownGrace or ctx ends) the engine stops. Shards
// are the caller's to close afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	<-s.booted
	if s.addr == nil {
		return nil
	}
	s.stopping.Store(true)
	s.acc.close()
	select { // every accepted connection has reached its loop (or failed)
	case <-s.acc.done:
	case <-ctx.Done():
	}
	for _, c := range s.wheel.all() {
		c.Close(protocol.CodeShuttingDown)
	}
	grace := time.NewTimer(s.cfg.ShutdownGrace)
	defer grace.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.stats.Open.Load() > 0 {
		select {
		case <-tick.C:
		case <-grace.C:
			return s.stopEngine(ctx)
		case <-ctx.Done():
			_ = s.stopEngine(context.Background())
			return ctx.Err()
		}
	}
	return s.stopEngine(ctx)
}

// CloseUsers closes, with code, every authenticated connection for which
// match, given the connection's user and whether it waits for an answer
// to a request it made (a SEND, a lookup, ...), returns true, and returns
// how many it closed; a connection whose Login is not answered yet counts
// as one of the user it names, waiting. A cluster node calls it when
// another node restarted or left, or the link from it lost calls: the
// sessions those users had on its shards are gone, and a request in
// flight to it (a Login among them) may be lost with no answer ever
// coming; their clients log in again and resend every unanswered SEND in
// order ([S-8-14]), which keeps a sender's order, instead of waiting for
// the login timeout.
func (s *Server) CloseUsers(match func(user uint64, waiting bool) bool, code protocol.Code) int {
	n := 0
	for _, c := range s.wheel.all() {
		if u := c.home.Load(); u != 0 && match(u, c.pending.Load() > 0) {
			c.Close(code)
			n++
		}
	}
	return n
}

// stopEngine stops gnet once; later calls (a second Shutdown) wait for
// nothing and report the first call's result.
func (s *Server) stopEngine(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if err := s.eng.Stop(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.stopErr = fmt.Errorf("server: stop: %w", err)
		}
	})
	return s.stopErr
}

// OnBoot records the engine.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	return gnet.None
}

// OnOpen sets up a connection the acceptor handed over (its context is
// the conn the acceptor made).
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	c, ok := gc.Context().(*conn)
	if !ok {
		return nil, gnet.Close // not from the acceptor: cannot happen, gnet has no TCP listener
	}
	c.gc = gc
	c.opened.Store(true)
	if s.stopping.Load() || !s.cfg.Conns.add(c) {
		return nil, gnet.Close
	}
	c.registered = true
	if s.tls != nil {
		c.tc = s.tls.NewConn()
	} else {
		c.phase.Store(phaseOpen)
	}
	c.openedAt = s.cfg.Now().UnixNano()
	c.lastActive.Store(c.openedAt)
	s.wheel.add(c)
	s.stats.Accepted.Add(1)
	s.stats.Open.Add(1)
	return nil, gnet.None
}

// OnClose releases a connection and ends its session.
func (s *Server) OnClose(gc gnet.Conn, _ error) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	s.acc.release(c.ip)
	if !c.registered {
		return gnet.None
	}
	c.mu.Lock()
	c.closed = true
	out := c.out
	c.out = nil
	c.mu.Unlock()
	s.bufs.put(out)
	s.cfg.Conns.remove(c)
	s.wheel.remove(c)
	if c.tc != nil {
		c.tc.Close()
	}
	s.releasePlain(c)
	c.unwatchAll()
	switch c.state {
	case stateLoggingIn, stateAuthenticated:
		// Ordered after the Login on the same shard, so it ends the session
		// the Login opened, whatever the Login's outcome.
		_ = s.cfg.Router.Submit(storage.Op{Kind: storage.OpLogout, User: c.user, Device: c.device, CMID: c.maxCMID, Conn: c.ref})
		c.logoutElsewhere()
		if c.state == stateAuthenticated {
			s.stats.Authenticated.Add(-1)
		}
	}
	s.stats.Open.Add(-1)
	return gnet.None
}

// OnTick runs the timer wheel once per wheel unit. The first call also
// tells Serve that the event loops are up.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.runOnce.Do(func() { close(s.running) })
	s.wheel.tick(s.cfg.Now())
	return time.Duration(s.wheel.unit), gnet.None
}

// appendCloseFrame appends the frame that announces a close with code:
// GoAway for a shutdown, else Error.
func (s *Server) appendCloseFrame(dst []byte, code protocol.Code) []byte {
	if code == protocol.CodeShuttingDown {
		return s.appendGoAway(dst, code)
	}
	return codec.AppendError(dst, code, 0, 0, "", 0)
}

// appendGoAway appends a GoAway with code and a reconnect delay spread
// between ReconnectAfter and twice that, so clients do not return at once.
func (s *Server) appendGoAway(dst []byte, code protocol.Code) []byte {
	base := s.cfg.ReconnectAfter.Milliseconds()
	b, _ := codec.AppendProto(dst, protocol.KindGoAway, &pb.GoAway{
		Code:             code,
		ReconnectAfterMs: uint32(base + rand.Int64N(base+1)),
	})
	return b
}

// gnetLogger sends gnet's logs to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
