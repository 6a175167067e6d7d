package sendorder

import (
	"time"

	"github.com/parley-im/parley/protocol"
)

// TTL is how long a barrier holds at most ([S-8-13]): far above every
// retry_after_ms the server names (30 s at most), so a client that never
// retries the refused SEND gets its conversation back eventually.
const TTL = 5 * time.Minute

// Conversation names the conversation of a SEND: the recipient user, or
// the group.
type Conversation struct {
	To    uint64 // the user, or the group when Group
	Group bool
}

// ConversationOf returns the conversation of a SEND to user to, or to
// group when group is not 0.
func ConversationOf(to, group uint64) Conversation {
	if group != 0 {
		return Conversation{To: group, Group: true}
	}
	return Conversation{To: to}
}

// Barrier is the refusal that holds a conversation back.
type Barrier struct {
	CMID    uint64        // the refused SEND; reading it again lowers the barrier
	Code    protocol.Code // the refusal, repeated to the SENDs held back
	RetryMS uint32        // its retry_after_ms, repeated likewise
	// Tag is the raiser's own detail of the refusal (the gateway: which
	// rate limit refused a RATE_LIMITED SEND); 0 when it keeps none.
	Tag uint8
	At  int64 // unix nanoseconds when it was raised, for TTL
}

// Expired reports whether b was raised TTL or longer before now.
func (b Barrier) Expired(now time.Time) bool {
	return now.UnixNano()-b.At >= int64(TTL)
}

// Set holds the barriers of one owner keyed by K: the gateway's by
// Conversation for each connection, the shard's by connection and
// conversation. The zero Set is empty and ready to use; an empty Set
// keeps no map.
type Set[K comparable] struct {
	m map[K]Barrier // nil when empty
}

// Len returns how many barriers s holds, expired ones included until
// they are seen or dropped.
func (s *Set[K]) Len() int { return len(s.m) }

// Hold returns the barrier that holds back the SEND cmid of k, and true,
// if there is one: k's barrier raised for a lower cmid less than TTL
// before now(). The refused cmid itself lowers k's barrier and passes, as
// does any SEND once the barrier expired; a lower cmid (made before the
// refused one, so its place is before it) passes and leaves the barrier
// up. now is called only when k has a barrier; Hold allocates nothing.
func (s *Set[K]) Hold(k K, cmid uint64, now func() time.Time) (Barrier, bool) {
	if len(s.m) == 0 {
		return Barrier{}, false
	}
	b, ok := s.m[k]
	switch {
	case !ok || cmid < b.CMID:
		return Barrier{}, false
	case cmid == b.CMID || b.Expired(now()):
		s.delete(k)
		return Barrier{}, false
	}
	return b, true
}

// Raise holds k back behind b (b.At is the time of the refusal),
// replacing k's barrier if it has one. When k has none and s already
// holds limit barriers, it first drops the expired ones; if s is still
// full it raises nothing and returns false (the gateway then closes the
// connection, the shard holds nothing back).
func (s *Set[K]) Raise(k K, b Barrier, limit int) bool {
	if _, ok := s.m[k]; !ok && len(s.m) >= limit {
		s.Expire(time.Unix(0, b.At))
		if len(s.m) >= limit {
			return false
		}
	}
	if s.m == nil {
		s.m = make(map[K]Barrier)
	}
	s.m[k] = b
	return true
}

// Drop lowers the barriers whose key gone reports.
func (s *Set[K]) Drop(gone func(K) bool) {
	for k := range s.m {
		if gone(k) {
			delete(s.m, k)
		}
	}
	s.release()
}

// Expire lowers the barriers raised TTL or longer before now.
func (s *Set[K]) Expire(now time.Time) {
	for k, b := range s.m {
		if b.Expired(now) {
			delete(s.m, k)
		}
	}
	s.release()
}

// delete lowers k's barrier.
func (s *Set[K]) delete(k K) {
	delete(s.m, k)
	s.release()
}

// release lets an empty Set's map go, so an idle owner keeps none.
func (s *Set[K]) release() {
	if len(s.m) == 0 {
		s.m = nil
	}
}
