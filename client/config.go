package client

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/clock"
)

// Config configures a Client, RequestCode and Verify. The zero value of
// every field but Addr is usable. A Config must not be modified after it is
// passed to New; it may be copied and reused for several clients.
type Config struct {
	// Addr is the server's TCP address, "host:port". Required.
	Addr string

	// Fingerprint pins the server's certificate: the SHA-256 of the leaf
	// certificate's DER encoding, as 64 hex digits (case and colons are
	// ignored). When set, only the fingerprint is checked, not the chain
	// or the name; this is how a client trusts parleyd's self-signed
	// default certificate. Empty means verify the chain against RootCAs.
	Fingerprint string

	// RootCAs verifies the server's certificate chain when Fingerprint is
	// empty. nil means the system's roots.
	RootCAs *x509.CertPool

	// ServerName is sent as SNI and, with RootCAs, checked against the
	// certificate. Empty means the host part of Addr.
	ServerName string

	// Plaintext speaks frames over plain TCP without TLS: for tests, and
	// for a server behind a TLS-terminating proxy on a trusted network.
	// False, the default, means TLS 1.3, resuming the session on
	// reconnects unless DisableResumption.
	// Fingerprint and RootCAs must be unset when it is true.
	Plaintext bool

	// DisableResumption makes every connection a full TLS handshake. False,
	// the default, keeps the session tickets the server sends (spec.md
	// [S-5-2]) in a cache of the Client, so a reconnect resumes the session:
	// no certificate on the wire, no signature, one key exchange. The
	// server's certificate (Fingerprint or chain) was checked on the full
	// handshake that issued the ticket, and Fingerprint is checked again on
	// every resumption.
	DisableResumption bool

	// Plain turns end-to-end encryption off: bodies are sent and
	// delivered as they are (the opaque path), for applications that bring
	// their own encryption. False, the default, means a Client whose Store
	// is also a KeyStore (FileStore, MemoryKeyStore) encrypts every message
	// end to end (spec.md section 17); with any other Store it is plain.
	Plain bool

	// Dial opens the TCP connection; TLS runs on top of it unless
	// Plaintext is set. It has the signature of net.Dialer.DialContext and
	// is called with network "tcp" and Addr. Tests use it to count dials
	// or inject faults. nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// DialTimeout bounds one connection attempt: TCP connect, TLS
	// handshake, and the server's answer to Login, RequestCode or Verify.
	// Zero means 10 seconds.
	DialTimeout time.Duration

	// WriteTimeout is how long a write to the connection may make no
	// progress (32 KiB at a time) before the connection is dropped. Zero
	// means 10 seconds.
	WriteTimeout time.Duration

	// BackoffMin and BackoffMax bound the delay between reconnection
	// attempts (spec [S-6-13]). After the n-th consecutive failure (n
	// counting from 0) the client waits a uniformly random duration in
	// [0, min(BackoffMax, BackoffMin·2^n)) ("full jitter"); n goes back to
	// 0 after a connection that stayed logged in for BackoffMax. A delay
	// the server names (GoAway's reconnect_after_ms, or retry_after_ms on
	// the Error refusing Login) replaces it: that delay plus a random extra
	// of up to BackoffMin, never less ([S-6-10], [S-11-1]). The same rules
	// time the retries of sends and requests refused with RATE_LIMITED,
	// OVERLOADED or INTERNAL. Zero means 1 second and 60 seconds.
	BackoffMin, BackoffMax time.Duration

	// Heartbeat is the heartbeat interval asked for in LOGIN (spec
	// [S-6-8]: on mobile networks, the longest that survives the network's
	// NAT timeouts), rounded down to whole seconds. The server clamps it
	// into its bounds and the interval it announces in LoginOk is the one
	// the client keeps. Zero asks for the server's default.
	Heartbeat time.Duration

	// PingInterval is how long the connection may go without a frame
	// written, or without bytes read, before the client sends Ping (spec
	// [S-6-8]). Zero, or a value above it, means three quarters of the
	// heartbeat the server announces in LoginOk, so the server always hears
	// from the client in time.
	PingInterval time.Duration

	// PongTimeout is how long after a Ping the connection may deliver no
	// bytes before the client declares it dead (ErrDeadConnection) and
	// reconnects: the defence against half-open TCP. Zero means 15 seconds
	// ([S-6-8]), or half the server's heartbeat if that is shorter.
	PongTimeout time.Duration

	// AckDelay is how long a cumulative Ack may wait so that it covers
	// later entries too. An Ack goes out sooner when it would cover a
	// quarter of the server's window, when the window is full, when a Batch
	// or the login backlog (Synced) has been delivered, and whenever another
	// frame is written anyway. Zero means 50 milliseconds.
	AckDelay time.Duration

	// LazyAckDelay is how long the Ack may wait instead while no entry it
	// would newly cover is a one-to-one Message from another user (whose
	// sender waits for the delivered receipt the Ack makes) or a Message
	// with a body of 4 KiB or more: receipts, group messages and group
	// events are acknowledged together, and at a chat's pace the Ack rides
	// on the device's next send instead of costing a write and a TLS
	// record of its own ([S-8-5]); a group sender's delivered receipts from
	// this member come up to that much later. The rules that send an Ack
	// sooner apply as with AckDelay; an entry that may not wait brings the
	// Ack's time forward to AckDelay. Zero means 1 second.
	LazyAckDelay time.Duration

	// ManualAck, when false (the default), acknowledges an inbox entry as
	// soon as the application has received its event (OnEvent returned, or
	// the event was taken from Events). When true, the client acknowledges
	// only what the application passes to Ack, so an entry the application
	// had not finished with before a crash is delivered again.
	ManualAck bool

	// OnEvent, if set, receives every Event instead of the Events channel.
	// It is called on a goroutine of the client's, one event at a time, in
	// order. It may block: later events and their acks wait, while the
	// connection goes on (Send, Lookup and MarkRead still complete). It
	// must not call Close. nil means events go to the channel returned by
	// Events.
	OnEvent func(Event)

	// OnRetry, if set, is told of every send and request the client will
	// retry after the server refused it with a code that asks for a retry
	// ([S-8-13], [S-8-14]), and of every send it encrypts again after
	// DEVICES_CHANGED ([S-17-9]): for metrics of what the client lived
	// through. It is called on the goroutine that reads the connection,
	// without the client's lock, one call at a time, in the order the
	// refusals arrived; the retry may be under way already. It may call
	// the Client's methods that do not wait for the server (SendAsync,
	// Typing, Ack), but not Close nor a method that waits for an answer
	// (Send, Lookup, MarkRead and the other requests): the answer is read
	// only once it has returned. Reading waits for it, so it should return
	// quickly. nil means no one is told.
	OnRetry func(Retry)

	// MaxInFlight is the most sends and requests written to the connection
	// and not yet answered; later ones wait in the outbox. The server stops
	// reading from a connection with 128 unanswered ([S-6-14]), so it must
	// be below 128. Zero means 64. Before LoginOk the client also writes at
	// most 128 KiB after Login, half of what the server holds meanwhile.
	MaxInFlight int

	// MaxOutbox is the most sends not yet answered by the server (queued,
	// in flight, or waiting to be retried). Send beyond it fails with
	// ErrOutboxFull. Zero means 1024.
	MaxOutbox int

	// Decompressor inflates compressed frames. One Decompressor may be
	// shared by many clients (it serialises their decompression). nil means
	// each Client creates its own, released by Close.
	Decompressor *codec.Decompressor

	// Logger receives the client's diagnostics: connection attempts and
	// failures at Debug, dropped results and store failures at Warn. nil
	// means slog.Default().
	Logger *slog.Logger

	// Clock is the client's source of time for heartbeats, ack delays and
	// backoff. nil means the system clock. Socket deadlines always use the
	// system clock.
	Clock Clock

	// Rand returns a uniformly random number in [0, 1) for jitter. It is
	// called from several goroutines. nil means math/rand/v2.Float64.
	Rand func() float64
}

// Clock is a source of time (package internal/clock). Tests implement
// it to drive heartbeats, ack delays and backoff without sleeping.
type Clock = clock.Clock

// Defaults of Config.
const (
	defaultDialTimeout  = 10 * time.Second
	defaultWriteTimeout = 10 * time.Second
	defaultBackoffMin   = time.Second
	defaultBackoffMax   = 60 * time.Second
	defaultPongTimeout  = 15 * time.Second
	defaultAckDelay     = 50 * time.Millisecond
	defaultLazyAckDelay = time.Second
	defaultMaxInFlight  = 64
	defaultMaxOutbox    = 1024
	defaultWindow       = 64 // used if LoginOk names no window

	// maxServerPending is how many unanswered sends and requests make the
	// server stop reading ([S-6-14]).
	maxServerPending = 128
	// maxPipelined is the most bytes written after Login before LoginOk:
	// half the 256 KiB the server holds while logging in ([S-6-14]).
	maxPipelined = 128 << 10
)

// settings is a validated Config with its defaults filled in and its TLS
// configuration built. It is immutable.
type settings struct {
	Config
	tls *tls.Config // nil when Plaintext
}

// resolve validates c, reporting every problem at once, and returns it with
// defaults filled in.
func (c Config) resolve() (settings, error) {
	var errs []error
	host, _, err := net.SplitHostPort(c.Addr)
	if c.Addr == "" {
		errs = append(errs, errors.New("client: Config.Addr is required"))
	} else if err != nil {
		errs = append(errs, fmt.Errorf("client: Config.Addr %q: %w", c.Addr, err))
	}
	var pin []byte
	if c.Fingerprint != "" {
		pin, err = ParseFingerprint(c.Fingerprint)
		if err != nil {
			errs = append(errs, err)
		}
		if c.RootCAs != nil {
			errs = append(errs, errors.New("client: Config.Fingerprint and Config.RootCAs are exclusive"))
		}
	}
	if c.Plaintext && (c.Fingerprint != "" || c.RootCAs != nil) {
		errs = append(errs, errors.New("client: Config.Plaintext excludes Fingerprint and RootCAs"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", c.DialTimeout}, {"WriteTimeout", c.WriteTimeout},
		{"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax},
		{"PingInterval", c.PingInterval}, {"PongTimeout", c.PongTimeout}, {"Heartbeat", c.Heartbeat},
		{"AckDelay", c.AckDelay}, {"LazyAckDelay", c.LazyAckDelay},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("client: Config.%s %v is negative", d.name, d.v))
		}
	}
	if c.MaxInFlight < 0 || c.MaxInFlight >= maxServerPending {
		errs = append(errs, fmt.Errorf("client: Config.MaxInFlight %d outside 0 to %d", c.MaxInFlight, maxServerPending-1))
	}
	if c.MaxOutbox < 0 {
		errs = append(errs, fmt.Errorf("client: Config.MaxOutbox %d is negative", c.MaxOutbox))
	}

	c.DialTimeout = cmp.Or(c.DialTimeout, defaultDialTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, defaultWriteTimeout)
	c.BackoffMin = cmp.Or(c.BackoffMin, defaultBackoffMin)
	c.BackoffMax = cmp.Or(c.BackoffMax, defaultBackoffMax)
	c.AckDelay = cmp.Or(c.AckDelay, defaultAckDelay)
	c.LazyAckDelay = cmp.Or(c.LazyAckDelay, defaultLazyAckDelay)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, defaultMaxInFlight)
	c.MaxOutbox = cmp.Or(c.MaxOutbox, defaultMaxOutbox)
	if c.BackoffMin > c.BackoffMax {
		errs = append(errs, fmt.Errorf("client: Config.BackoffMin %v above BackoffMax %v", c.BackoffMin, c.BackoffMax))
	}
	if err := errors.Join(errs...); err != nil {
		return settings{}, err
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.System{}
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	s := settings{Config: c}
	if !c.Plaintext {
		s.tls = tlsConfig(c, host, pin)
	}
	return s, nil
}

// sessionCacheSize is the number of TLS sessions a Client keeps: it talks
// to one server name, but media URLs may name another host.
const sessionCacheSize = 4

// ParseFingerprint decodes a certificate fingerprint as Config.Fingerprint
// accepts it: 64 hex digits, in either case, optionally separated by colons.
// It returns the 32 bytes of the SHA-256 digest.
func ParseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%w: fingerprint %q is not 64 hex digits", ErrInvalid, s)
	}
	return b, nil
}

// Fingerprint returns the fingerprint of a DER-encoded certificate in the
// form Config.Fingerprint takes: lowercase hex of its SHA-256.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// tlsConfig returns the client TLS configuration: TLS 1.3 only, either
// fingerprint pinning or chain verification, and unless
// c.DisableResumption a session cache of its own, which every connection
// made with this configuration shares.
func tlsConfig(c Config, host string, pin []byte) *tls.Config {
	name := c.ServerName
	if name == "" {
		name = host
	}
	tc := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: c.DisableResumption,
		ServerName:             name,
		RootCAs:                c.RootCAs,
	}
	if !c.DisableResumption {
		// One server name, one entry: the latest ticket is the one to use.
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(sessionCacheSize)
	}
	if pin != nil {
		tc.InsecureSkipVerify = true // replaced by the fingerprint check below
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate", ErrFingerprint)
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				// The certificate's own fingerprint is left out: whoever
				// reads the error should check the pin against what the
				// operator published, not copy the presented one.
				return ErrFingerprint
			}
			return nil
		}
	}
	return tc
}

// dial opens a connection to the server: TCP, then TLS unless Plaintext.
// It returns the connection to use and the underlying TCP connection,
// whose Close interrupts the first at once (without a TLS close_notify).
func (s *settings) dial(ctx context.Context) (conn, raw net.Conn, err error) {
	raw, err = s.Dial(ctx, "tcp", s.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("client: dial %s: %w", s.Addr, err)
	}
	if s.tls == nil {
		return raw, raw, nil
	}
	tc := tls.Client(raw, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, nil, fmt.Errorf("client: tls handshake with %s: %w", s.Addr, err)
	}
	return tc, raw, nil
}

// backoff returns the delay before reconnection attempt n+1 after n+1
// consecutive failures: full jitter over an exponentially growing cap.
func (s *settings) backoff(n int) time.Duration {
	ceil := s.BackoffMax
	if n < 62 {
		if d := s.BackoffMin << n; d > 0 && d < ceil {
			ceil = d
		}
	}
	return time.Duration(s.Rand() * float64(ceil))
}

// serverDelay returns the delay before reconnecting or retrying when the
// server asked for d: never less than d ([S-11-1]), plus a random extra of
// up to BackoffMin. The server spreads its GoAway delays itself, so the
// client comes back soon after ([S-6-10]).
func (s *settings) serverDelay(d time.Duration) time.Duration {
	return d + time.Duration(s.Rand()*float64(s.BackoffMin))
}
