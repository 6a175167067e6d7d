package link

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLimit bounds every wait for an event: generous, since the machine is
// shared; a passing test never waits for it.
const waitLimit = 20 * time.Second

// testCA is the cluster CA of the tests' nodes.
var testCA = func() *CA {
	ca, err := NewCA(time.Now())
	if err != nil {
		panic(err)
	}
	return ca
}()

func creds(t testing.TB, ca *CA, id uint32) *Credentials {
	t.Helper()
	c, err := ca.Issue(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// item is one thing a node's handlers saw, in order.
type item struct {
	from uint32
	typ  uint8 // 0 for a gap
	body string
}

// recorder records what a Link's handlers are called with and wakes the
// test waiting for it.
type recorder struct {
	mu       sync.Mutex
	items    []item
	counts   map[uint32]int // items from each peer
	up       map[uint32]bool
	ups      map[uint32]int // times each peer came up
	restarts []string       // "peer old->new"
	notify   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{up: map[uint32]bool{}, ups: map[uint32]int{}, counts: map[uint32]int{}, notify: make(chan struct{}, 1)}
}

func (r *recorder) changed() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) hook(cfg *Config) {
	cfg.OnMessage = func(from uint32, typ uint8, body []byte) {
		r.mu.Lock()
		r.items = append(r.items, item{from, typ, string(body)})
		r.counts[from]++
		r.mu.Unlock()
		r.changed()
	}
	cfg.OnGap = func(from uint32) {
		r.mu.Lock()
		r.items = append(r.items, item{from: from})
		r.counts[from]++
		r.mu.Unlock()
		r.changed()
	}
	cfg.OnPeerState = func(peer uint32, up bool) {
		r.mu.Lock()
		r.up[peer] = up
		if up {
			r.ups[peer]++
		}
		r.mu.Unlock()
		r.changed()
	}
	cfg.OnPeerRestart = func(peer, oldGen, newGen uint32) {
		r.mu.Lock()
		r.restarts = append(r.restarts, fmt.Sprintf("%d %d->%d", peer, oldGen, newGen))
		r.mu.Unlock()
		r.changed()
	}
}

// wait waits until cond, called with r.mu held, is true.
func (r *recorder) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			r.mu.Lock()
			n := len(r.items)
			r.mu.Unlock()
			t.Fatalf("timed out waiting for %s (%d items received)", what, n)
		}
	}
}

// from returns the items received from peer.
func (r *recorder) from(peer uint32) []item {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []item
	for _, it := range r.items {
		if it.from == peer {
			out = append(out, it)
		}
	}
	return out
}

// countFrom returns how many items came from peer; r.mu must be held.
func (r *recorder) countFrom(peer uint32) int { return r.counts[peer] }

// node is a Link under test with its recorder.
type node struct {
	*Link
	rec  *recorder
	cred *Credentials
	gen  uint32
	addr string
}

// fastConfig has timings short enough for tests to see failures quickly.
func fastConfig(cfg Config) Config {
	cfg.Heartbeat = 20 * time.Millisecond
	cfg.DeadAfter = 300 * time.Millisecond
	cfg.HandshakeTimeout = time.Second
	cfg.BackoffMin = 5 * time.Millisecond
	cfg.BackoffMax = 50 * time.Millisecond
	return cfg
}

// startNode starts a Link for id with generation gen on addr
// ("127.0.0.1:0" for any port); edit may change its Config.
func startNode(t testing.TB, cred *Credentials, gen uint32, addr string, edit func(*Config)) *node {
	t.Helper()
	n := &node{rec: newRecorder(), cred: cred, gen: gen}
	cfg := fastConfig(Config{Credentials: cred, Gen: gen, Addr: addr})
	n.rec.hook(&cfg)
	if edit != nil {
		edit(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.onAcked = n.rec.changed
	n.Link, n.addr = l, l.Addr().String()
	t.Cleanup(func() { _ = l.Close() })
	return n
}

// sendAll sends msgs[i] as type 1 to peer, failing on any refusal.
func sendAll(t testing.TB, n *node, peer uint32, msgs []string) {
	t.Helper()
	for _, m := range msgs {
		if err := n.Send(peer, 1, []byte(m)); err != nil {
			t.Fatalf("send %q: %v", m, err)
		}
	}
}

func numbered(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%06d", prefix, i))
	}
	return out
}

// bodies returns the bodies of items, "GAP" for a gap.
func bodies(items []item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		if it.typ == 0 {
			out[i] = "GAP"
		} else {
			out[i] = it.body
		}
	}
	return out
}

// sameSeq fails unless got equals want exactly: same messages, once each,
// in order.
func sameSeq(t testing.TB, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("received %d items, want %d\nfirst got: %s", len(got), len(want), head(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("item %d is %q, want %q", i, got[i], want[i])
		}
	}
}

func head(s []string) string {
	if len(s) > 8 {
		s = s[:8]
	}
	return strings.Join(s, " ")
}
