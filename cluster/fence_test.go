package cluster

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// manualClock is a monotonic clock moved by hand.
type manualClock struct {
	mu  sync.Mutex
	now time.Duration // guarded by mu
}

func (c *manualClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Set(d time.Duration) {
	c.mu.Lock()
	c.now = d
	c.mu.Unlock()
}

func fenceState(self uint32, others ...uint32) *State {
	st := &State{Shards: 2, Slots: SlotMap(2), Epoch: 7,
		Placement: []Placement{{self, 7}, {99, 3}}, Members: members(append(others, self)...)}
	return st
}

func TestFenceLease(t *testing.T) {
	clk := &manualClock{}
	f := newFence(1, clk.Now, 5*time.Second)
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid before any placement")
	}
	f.setState(fenceState(1))
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid before any keepalive")
	}
	// A keepalive sent at 10 s answered with a 5 s TTL, 1 s margin: the
	// lease surely lives until 14 s on the node's monotonic clock.
	clk.Set(10 * time.Second)
	f.renewed(10*time.Second, 5*time.Second, time.Second)
	clk.Set(14*time.Second - 1)
	if epoch, ok := f.Valid(0); !ok || epoch != 7 {
		t.Fatalf("Valid(0) = %d, %v just before the bound", epoch, ok)
	}
	if err := f.Check(0, 7); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(0, 6); !errors.Is(err, ErrEpoch) {
		t.Fatalf("Check at an old epoch: %v", err)
	}
	if err := f.Check(1, 3); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Check of another node's shard: %v", err)
	}
	if err := f.Check(5, 0); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Check of a shard out of range: %v", err)
	}
	if f.EtcdDown() {
		t.Fatal("etcd down while the lease lives")
	}
	clk.Set(14 * time.Second)
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid at the bound")
	}
	if err := f.Check(0, 7); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Check after the bound: %v", err)
	}
	if !f.EtcdDown() {
		t.Fatal("an unrenewed lease is not reported as etcd down")
	}
	// etcd said the lease is gone: closed, and not "etcd down".
	f.renewed(14*time.Second, 5*time.Second, time.Second)
	f.expire()
	if _, ok := f.Valid(0); ok || f.EtcdDown() {
		t.Fatalf("after expire: valid %v, etcd down %v", ok, f.EtcdDown())
	}
}

func TestFenceEveryoneDown(t *testing.T) {
	clk := &manualClock{}
	f := newFence(1, clk.Now, 3*time.Second)
	f.setState(fenceState(1, 2, 3, 4))
	f.renewed(0, 5*time.Second, time.Second)
	clk.Set(4 * time.Second) // own reckoning lapsed
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid with a lapsed lease and no reports")
	}
	f.ReportPeer(2, true)
	f.ReportPeer(9, true) // not a member: ignored
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid with 1 of 3 others down")
	}
	f.ReportPeer(3, true)
	if epoch, ok := f.Valid(0); !ok || epoch != 7 {
		t.Fatalf("2 of 3 others down: Valid = %d, %v", epoch, ok)
	}
	f.ReportPeer(3, false) // etcd is back for 3: it could see a reassignment
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid after a peer reached etcd again")
	}
	f.ReportPeer(3, true)
	clk.Set(4*time.Second + 3*time.Second) // the reports are as old as their TTL
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid on stale reports")
	}
	f.ReportPeer(2, true)
	f.ReportPeer(3, true)
	f.ReportPeer(4, true)
	f.expire() // etcd answered: the lease is gone. Peers cannot override that.
	if _, ok := f.Valid(0); ok {
		t.Fatal("valid after etcd said the lease is gone")
	}

	// Half of the others is not a majority.
	even := newFence(1, clk.Now, time.Second)
	even.setState(fenceState(1, 2, 3, 4, 5))
	even.ReportPeer(2, true)
	even.ReportPeer(3, true)
	if _, ok := even.Valid(0); ok {
		t.Fatal("valid with 2 of 4 others down")
	}
	even.ReportPeer(4, true)
	if _, ok := even.Valid(0); !ok {
		t.Fatal("3 of 4 others down: not valid")
	}

	// A lone member has no one to agree with.
	lone := newFence(1, clk.Now, time.Second)
	lone.setState(fenceState(1))
	if _, ok := lone.Valid(0); ok {
		t.Fatal("a lone member valid without a lease")
	}
	// Two members: the other one's report is a strict majority of the others.
	pair := newFence(1, clk.Now, time.Second)
	pair.setState(fenceState(1, 2))
	pair.ReportPeer(2, true)
	if _, ok := pair.Valid(0); !ok {
		t.Fatal("two members, both down: not valid")
	}
}
