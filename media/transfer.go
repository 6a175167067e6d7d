package media

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The endpoint's transfers ([S-14-14], [S-14-18], [S-14-19]). Every HTTP request
// holds one of Config.MaxTransfers slots while it runs. A slot is counted
// against the user the URL was issued to; one user holds at most
// Config.MaxUserTransfers, and the last Config.ReservedTransfers free
// slots go only to users holding none, so a handful of accounts cannot
// lock everyone else out. A transfer moving its body slower than
// Config.MinTransferRate over a Config.RateWindow is cut: the watchdog
// (checkTransfers, every second) sets the I/O deadline of its connection
// in the past, which ends the blocked read or write at once.

// refusal says why a request got no transfer slot, or why an upload was
// refused for lack of room; the zero value admits.
type refusal int

const (
	admitted       refusal = iota
	refuseFull             // every slot taken, or the service closing: 503 OVERLOADED
	refuseUser             // the user holds MaxUserTransfers: 429 MEDIA_TOO_MANY_TRANSFERS
	refuseReserved         // only the reserved share is free and the user holds one: 429
	refuseQuota            // the staging quota: MEDIA_QUOTA_EXCEEDED
	refuseDisk             // the free-space reserve: MEDIA_STORAGE_FULL
	refuseRate             // RequestsPerMinute on the chat connection: RATE_LIMITED
	numRefusals
)

// refusalNames label the refusals in metrics.
var refusalNames = [numRefusals]string{
	refuseFull:     "endpoint_full",
	refuseUser:     "user_transfers",
	refuseReserved: "reserved_share",
	refuseQuota:    "staging_quota",
	refuseDisk:     "disk_reserve",
	refuseRate:     "rate_limited",
}

// errSlow is a transfer the watchdog cut for moving too slowly.
var errSlow = errors.New("media: transfer below the minimum rate")

// transfer is one HTTP request holding a slot.
type transfer struct {
	user   uint64
	upload bool // a PUT: its reads are cut; otherwise its writes
	// cancel makes the transfer's blocked read or write fail at once (it
	// sets the connection's deadline in the past).
	cancel func()
	owner  *transfers
	// moved counts the body bytes read or written so far.
	moved atomic.Int64

	// Guarded by owner.mu.
	streaming bool      // the body is moving: the rate applies
	winStart  time.Time // start of the current rate window
	winMoved  int64     // moved at winStart

	// mu orders cut with the deadline changes of the transfer's own
	// goroutine (arm): once cut is set, no deadline is moved again; and
	// cancel with the end of the request (done), after which the
	// connection may carry another request that must not be cut.
	mu   sync.Mutex
	cut  bool // guarded by mu
	done bool // guarded by mu
}

// arm sets the deadline of the next read or write through set, unless the
// watchdog has cut the transfer: then it reports false.
func (t *transfer) arm(set func(time.Time) error, d time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return false
	}
	_ = set(d)
	return true
}

// wasCut reports whether the watchdog cut the transfer.
func (t *transfer) wasCut() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cut
}

// progress counts m more bytes moved; the first bytes of a transfer
// notify waiters (tests wait for a stream to be under way).
func (t *transfer) progress(m int) {
	if m > 0 && t.moved.Add(int64(m)) == int64(m) {
		t.owner.notify()
	}
}

// transfers admits requests and watches their rate. Its methods are safe
// for concurrent use.
type transfers struct {
	max, perUser, reserved int
	window                 time.Duration
	minBytes               int64 // per window; 0: no minimum

	mu      sync.Mutex
	inUse   int                    // guarded by mu
	users   map[uint64]int         // guarded by mu: slots per user
	active  map[*transfer]struct{} // guarded by mu
	closed  bool                   // guarded by mu: no more admissions
	changed chan struct{}          // guarded by mu: closed (and replaced) on every change
}

func newTransfers(cfg *Config) *transfers {
	x := &transfers{
		max:      cfg.MaxTransfers,
		perUser:  cfg.MaxUserTransfers,
		reserved: max(0, cfg.ReservedTransfers),
		window:   cfg.RateWindow,
		users:    make(map[uint64]int),
		active:   make(map[*transfer]struct{}),
		changed:  make(chan struct{}),
	}
	if cfg.MinTransferRate > 0 {
		x.minBytes = int64(float64(cfg.MinTransferRate) * cfg.RateWindow.Seconds())
	}
	return x
}

// notifyLocked wakes everyone waiting for a change. x.mu must be held.
func (x *transfers) notifyLocked() {
	close(x.changed)
	x.changed = make(chan struct{})
}

func (x *transfers) notify() {
	x.mu.Lock()
	x.notifyLocked()
	x.mu.Unlock()
}

// acquire admits a request of user, or says why not ([S-14-14],
// [S-14-18]).
func (x *transfers) acquire(user uint64, upload bool, cancel func()) (*transfer, refusal) {
	x.mu.Lock()
	defer x.mu.Unlock()
	held, free := x.users[user], x.max-x.inUse
	switch {
	case x.closed || free == 0:
		return nil, refuseFull
	case held >= x.perUser:
		return nil, refuseUser
	case held > 0 && free <= x.reserved:
		return nil, refuseReserved
	}
	t := &transfer{user: user, upload: upload, cancel: cancel, owner: x}
	x.inUse++
	x.users[user] = held + 1
	x.active[t] = struct{}{}
	x.notifyLocked()
	return t, admitted
}

// release ends t; it must be called before the request's handler returns.
func (x *transfers) release(t *transfer) {
	t.mu.Lock()
	t.done = true
	t.mu.Unlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.active, t)
	x.inUse--
	if x.users[t.user]--; x.users[t.user] == 0 {
		delete(x.users, t.user)
	}
	x.notifyLocked()
}

// stream marks t's body as moving (on) or done; the rate applies while it
// moves, in windows counted from now.
func (x *transfers) stream(t *transfer, on bool, now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	t.streaming = on
	t.winStart, t.winMoved = now, t.moved.Load()
	x.notifyLocked()
}

// check cuts every streaming transfer that moved fewer than minBytes in a
// window that has ended by now, starts a new window for the others, and
// returns how many uploads and downloads it cut.
func (x *transfers) check(now time.Time) (uploads, downloads int) {
	if x.minBytes <= 0 {
		return 0, 0
	}
	var slow []*transfer
	x.mu.Lock()
	for t := range x.active {
		if !t.streaming || now.Sub(t.winStart) < x.window {
			continue
		}
		moved := t.moved.Load()
		if moved-t.winMoved >= x.minBytes {
			t.winStart, t.winMoved = now, moved
			continue
		}
		t.streaming = false
		slow = append(slow, t)
	}
	x.mu.Unlock()
	// Cancel outside x.mu: with HTTP/2 it hands a frame to the
	// connection's goroutine.
	for _, t := range slow {
		t.mu.Lock()
		if !t.done {
			t.cut = true
			t.cancel()
			if t.upload {
				uploads++
			} else {
				downloads++
			}
		}
		t.mu.Unlock()
	}
	return uploads, downloads
}

// close stops admitting requests and waits until every transfer in
// progress has ended.
func (x *transfers) close() {
	x.mu.Lock()
	x.closed = true
	for x.inUse > 0 {
		ch := x.changed
		x.mu.Unlock()
		<-ch
		x.mu.Lock()
	}
	x.mu.Unlock()
}

// transferCounts is a snapshot of the transfers, for tests and metrics.
type transferCounts struct {
	InUse     int            // slots held
	Streaming int            // transfers whose body is moving and has moved a byte
	Users     map[uint64]int // slots per user
}

// snapshot returns the counts and a channel closed at the next change.
func (x *transfers) snapshot() (transferCounts, <-chan struct{}) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := transferCounts{InUse: x.inUse, Users: make(map[uint64]int, len(x.users))}
	for u, n := range x.users {
		c.Users[u] = n
	}
	for t := range x.active {
		if t.streaming && t.moved.Load() > 0 {
			c.Streaming++
		}
	}
	return c, x.changed
}
