package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/parley-im/parley/storage"
)

// maxHeartbeat is the longest heartbeat a server may grant: seconds fit
// in the connection's uint16.
const maxHeartbeat = math.MaxUint16 * time.Second

// Router is what the server needs of placement: where an op goes is the
// router's decision (package router implements it, for local shards and,
// over node links, remote ones). Its methods are safe for concurrent use
// and never block.
type Router interface {
	// Submit hands op to the shard that runs it; an error means it was
	// refused (the shard is busy, closed or unreachable) and the caller
	// answers OVERLOADED or drops it.
	Submit(op storage.Op) error
	// ShardOf returns the number of the shard that owns a user or group:
	// a closing connection's logout goes to every shard it sent to.
	ShardOf(user uint64) uint16
	// ShardOfPhone returns the number of the shard that owns phone: the
	// server splits a LOOKUP by it.
	ShardOfPhone(phone string) uint16
}

// Config configures a Server. The zero value of each optional field means
// its default.
type Config struct {
	// Addr is the TCP address to listen on, host:port. Required; port 0
	// picks a free port (see Server.Addr).
	Addr string
	// TLS holds the server certificate. Required unless Plaintext. TLS 1.3
	// session resumption ([S-5-2]) is on unless TLS.SessionTicketsDisabled.
	TLS *tls.Config
	// TicketSecret is the 32-byte secret TLS session ticket keys are
	// derived from, rotated every TicketRotation (see tls13.Config): give
	// every start, and every node behind one name, the same secret and
	// tickets survive restarts. Nil means a random secret per start.
	TicketSecret []byte
	// TicketRotation is the period of the session ticket key; a ticket
	// resumes for at least one period and at most two. Default 24 h.
	TicketRotation time.Duration
	// Plaintext serves frames without TLS, for a node behind a
	// TLS-terminating proxy. Never expose a plaintext listener to clients.
	Plaintext bool
	// Router reaches the shards. Required.
	Router Router
	// Conns names the server's connections for the shards (the refs in
	// ops) and resolves them; the node gives the same registry to the
	// router. Required.
	Conns *Registry
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Media answers MEDIA_UPLOAD and MEDIA_DOWNLOAD (spec.md section 14)
	// off the event loop; nil means the server offers no media and answers
	// them with MEDIA_UNAVAILABLE.
	Media MediaService
	// Reports takes users' reports (spec.md section 18.5) off the event
	// loop; nil means the server has nowhere to put them and answers
	// REPORT with INTERNAL.
	Reports ReportService

	// Loops is the number of event loops; 0 means GOMAXPROCS.
	Loops int
	// Heartbeat is the interval, in whole seconds, clients that ask for
	// none are told to send at least one frame in; a connection silent for
	// 1.5 × its heartbeat is closed ([S-6-8]). Default 60 s.
	Heartbeat time.Duration
	// MinHeartbeat and MaxHeartbeat bound the heartbeat a client may ask
	// for in LOGIN (heartbeat_s): the server clamps the request into
	// [MinHeartbeat, MaxHeartbeat] and announces the result in LOGIN_OK.
	// Whole seconds, at most 18 h. Defaults: 10 s, or Heartbeat if that is
	// shorter; 30 min, or Heartbeat if that is longer. A silently vanished
	// device holds its connection (and looks online) for up to 1.5 ×
	// MaxHeartbeat.
	MinHeartbeat, MaxHeartbeat time.Duration
	// LoginTimeout is how long a connection may stay unauthenticated.
	// Default 30 s.
	LoginTimeout time.Duration
	// IdleTrim is how long a connection must be silent before its TLS state
	// is trimmed to the minimum. Default 10 s.
	IdleTrim time.Duration
	// MaxOutbound caps the bytes queued for one connection; past it the
	// client is a slow consumer and is cut off. Default 2 MiB.
	MaxOutbound int
	// MaxInbound caps the bytes a client may send ahead of the server while
	// the server is not reading (login pending, too many requests in
	// flight). Default 256 KiB.
	MaxInbound int
	// MaxPending is how many requests (sends, logins, lookups …) one
	// connection may have in flight before the server stops reading from
	// it. Default 128.
	MaxPending int
	// LookupsPerMinute limits contact lookups per account (all its devices
	// and connections together, across reconnects; [S-9-11]). Default 10.
	LookupsPerMinute int
	// Sends limits the 1:1 SENDs of one account, all its devices and
	// connections together, kept across reconnects ([S-8-23]); a SEND
	// over it is refused RATE_LIMITED. Default 1,000 a second with a
	// burst of 2,000: several times what one account of the load tester's
	// flat-out pairs sends (docs/security.md).
	Sends Budget
	// GroupSends limits an account's group SENDs likewise, apart from its
	// 1:1 SENDs: each fans out to up to 1,024 members. Default 200 a
	// second with a burst of 400.
	GroupSends Budget
	// FreeCode reports whether a REQUEST_CODE for phone costs the
	// operator nothing (a number reserved for testing, or a node whose
	// codes go to its log rather than to an SMS gateway): such requests
	// are outside the code limits below ([S-9-17]). nil means every code
	// costs. internal/node sets it.
	FreeCode func(phone string) bool
	// CodesPerConn, CodesPerIP, CodesPerPrefix and CodesPerNode limit the
	// REQUEST_CODEs that cost an SMS ([S-9-17]), besides the per-phone
	// limits of the shards: per connection (default a burst of 3, then
	// one a minute), per client address (see MaxConnsPerIP for what an
	// address is and who is exempt; default 10, then 20 an hour), per
	// phone number prefix (CodePrefixDigits; default 20, then 100 an
	// hour) and for the whole node (default 100, then 5 a second). Over
	// any of them the request is refused RATE_LIMITED.
	CodesPerConn, CodesPerIP, CodesPerPrefix, CodesPerNode Budget
	// CodePrefixDigits is how many digits after the '+' make a phone
	// number's prefix for CodesPerPrefix: its country code and the start
	// of its area or operator code, where SMS pumping concentrates on
	// premium ranges. Default 5.
	CodePrefixDigits int
	// LinksPerIP limits the LINK_REQUESTs from one client address (see
	// MaxConnsPerIP for what an address is and who is exempt), besides
	// the 3 each connection may send ([S-9-12]). Default a burst of 20,
	// then one every 10 s.
	LinksPerIP Budget
	// KeyFetchesPerMinute limits KEYS_FETCH requests per account, like
	// LookupsPerMinute ([S-17-4]): a burst of up to this many, refilled at
	// this rate. Each fetch takes one-time prekeys and costs a durable
	// write. Default 1200 (enough for the first message to a group of
	// MaxGroupMembers at once).
	KeyFetchesPerMinute int
	// MaxHandshakes bounds concurrent TLS handshakes. A connection takes a
	// slot only once its whole ClientHello has arrived; beyond the bound it
	// waits for one. Default 256.
	MaxHandshakes int
	// HandshakeTimeout is how long after the accept a connection may take
	// to complete its TLS handshake ([S-5-5]); then it is closed without a
	// word. Default 10 s.
	HandshakeTimeout time.Duration
	// ClientHelloTimeout is how long after the accept a connection may
	// take to send its whole ClientHello (its first flight); then it is
	// closed without a word. Default 5 s; never more than HandshakeTimeout.
	ClientHelloTimeout time.Duration
	// MaxHandshakesPerIP bounds the TLS handshakes running or waiting for a
	// slot at once from one client address (see MaxConnsPerIP for what an
	// address is and who is exempt); a connection whose ClientHello would
	// go over it is closed at once. Default 16.
	MaxHandshakesPerIP int

	// MaxConns caps the client connections open at once, counted from the
	// accept to the close; a connection over it is closed at once (reset)
	// before any byte is read. Default: the process's open-file limit
	// (RLIMIT_NOFILE, which Go raises to its hard limit at start) minus
	// FDReserve, or half the limit when that is more.
	MaxConns int
	// FDReserve is how many of the process's file descriptors are kept for
	// everything but client connections when MaxConns is derived: the
	// listener, event loops, connections being handed to a loop (up to
	// 64), storage, media and the admin endpoint. Default 256; node.Start
	// sets it from its shards and media (see internal/node).
	FDReserve int
	// MaxConnsPerIP caps the connections open at once from one client
	// address: an IPv4 address, or an IPv6 /64 (what one subscriber
	// usually gets); a connection over it is closed at once (reset).
	// Loopback clients (the operator's own tools, a local proxy) are
	// exempt unless LimitLoopback, and in Plaintext mode no per-address
	// limit applies (every client has the proxy's address). Default 512:
	// enough for a carrier-grade NAT address shared by a few hundred
	// devices.
	MaxConnsPerIP int
	// LimitLoopback applies MaxConnsPerIP and MaxHandshakesPerIP to
	// loopback clients too (tests; a node whose clients really are local).
	LimitLoopback bool
	// CloseLinger is how long a connection the server closes with an
	// ERROR or GOAWAY stays open, reading nothing, for the client to read
	// what was queued ahead of that frame and the frame itself; it closes
	// as soon as the client has received everything. Default 5 s.
	CloseLinger time.Duration
	// ShutdownGrace is how long Shutdown waits for clients to leave after
	// GoAway before closing what remains. Default 5 s.
	ShutdownGrace time.Duration
	// ReconnectAfter is the base of the reconnect delay told to clients in
	// GoAway; each gets a random delay up to twice this. Default 1 s.
	ReconnectAfter time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Loops == 0 {
		c.Loops = runtime.GOMAXPROCS(0)
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 60 * time.Second
	}
	if c.MinHeartbeat == 0 {
		c.MinHeartbeat = min(10*time.Second, c.Heartbeat)
	}
	if c.MaxHeartbeat == 0 {
		c.MaxHeartbeat = max(30*time.Minute, c.Heartbeat)
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = 30 * time.Second
	}
	if c.IdleTrim == 0 {
		c.IdleTrim = 10 * time.Second
	}
	if c.MaxOutbound == 0 {
		c.MaxOutbound = 2 << 20
	}
	if c.MaxInbound == 0 {
		c.MaxInbound = 256 << 10
	}
	if c.MaxPending == 0 {
		c.MaxPending = 128
	}
	if c.LookupsPerMinute == 0 {
		c.LookupsPerMinute = 10
	}
	c.Sends = c.Sends.orDefault(Budget{PerSecond: 1000, Burst: 2000})
	c.GroupSends = c.GroupSends.orDefault(Budget{PerSecond: 200, Burst: 400})
	c.CodesPerConn = c.CodesPerConn.orDefault(Budget{PerSecond: 1.0 / 60, Burst: 3})
	c.CodesPerIP = c.CodesPerIP.orDefault(Budget{PerSecond: 20.0 / 3600, Burst: 10})
	c.CodesPerPrefix = c.CodesPerPrefix.orDefault(Budget{PerSecond: 100.0 / 3600, Burst: 20})
	c.CodesPerNode = c.CodesPerNode.orDefault(Budget{PerSecond: 5, Burst: 100})
	if c.CodePrefixDigits == 0 {
		c.CodePrefixDigits = 5
	}
	c.LinksPerIP = c.LinksPerIP.orDefault(Budget{PerSecond: 0.1, Burst: 20})
	if c.KeyFetchesPerMinute == 0 {
		c.KeyFetchesPerMinute = 1200
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = 256
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.ClientHelloTimeout == 0 {
		c.ClientHelloTimeout = min(5*time.Second, c.HandshakeTimeout)
	}
	if c.MaxHandshakesPerIP == 0 {
		c.MaxHandshakesPerIP = 16
	}
	if c.FDReserve == 0 {
		c.FDReserve = 256
	}
	if c.MaxConns == 0 {
		c.MaxConns = defaultMaxConns(c.FDReserve)
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = 512
	}
	if c.CloseLinger == 0 {
		c.CloseLinger = 5 * time.Second
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	if c.ReconnectAfter == 0 {
		c.ReconnectAfter = time.Second
	}
}

// validate reports every problem with c at once.
func (c *Config) validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("no listen address"))
	}
	if c.TLS == nil && !c.Plaintext {
		errs = append(errs, errors.New("no TLS certificate and not plaintext"))
	}
	if c.TLS != nil && c.Plaintext {
		errs = append(errs, errors.New("both TLS and plaintext"))
	}
	if c.Conns == nil {
		errs = append(errs, errors.New("no connection registry"))
	}
	if c.Router == nil {
		errs = append(errs, errors.New("no router"))
	}
	if c.Heartbeat < time.Second {
		errs = append(errs, fmt.Errorf("heartbeat %v below 1s", c.Heartbeat))
	}
	if c.MinHeartbeat < time.Second || c.MinHeartbeat > c.Heartbeat {
		errs = append(errs, fmt.Errorf("min heartbeat %v below 1s or above heartbeat %v", c.MinHeartbeat, c.Heartbeat))
	}
	if c.MaxHeartbeat < c.Heartbeat || c.MaxHeartbeat > maxHeartbeat {
		errs = append(errs, fmt.Errorf("max heartbeat %v below heartbeat %v or above %v", c.MaxHeartbeat, c.Heartbeat, maxHeartbeat))
	}
	if c.MaxOutbound < 64<<10 {
		errs = append(errs, fmt.Errorf("max outbound %d below 64 KiB", c.MaxOutbound))
	}
	if c.MaxInbound < 64<<10 {
		errs = append(errs, fmt.Errorf("max inbound %d below 64 KiB", c.MaxInbound))
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"loops", c.Loops}, {"max pending", c.MaxPending}, {"lookups per minute", c.LookupsPerMinute},
		{"key fetches per minute", c.KeyFetchesPerMinute}, {"max handshakes", c.MaxHandshakes},
		{"max handshakes per IP", c.MaxHandshakesPerIP}, {"max conns", c.MaxConns}, {"max conns per IP", c.MaxConnsPerIP}, {"fd reserve", c.FDReserve}} {
		if v.n < 1 {
			errs = append(errs, fmt.Errorf("%s %d below 1", v.name, v.n))
		}
	}
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"login timeout", c.LoginTimeout}, {"idle trim", c.IdleTrim}, {"handshake timeout", c.HandshakeTimeout},
		{"client hello timeout", c.ClientHelloTimeout}, {"close linger", c.CloseLinger},
		{"shutdown grace", c.ShutdownGrace}, {"reconnect after", c.ReconnectAfter}} {
		if v.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v not positive", v.name, v.d))
		}
	}
	for _, b := range []struct {
		name string
		b    Budget
	}{{"sends", c.Sends}, {"group sends", c.GroupSends}, {"codes per conn", c.CodesPerConn}, {"codes per IP", c.CodesPerIP},
		{"codes per prefix", c.CodesPerPrefix}, {"codes per node", c.CodesPerNode}, {"links per IP", c.LinksPerIP}} {
		if err := b.b.validate(b.name); err != nil {
			errs = append(errs, err)
		}
	}
	if c.CodePrefixDigits < 1 || c.CodePrefixDigits > 15 {
		errs = append(errs, fmt.Errorf("code prefix digits %d: want 1 to 15", c.CodePrefixDigits))
	}
	if c.ClientHelloTimeout > c.HandshakeTimeout {
		errs = append(errs, fmt.Errorf("client hello timeout %v above handshake timeout %v", c.ClientHelloTimeout, c.HandshakeTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("server: config: %w", err)
	}
	return nil
}

// fdLimit returns the process's open-file limit (the soft RLIMIT_NOFILE),
// or 0 if it cannot be read or is unlimited.
func fdLimit() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur == unix.RLIM_INFINITY || r.Cur > math.MaxInt32 {
		return 0
	}
	return int(r.Cur)
}

// defaultMaxConns derives MaxConns from the open-file limit: the limit
// minus reserve, or half the limit when the reserve would leave less (a
// small limit, as in tests); 1<<20 when the limit cannot be read.
func defaultMaxConns(reserve int) int {
	limit := fdLimit()
	if limit == 0 {
		return 1 << 20
	}
	return max(limit-reserve, limit/2, 1)
}

// heartbeatFor returns the heartbeat, in seconds, for a LOGIN that asked
// for asked seconds ([S-6-8]): Heartbeat for 0, else asked clamped into
// [MinHeartbeat, MaxHeartbeat].
func (cfg *Config) heartbeatFor(asked uint32) uint16 {
	if asked == 0 {
		return uint16(cfg.Heartbeat / time.Second)
	}
	lo, hi := uint32(cfg.MinHeartbeat/time.Second), uint32(cfg.MaxHeartbeat/time.Second)
	return uint16(min(max(asked, lo), hi))
}
