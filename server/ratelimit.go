package server

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// Budget is a token bucket (golang.org/x/time/rate): up to Burst requests
// at once, refilled at PerSecond. The zero value of each field means the
// default of the Config field that holds it.
type Budget struct {
	// PerSecond is the sustained rate, in requests per second (1.0/60 is
	// one a minute). 0 means the default; negative means no limit.
	PerSecond float64
	// Burst is how many requests may come at once: the bucket's size,
	// full at the start. 0 means the default.
	Burst int
}

// orDefault returns b with its zero fields taken from def.
func (b Budget) orDefault(def Budget) Budget {
	if b.PerSecond == 0 {
		b.PerSecond = def.PerSecond
	}
	if b.Burst == 0 {
		b.Burst = def.Burst
	}
	return b
}

// validate reports what is wrong with b, named name.
func (b Budget) validate(name string) error {
	if math.IsNaN(b.PerSecond) || math.IsInf(b.PerSecond, 0) || b.Burst < 1 {
		return fmt.Errorf("%s: rate %v, burst %d: want a finite rate and a burst of 1 or more", name, b.PerSecond, b.Burst)
	}
	return nil
}

// off reports whether b sets no limit.
func (b Budget) off() bool { return b.PerSecond < 0 }

// limiter returns a full bucket for b; with no limit, one that allows
// everything.
func (b Budget) limiter() *rate.Limiter {
	if b.off() {
		return rate.NewLimiter(rate.Inf, b.Burst)
	}
	return rate.NewLimiter(rate.Limit(b.PerSecond), b.Burst)
}

// Limit names one of the server's rate limits, for Stats.RateLimited and
// the admin endpoint's parley_rate_limited_total.
type Limit uint8

// The server's rate limits (docs/security.md). Each refuses with
// RATE_LIMITED and a retry_after_ms.
const (
	LimitCodesPerConn   Limit = iota // REQUEST_CODE per connection ([S-9-17])
	LimitCodesPerIP                  // REQUEST_CODE per client address ([S-9-17])
	LimitCodesPerPrefix              // REQUEST_CODE per phone number prefix ([S-9-17])
	LimitCodesPerNode                // REQUEST_CODE for the whole node ([S-9-17])
	LimitLinksPerConn                // LINK_REQUEST per connection ([S-9-12])
	LimitLinksPerIP                  // LINK_REQUEST per client address ([S-9-12])
	LimitSends                       // 1:1 SENDs per account ([S-8-23])
	LimitGroupSends                  // group SENDs per account ([S-8-23])
	LimitLookups                     // LOOKUPs per account ([S-9-11])
	LimitKeyFetches                  // KEYS_FETCHes per account ([S-17-15])
	NumLimits                        // the number of limits
)

var limitNames = [NumLimits]string{
	LimitCodesPerConn:   "codes_per_connection",
	LimitCodesPerIP:     "codes_per_ip",
	LimitCodesPerPrefix: "codes_per_prefix",
	LimitCodesPerNode:   "codes_per_node",
	LimitLinksPerConn:   "link_requests_per_connection",
	LimitLinksPerIP:     "link_requests_per_ip",
	LimitSends:          "sends_per_account",
	LimitGroupSends:     "group_sends_per_account",
	LimitLookups:        "lookups_per_account",
	LimitKeyFetches:     "key_fetches_per_account",
}

// String returns the limit's name as the metrics label it: snake case,
// such as "codes_per_ip".
func (l Limit) String() string {
	if l < NumLimits {
		return limitNames[l]
	}
	return fmt.Sprintf("limit(%d)", uint8(l))
}

// waitMS returns the milliseconds until l has n tokens at now, at least 1
// (retry_after_ms 0 would mean "no wait").
func waitMS(l *rate.Limiter, n int, now time.Time) uint32 {
	r := float64(l.Limit())
	if r <= 0 {
		return math.MaxUint32
	}
	ms := math.Ceil((float64(n) - l.TokensAt(now)) / r * 1e3)
	return uint32(min(max(ms, 1), math.MaxUint32))
}

// budgetStripes splits a keyedBudgets's map so that event loops taking
// tokens for different keys rarely wait for one another.
const budgetStripes = 16

// maxBudgetKeys bounds the buckets a keyedBudgets remembers in each
// stripe; when a stripe is full, the buckets that have refilled (they
// lose nothing by being forgotten) are dropped first.
const maxBudgetKeys = 4096

// keyedBudgets is one token bucket per key (an account, a client address,
// a phone number prefix), all of the same Budget, kept in memory: a
// restart of the node refills every bucket. Safe for concurrent use.
type keyedBudgets[K comparable] struct {
	budget  Budget
	seed    maphash.Seed
	stripes [budgetStripes]budgetStripe[K]
}

type budgetStripe[K comparable] struct {
	mu sync.Mutex
	m  map[K]*rate.Limiter // guarded by mu
}

func newKeyedBudgets[K comparable](b Budget) *keyedBudgets[K] {
	k := &keyedBudgets[K]{budget: b, seed: maphash.MakeSeed()}
	for i := range k.stripes {
		k.stripes[i].m = make(map[K]*rate.Limiter)
	}
	return k
}

// take spends n tokens of key's bucket at now and returns 0, or returns
// how many milliseconds until n are available and spends nothing.
func (k *keyedBudgets[K]) take(key K, n int, now time.Time) uint32 {
	if k.budget.off() {
		return 0
	}
	l := k.bucket(key, now)
	if l.AllowN(now, n) {
		return 0
	}
	return waitMS(l, n, now)
}

// reserve is take for a request that may still be refused by a later
// limit: it returns the reservation, to be cancelled then, or the wait.
func (k *keyedBudgets[K]) reserve(key K, now time.Time) (*rate.Reservation, uint32) {
	if k.budget.off() {
		return nil, 0
	}
	return reserve(k.bucket(key, now), now)
}

// stripeOf returns the stripe that holds key's bucket.
func (k *keyedBudgets[K]) stripeOf(key K) *budgetStripe[K] {
	return &k.stripes[maphash.Comparable(k.seed, key)%budgetStripes]
}

// bucket returns key's bucket, created full if it has none.
func (k *keyedBudgets[K]) bucket(key K, now time.Time) *rate.Limiter {
	s := k.stripeOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.m[key]
	if l == nil {
		if len(s.m) >= maxBudgetKeys {
			s.forgetLocked(now, float64(k.budget.Burst))
		}
		l = k.budget.limiter()
		s.m[key] = l
	}
	return l
}

// forgetLocked drops the buckets that have refilled, or, if that leaves
// more than half, arbitrary ones until half are left. s.mu must be held.
func (s *budgetStripe[K]) forgetLocked(now time.Time, full float64) {
	for key, l := range s.m {
		if l.TokensAt(now) >= full {
			delete(s.m, key)
		}
	}
	for key := range s.m {
		if len(s.m) < maxBudgetKeys/2 {
			return
		}
		delete(s.m, key)
	}
}

// reserve takes one token of l at now and returns its reservation, or nil
// and the milliseconds until one is available.
func reserve(l *rate.Limiter, now time.Time) (*rate.Reservation, uint32) {
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return nil, math.MaxUint32
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, uint32(min((d+time.Millisecond-1)/time.Millisecond, math.MaxUint32)) // rounded up
	}
	return r, 0
}

// codeLimits are the node's limits on verification codes that cost an
// SMS ([S-9-17]), besides each connection's own (conn.codes). Safe for
// concurrent use.
type codeLimits struct {
	perIP     *keyedBudgets[netip.Addr]
	perPrefix *keyedBudgets[string]
	node      *rate.Limiter
	digits    int // of a phone number after '+', its prefix
}

// take spends one code of every budget that applies to a REQUEST_CODE for
// phone on c at now, in order from the narrowest (the connection's) to
// the widest (the node's), so that one client exhausts its own budgets
// before it touches shared ones. It returns 0, or the wait and the limit
// that refused, having spent nothing.
func (cl *codeLimits) take(c *conn, phone string, now time.Time) (uint32, Limit) {
	var taken [3]*rate.Reservation
	n := 0
	undo := func() {
		for _, r := range taken[:n] {
			r.CancelAt(now)
		}
	}
	if c.codes == nil {
		c.codes = c.srv.cfg.CodesPerConn.limiter()
	}
	r, wait := reserve(c.codes, now)
	if wait > 0 {
		return wait, LimitCodesPerConn
	}
	taken[n], n = r, n+1
	if c.ip != nil {
		if r, wait = cl.perIP.reserve(c.ip.addr, now); wait > 0 {
			undo()
			return wait, LimitCodesPerIP
		}
		if r != nil {
			taken[n], n = r, n+1
		}
	}
	if r, wait = cl.perPrefix.reserve(phone[1:min(len(phone), 1+cl.digits)], now); wait > 0 {
		undo()
		return wait, LimitCodesPerPrefix
	}
	if r != nil {
		taken[n], n = r, n+1
	}
	if _, wait = reserve(cl.node, now); wait > 0 {
		undo()
		return wait, LimitCodesPerNode
	}
	return 0, 0
}

// rateLimited answers a request (by rid) or a SEND (by cmid) that limit
// refused with RATE_LIMITED and its retry_after_ms, and counts it.
func (c *conn) rateLimited(w *buffer, limit Limit, rid uint32, cmid uint64, waitMS uint32) verdict {
	c.srv.stats.RateLimited[limit].Add(1)
	w.b = codec.AppendError(w.b, protocol.CodeRateLimited, rid, cmid, "", waitMS)
	return verdict{}
}

// takeSend spends one SEND of the account's budget, 1:1 or group
// ([S-8-23]), and returns 0, or the wait and the limit that refused.
func (c *conn) takeSend(group bool) (uint32, Limit) {
	b, limit := c.srv.sends, LimitSends
	if group {
		b, limit = c.srv.groupSends, LimitGroupSends
	}
	return b.take(c.user, 1, c.srv.cfg.Now()), limit
}
