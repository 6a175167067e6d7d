package link

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Config configures a Link. The zero value of each optional field means
// its default.
type Config struct {
	// Credentials are the node's certificate, key and cluster CA; the
	// node's id is Credentials.ID. Required.
	Credentials *Credentials
	// Gen is the node's boot generation: a counter the node increments
	// durably at every start, so peers can tell a restart from a
	// reconnect. Required, nonzero.
	Gen uint32
	// Addr is the TCP address the link listens on for peers
	// ("127.0.0.1:0" picks a port; Link.Addr tells which). Required.
	Addr string

	// OnMessage receives every message from a peer, in the order the peer
	// sent them, each once (see the package doc for the contract). It is
	// called from the goroutine that reads that peer's link, never
	// concurrently for one peer; body is valid only during the call.
	// While it runs, the peer's link does not read: a slow OnMessage
	// pushes back on the peer (its queue fills and its Send refuses).
	// It may call Send. Required.
	OnMessage func(from uint32, typ uint8, body []byte)
	// OnGap, if set, is called in the place of messages from a peer that
	// the peer's Send refused (its queue was full): the messages before it
	// and after it are in order, but some between them are missing. Called
	// like OnMessage.
	OnGap func(from uint32)
	// OnPeerRestart, if set, is called when a peer shows a new boot
	// generation: everything queued for its previous generation was
	// dropped, and the next message from it is the new generation's
	// first. It is called before any message of the new generation is
	// delivered, never concurrently with OnMessage for that peer; oldGen
	// is the generation last seen. It must not block.
	OnPeerRestart func(peer, oldGen, newGen uint32)
	// OnPeerState, if set, is called when the link towards a peer comes up
	// (messages can flow) or goes down (they queue). It is called from
	// that peer's dialer goroutine and must not block.
	OnPeerState func(peer uint32, up bool)

	// Logger receives the link's logs; nil discards them.
	Logger *slog.Logger
	// Rand returns a uniform random number in [0, n); it must be safe for
	// concurrent use. It jitters reconnection delays. nil means
	// math/rand/v2.Int64N.
	Rand func(n int64) int64

	// Heartbeat is how often, in idle periods, each end of a connection
	// sends something. Default 1 s.
	Heartbeat time.Duration
	// AckDelay is how long a receiver may wait, after delivering a batch,
	// before confirming it, so that one Ack confirms a burst; it only
	// holds queue space at the sender a little longer (at most ackEvery,
	// 1,024, messages wait for it). At most Heartbeat. Default 10 ms;
	// negative confirms every batch at once.
	AckDelay time.Duration
	// DeadAfter is how long a connection may stay silent (no bytes read)
	// before it is closed as dead; a dead peer is noticed within it. It
	// must be at least twice Heartbeat. Default 5 s.
	DeadAfter time.Duration
	// HandshakeTimeout bounds a connection's TCP connect, TLS handshake
	// and hello exchange, both ways. Default 5 s.
	HandshakeTimeout time.Duration
	// MaxHandshakes is how many inbound handshakes may run at once; a
	// connection beyond it is closed at once. Default 16.
	MaxHandshakes int
	// BackoffMin and BackoffMax bound the delay before redialing a peer:
	// it doubles from BackoffMin after each failed attempt up to
	// BackoffMax, and a uniform random part of its second half is taken
	// off (jitter). Defaults 50 ms and 5 s.
	BackoffMin, BackoffMax time.Duration

	// QueueMessages and QueueBytes bound what a peer's queue holds:
	// messages accepted by Send that the peer has not yet confirmed.
	// Beyond either, Send refuses with ErrQueueFull. Defaults 65,536
	// messages and 32 MiB.
	QueueMessages int
	QueueBytes    int
	// BatchBytes is the size, in bytes of records, at which a batch is
	// closed and the next message starts another; a larger message travels
	// alone. Default 64 KiB.
	BatchBytes int
	// MaxMessage is the largest message body Send accepts, in bytes, at
	// most MaxMessageLimit. Default 1 MiB.
	MaxMessage int
	// CompressMin, if positive, is the smallest batch, in bytes of
	// records, that is compressed (zstd; at least protocol.MinCompress),
	// and sent compressed only if that saves an eighth. 0, the default,
	// never compresses: node traffic is end-to-end ciphertext, which zstd
	// cannot shrink, and even plain text halves its bytes for two to three
	// times the link's CPU per message (docs/benchmarks.md, "Node links"), a bad
	// trade on a LAN. Set it for links over slow WANs carrying plain text.
	CompressMin int
}

// Defaults of Config's optional fields.
const (
	DefaultHeartbeat        = time.Second
	DefaultAckDelay         = 10 * time.Millisecond
	DefaultDeadAfter        = 5 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxHandshakes    = 16
	DefaultBackoffMin       = 50 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	DefaultQueueMessages    = 65536
	DefaultQueueBytes       = 32 << 20
	DefaultBatchBytes       = 64 << 10
	DefaultMaxMessage       = 1 << 20
)

// withDefaults returns c with its zero optional fields set to their
// defaults.
func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Heartbeat, DefaultHeartbeat)
	def(&c.AckDelay, DefaultAckDelay)
	def(&c.DeadAfter, DefaultDeadAfter)
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	defInt(&c.MaxHandshakes, DefaultMaxHandshakes)
	defInt(&c.QueueMessages, DefaultQueueMessages)
	defInt(&c.QueueBytes, DefaultQueueBytes)
	defInt(&c.BatchBytes, DefaultBatchBytes)
	defInt(&c.MaxMessage, DefaultMaxMessage)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.Int64N
	}
	return c
}

// validate reports every problem of c (after withDefaults) at once.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("link: "+format, args...))
	}
	if c.Credentials == nil {
		bad("Credentials is required")
	} else if c.Credentials.ID == 0 || c.Credentials.CA == nil || c.Credentials.Cert.Leaf == nil {
		bad("Credentials need an ID, a CA and a certificate with its Leaf")
	}
	if c.Gen == 0 {
		bad("Gen is required (boot generations start at 1)")
	}
	if c.Addr == "" {
		bad("Addr is required")
	}
	if c.OnMessage == nil {
		bad("OnMessage is required")
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"Heartbeat", c.Heartbeat}, {"DeadAfter", c.DeadAfter}, {"HandshakeTimeout", c.HandshakeTimeout},
		{"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax},
	} {
		if f.d < 0 {
			bad("%s %v is negative", f.name, f.d)
		}
	}
	if c.AckDelay > c.Heartbeat {
		bad("AckDelay %v exceeds Heartbeat %v", c.AckDelay, c.Heartbeat)
	}
	if c.DeadAfter < 2*c.Heartbeat {
		bad("DeadAfter %v is less than twice Heartbeat %v", c.DeadAfter, c.Heartbeat)
	}
	if c.BackoffMax < c.BackoffMin {
		bad("BackoffMax %v is less than BackoffMin %v", c.BackoffMax, c.BackoffMin)
	}
	for _, f := range []struct {
		name string
		n    int
	}{
		{"MaxHandshakes", c.MaxHandshakes}, {"QueueMessages", c.QueueMessages}, {"QueueBytes", c.QueueBytes},
		{"BatchBytes", c.BatchBytes}, {"MaxMessage", c.MaxMessage}, {"CompressMin", c.CompressMin},
	} {
		if f.n < 0 {
			bad("%s %d is negative", f.name, f.n)
		}
	}
	if c.MaxMessage > MaxMessageLimit {
		bad("MaxMessage %d exceeds %d", c.MaxMessage, MaxMessageLimit)
	}
	if c.BatchBytes > MaxMessageLimit {
		bad("BatchBytes %d exceeds %d", c.BatchBytes, MaxMessageLimit)
	}
	if c.QueueBytes < c.MaxMessage {
		bad("QueueBytes %d is less than MaxMessage %d", c.QueueBytes, c.MaxMessage)
	}
	return errors.Join(errs...)
}
