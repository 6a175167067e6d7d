package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/analytics"
)

// CodeSender delivers verification codes to phones (an SMS gateway). The
// shard calls SendCode once the code is durable, among a cycle's effects
// (from its actor or its syncer, holding the lock that keeps effects in
// order), so SendCode must not block nor call into the shard: an
// implementation that does I/O queues the work.
// It calls done exactly once, from any goroutine (SendCode's own included),
// when it knows what became of the code: nil when the gateway took it, an
// error wrapping ErrCodeUndeliverable when the gateway refused the number
// for good, any other error when the code could not be handed over (the
// gateway unavailable, the sender's queue full). The shard answers the
// REQUEST_CODE from done ([S-9-16]); done never blocks.
type CodeSender interface {
	SendCode(phone, code string, done func(error))
}

// ErrCodeUndeliverable is wrapped by the error a CodeSender reports when
// its gateway refused the phone number for good; the client then gets
// CODE_UNDELIVERABLE, and CODE_DELIVERY_FAILED for any other error.
var ErrCodeUndeliverable = errors.New("storage: the gateway refused the phone number")

// Forwarder moves ops between shards; the router implements it. Forward
// must not block. It may lose, repeat or reorder ops: the outbox protocol
// (outbox.go) makes OpForward exactly-once and in order regardless, and the
// internal requests (group joins, watches, links) have timeouts.
type Forwarder interface {
	// ShardOf returns the number of the shard that owns user id.
	ShardOf(user uint64) uint16
	// Forward submits op to shard op.Dest for OpForward and OpForwardDone,
	// else to the shard that owns op's slot (router.SlotOf).
	Forward(op Op)
}

// DefaultSyncWait is Config.SyncWait's default: how long a busy shard's
// syncer waits for more cycles before an fsync.
const DefaultSyncWait = 50 * time.Microsecond

// DefaultLazySync is Config.LazySync's default: how long a cycle whose
// promises may wait (receipts, the watermarks of 1:1 forwards) waits for
// another cycle's sync before it asks for one.
const DefaultLazySync = 2 * time.Millisecond

// Config configures a Shard. The zero value of each optional field means
// its default.
type Config struct {
	// ID is the shard's number in the cluster, below MaxShards. It is part
	// of every message id the shard issues.
	ID uint16
	// Dir is the directory of the shard's Pebble database. Required.
	Dir string
	// FS is the file system; nil means the real one (vfs.Default). Tests use
	// vfs.NewMem().
	FS vfs.FS
	// Forwarder carries outbox entries to other shards. Required.
	Forwarder Forwarder
	// Conns resolves the connection refs of ops to the connections the
	// shard answers (the router: local ones to the server, remote ones
	// over node links). Required.
	Conns Conns
	// Codes sends verification codes. Required.
	Codes CodeSender
	// Pusher sends push notifications (spec.md section 19); nil means the
	// node offers none: PUSH_REGISTER is refused PUSH_UNAVAILABLE and no
	// push is decided.
	Pusher Pusher
	// Logger receives the shard's logs; nil discards them.
	Logger *slog.Logger
	// OnFatal is called when Pebble reports an error it cannot continue
	// from (a failed write to its log); it must not return. nil panics, as
	// Pebble expects of its logger's Fatalf.
	OnFatal func(msg string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand fills b with random bytes for credentials and codes; nil means
	// crypto/rand.Read.
	Rand func(b []byte)

	// QueueLimit is how many droppable ops (sends and requests) may wait
	// for the actor before Submit refuses more with ErrBusy. Default 65536.
	QueueLimit int
	// Window is how many inbox entries a device may have unacknowledged.
	// Default 128.
	Window int
	// WindowBytes caps the bytes of those entries. Default 512 KiB.
	WindowBytes int
	// Retention is how long an inbox entry waits for its devices before it
	// expires, and how long send dedupe records are kept. Default 30 days.
	Retention time.Duration
	// CacheBytes is the size of the shard's Pebble block cache. Default
	// 32 MiB.
	CacheBytes int64
	// MemTableBytes is the size of the shard's Pebble memtable; up to two
	// may be held while one flushes. Default 64 MiB.
	MemTableBytes uint64
	// CacheUsers is how many users without a live session the shard keeps
	// in memory. Default 100,000.
	CacheUsers int
	// InboxEntries and InboxBytes are the quota of a user's queue of
	// undelivered entries: a 1:1 send that would go beyond either is
	// refused with INBOX_FULL (group messages, events and receipts are
	// always queued: they are bounded by the senders' rates). Defaults
	// 50,000 entries and 256 MiB.
	InboxEntries int
	InboxBytes   int64
	// RevokeLimit is how long after its id's time a message may be deleted
	// for everyone (spec [S-18-1]); older ones are refused REVOKE_EXPIRED.
	// Default 48 hours, or Retention if that is shorter. It must not
	// exceed Retention: the shard forgets messages after that.
	RevokeLimit time.Duration
	// Events receives the shard's analytics events (registrations,
	// logins, messages accepted, delivered and read, groups created); nil
	// emits none. Emit must not block: it runs on the actor.
	Events analytics.Sink
	// OnCommit, if set, is called by the actor after each commit with how
	// long the commit took and how many ops the batch applied; it must be
	// quick and must not block (metrics).
	OnCommit func(d time.Duration, ops int)
	// OnSync, if set, is called after each WAL sync (fsync) with how long
	// it took, from the goroutine that synced; it must be quick and must
	// not block (metrics).
	OnSync func(d time.Duration)
	// NoSync never syncs the WAL (Sync only releases effects). Only for
	// benchmarks that measure everything but the disk; never in
	// production.
	NoSync bool
	// SyncWait is the longest the syncer lets the actor commit the work
	// it has in hand (ops queued, or a cycle being applied) before it
	// syncs, when it wakes to sync while there is such work (adaptive
	// group commit, shard_sync.go): a busy shard then covers more cycles
	// with one fsync, and a shard with nothing in hand syncs at once, so
	// light load never waits for it. The syncer waits for the actor's
	// commits, not for this long. Default (zero) 50 µs; negative: never
	// wait (docs/benchmarks.md, "Adaptive group commit", has what it
	// saves).
	SyncWait time.Duration
	// LazySync is the longest a cycle whose only promises may wait (a
	// delivered receipt an ACK makes, the watermark of a 1:1 forward
	// applied: shard_sync.go) waits for a sync another cycle asks for
	// before it asks for one itself; its effects are held until then.
	// Default (zero) 2 ms; negative: ask at once, as for any promise.
	LazySync time.Duration

	// CodeTTL is how long a verification code is valid. Default 10 minutes.
	CodeTTL time.Duration
	// CodeInterval is the least time between two codes for one phone.
	// Default 30 seconds.
	CodeInterval time.Duration
	// CodesPerHour is how many codes one phone may be sent per hour.
	// Default 5.
	CodesPerHour int
	// CodeAttempts is how many wrong codes end a code. Default 5.
	CodeAttempts int
	// GroupsPerHour is how many groups one user may create in an hour;
	// more are refused RATE_LIMITED. Default 20.
	GroupsPerHour int
	// PreKeysPerRequester is how many one-time prekeys of one device one
	// user may take (KEYS_FETCH) per day, UTC; its further fetches get the
	// device's bundle without one ([S-17-4]). Counted in memory: a restart
	// forgets the counts. Default 20.
	PreKeysPerRequester int
	// MaxPendingLinks bounds the link codes a shard holds for companions
	// waiting for approval (each holds the companion's connection in
	// memory for two minutes); beyond it LINK_REQUEST is refused
	// RATE_LIMITED. Default 10,000.
	MaxPendingLinks int
	// CodeKey is the secret of the keyed hash (HMAC-SHA256) under which
	// verification codes are stored, so a copy of the database does not
	// reveal live codes: keep it outside the database (the node keeps it in
	// a file of its data directory). nil means a random key per Open: codes
	// issued before a restart then no longer verify.
	CodeKey []byte
	// Epoch is the placement epoch the shard is opened under, in a
	// cluster (docs/cluster.md): Open records it in the database (ffff
	// 'E') and refuses, with ErrStaleEpoch, a database that records a
	// newer one. 0, outside a cluster, records and checks nothing.
	Epoch uint64
	// Fence, if set, is asked before each cycle whether the shard may
	// commit (in a cluster: the node still owns the shard and its lease is
	// alive, cluster.Fence). While it says no, the shard applies and
	// commits nothing: the ops of a cycle are answered SHARD_UNAVAILABLE
	// or dropped (refuseFenced), and timers and maintenance wait. It is
	// called from the actor, once per cycle, and must be quick and must
	// not block. nil, on a single node, never fences.
	Fence func() bool

	// TestPrefix and TestCode reserve phone numbers for testing, as SMS
	// gateways do: a number starting with TestPrefix is sent no code, and
	// TestCode verifies it (load tests and staging). Empty TestPrefix: none.
	TestPrefix, TestCode string
}

func (c *Config) setDefaults() {
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = 1 << 16
	}
	if c.Window == 0 {
		c.Window = 128
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = 512 << 10
	}
	if c.Retention == 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 32 << 20
	}
	if c.MemTableBytes == 0 {
		c.MemTableBytes = 64 << 20
	}
	if c.CacheUsers == 0 {
		c.CacheUsers = 100_000
	}
	if c.InboxEntries == 0 {
		c.InboxEntries = 50_000
	}
	if c.InboxBytes == 0 {
		c.InboxBytes = 256 << 20
	}
	if c.RevokeLimit == 0 {
		c.RevokeLimit = min(48*time.Hour, c.Retention)
	}
	if c.CodeTTL == 0 {
		c.CodeTTL = 10 * time.Minute
	}
	if c.CodeInterval == 0 {
		c.CodeInterval = 30 * time.Second
	}
	if c.CodesPerHour == 0 {
		c.CodesPerHour = 5
	}
	if c.CodeAttempts == 0 {
		c.CodeAttempts = 5
	}
	if c.GroupsPerHour == 0 {
		c.GroupsPerHour = 20
	}
	if c.PreKeysPerRequester == 0 {
		c.PreKeysPerRequester = 20
	}
	if c.MaxPendingLinks == 0 {
		c.MaxPendingLinks = 10_000
	}
	if c.SyncWait == 0 {
		c.SyncWait = DefaultSyncWait
	}
	if c.LazySync == 0 {
		c.LazySync = DefaultLazySync
	}
}

// validate reports every problem with c at once.
func (c *Config) validate() error {
	var errs []error
	if c.ID >= MaxShards {
		errs = append(errs, fmt.Errorf("shard id %d not below %d", c.ID, MaxShards))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("no directory"))
	}
	if c.Forwarder == nil {
		errs = append(errs, errors.New("no forwarder"))
	}
	if c.Conns == nil {
		errs = append(errs, errors.New("no connection resolver"))
	}
	if c.Codes == nil {
		errs = append(errs, errors.New("no code sender"))
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"queue limit", c.QueueLimit}, {"window", c.Window}, {"window bytes", c.WindowBytes},
		{"cache users", c.CacheUsers}, {"codes per hour", c.CodesPerHour}, {"code attempts", c.CodeAttempts},
		{"pending links", c.MaxPendingLinks}, {"groups per hour", c.GroupsPerHour},
		{"prekeys per requester", c.PreKeysPerRequester},
		{"inbox entries", c.InboxEntries}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("negative %s %d", v.name, v.n))
		}
	}
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"retention", c.Retention}, {"code TTL", c.CodeTTL}, {"code interval", c.CodeInterval}, {"revoke limit", c.RevokeLimit}} {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("negative %s %v", v.name, v.d))
		}
	}
	if c.RevokeLimit > c.Retention {
		errs = append(errs, fmt.Errorf("revoke limit %v beyond the retention %v", c.RevokeLimit, c.Retention))
	}
	if c.InboxBytes < 0 {
		errs = append(errs, fmt.Errorf("negative inbox bytes %d", c.InboxBytes))
	}
	if c.CodeKey != nil && len(c.CodeKey) < 16 {
		errs = append(errs, fmt.Errorf("code key of %d bytes, want at least 16", len(c.CodeKey)))
	}
	if c.TestPrefix != "" && c.TestCode == "" {
		errs = append(errs, errors.New("test phone prefix without a test code"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("storage: config: %w", err)
	}
	return nil
}
