package server

import (
	"sync"
	"time"
)

// maxLookupAccounts bounds the accounts whose lookup budget the server
// remembers; when full, the accounts whose budget has refilled (they lose
// nothing by being forgotten) are dropped first.
const maxLookupAccounts = 1 << 16

// lookupBudgets is the LOOKUP rate limit of every account on this server
// ([S-9-11]): a token bucket per account, shared by its devices and
// connections, so reconnecting does not refill it. It lives in memory: a
// restart of the node refills every bucket. Safe for concurrent use.
type lookupBudgets struct {
	perMinute float64
	mu        sync.Mutex
	buckets   map[uint64]*lookupBucket // guarded by mu
}

type lookupBucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newLookupBudgets(perMinute int) *lookupBudgets {
	return &lookupBudgets{perMinute: float64(perMinute), buckets: make(map[uint64]*lookupBucket)}
}

// take spends one lookup of user's budget at now and returns 0, or returns
// how many milliseconds until one is available.
func (l *lookupBudgets) take(user uint64, now time.Time) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[user]
	if b == nil {
		if len(l.buckets) >= maxLookupAccounts {
			l.forgetFullLocked(now)
		}
		b = &lookupBucket{tokens: l.perMinute, at: now}
		l.buckets[user] = b
	}
	b.refill(now, l.perMinute)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return uint32((1-b.tokens)/l.perMinute*60e3) + 1
}

func (b *lookupBucket) refill(now time.Time, perMinute float64) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(perMinute, b.tokens+d.Minutes()*perMinute)
		b.at = now
	}
}

// forgetFullLocked drops the buckets that have refilled, or, if none has,
// the oldest half of them. l.mu must be held.
func (l *lookupBudgets) forgetFullLocked(now time.Time) {
	for id, b := range l.buckets {
		if b.refill(now, l.perMinute); b.tokens >= l.perMinute {
			delete(l.buckets, id)
		}
	}
	for id := range l.buckets {
		if len(l.buckets) < maxLookupAccounts/2 {
			return
		}
		delete(l.buckets, id)
	}
}
