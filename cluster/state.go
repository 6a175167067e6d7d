package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// State is a snapshot of a cluster as stored in etcd at one revision. A
// State is immutable once a Watcher delivered it: share it, never modify
// it.
type State struct {
	// Revision is the etcd revision the snapshot reflects.
	Revision int64
	// Shards is the fixed shard count; 0 until the cluster is created.
	Shards int
	// Slots maps each slot to its shard (len NumSlots); nil until the
	// cluster is created.
	Slots []uint16
	// Epoch is the last placement epoch the controller issued.
	Epoch uint64
	// Placement is each shard's placement, by shard number (len Shards);
	// the zero Placement is an unplaced shard.
	Placement []Placement
	// Members are the nodes whose leases are alive, by id.
	Members map[uint32]Member
	// Moves are operators' pending move requests: shard → target node.
	Moves map[uint16]uint32
}

// Created reports whether the cluster's shard count and slot map are
// written.
func (s *State) Created() bool { return s.Shards > 0 && s.Slots != nil }

// AllPlaced reports whether the cluster is created and every shard is
// placed on a node.
func (s *State) AllPlaced() bool {
	if !s.Created() {
		return false
	}
	for _, p := range s.Placement {
		if p.Node == 0 {
			return false
		}
	}
	return true
}

// ShardOfSlot returns the shard that owns slot; the cluster must be
// created.
func (s *State) ShardOfSlot(slot uint16) uint16 { return s.Slots[slot] }

// Owner returns shard's placement; the zero Placement if the shard is
// unplaced or out of range.
func (s *State) Owner(shard uint16) Placement {
	if int(shard) >= len(s.Placement) {
		return Placement{}
	}
	return s.Placement[shard]
}

// Live reports whether node's lease is alive in this snapshot.
func (s *State) Live(node uint32) bool {
	_, ok := s.Members[node]
	return ok
}

// ShardsOn returns the shards placed on node, in order.
func (s *State) ShardsOn(node uint32) []uint16 {
	var out []uint16
	for i, p := range s.Placement {
		if p.Node == node {
			out = append(out, uint16(i))
		}
	}
	return out
}

// clone returns a deep copy that may be modified.
func (s *State) clone() *State {
	c := *s
	c.Placement = slices.Clone(s.Placement)
	c.Members = maps.Clone(s.Members)
	c.Moves = maps.Clone(s.Moves)
	if c.Members == nil {
		c.Members = map[uint32]Member{}
	}
	if c.Moves == nil {
		c.Moves = map[uint16]uint32{}
	}
	return &c
}

// stateBuilder applies etcd key-values to a State.
type stateBuilder struct {
	k        keys
	st       *State
	rawSlots []byte // the slot map, decoded once the count is known
	place    map[uint16]Placement
}

func newBuilder(k keys) *stateBuilder {
	return &stateBuilder{k: k, st: (&State{}).clone(), place: map[uint16]Placement{}}
}

// put applies one key's value (del: the key was deleted). A bad value is
// reported and ignored.
func (b *stateBuilder) put(key string, value []byte, del bool) error {
	k := b.k
	switch {
	case key == k.shards():
		if del {
			b.st.Shards = 0
			return nil
		}
		n, err := decodeCount(value)
		if err != nil {
			return err
		}
		b.st.Shards = n
	case key == k.slots():
		b.rawSlots = nil
		if !del {
			b.rawSlots = bytes.Clone(value)
		}
	case key == k.epoch():
		if del {
			b.st.Epoch = 0
			return nil
		}
		e, err := decodeEpoch(value)
		if err != nil {
			return err
		}
		b.st.Epoch = e
	case strings.HasPrefix(key, k.nodes()):
		id, err := k.nodeOf(key)
		if err != nil {
			return err
		}
		if del {
			delete(b.st.Members, id)
			return nil
		}
		m, err := decodeMember(value)
		if err != nil {
			return err
		}
		b.st.Members[id] = m
	case strings.HasPrefix(key, k.places()):
		s, err := k.shardOf(key, k.places())
		if err != nil {
			return err
		}
		if del {
			delete(b.place, s)
			return nil
		}
		p, err := decodePlacement(value)
		if err != nil {
			return err
		}
		b.place[s] = p
	case strings.HasPrefix(key, k.moves()):
		s, err := k.shardOf(key, k.moves())
		if err != nil {
			return err
		}
		if del {
			delete(b.st.Moves, s)
			return nil
		}
		n, err := strconv.ParseUint(string(value), 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("cluster: bad move %q", value)
		}
		b.st.Moves[s] = uint32(n)
	}
	return nil
}

// snapshot returns the State built so far, at revision rev.
func (b *stateBuilder) snapshot(rev int64) (*State, error) {
	st := b.st.clone()
	st.Revision = rev
	st.Slots, st.Placement = nil, nil
	if st.Shards == 0 || b.rawSlots == nil {
		return st, nil
	}
	slots, err := decodeSlots(b.rawSlots, st.Shards)
	if err != nil {
		return st, err
	}
	st.Slots = slots
	st.Placement = make([]Placement, st.Shards)
	for s, p := range b.place {
		if int(s) < st.Shards {
			st.Placement[s] = p
		}
	}
	return st, nil
}

// load reads the whole cluster at one revision.
func load(ctx context.Context, cli *clientv3.Client, k keys, log *slog.Logger) (*State, *stateBuilder, error) {
	resp, err := cli.Get(ctx, k.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: read state: %w", err)
	}
	b := newBuilder(k)
	for _, kv := range resp.Kvs {
		if err := b.put(string(kv.Key), kv.Value, false); err != nil {
			log.Warn("cluster: ignoring a bad key", "key", string(kv.Key), "err", err)
		}
	}
	st, err := b.snapshot(resp.Header.Revision)
	if err != nil {
		log.Warn("cluster: bad state", "err", err)
	}
	return st, b, nil
}

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Client is the etcd client. Required.
	Client *clientv3.Client
	// Prefix is the cluster's key prefix. Default DefaultPrefix.
	Prefix string
	// OnChange, if set, is called with every new State in revision order,
	// from the watcher's goroutine, before Current and WaitFor return
	// that State; it must not block.
	OnChange func(*State)
	// Logger receives the watcher's logs; nil discards them.
	Logger *slog.Logger
}

// Watcher follows a cluster's state in etcd: the router's view of
// membership and placement. It reconnects and reloads on its own; while
// etcd is unreachable, Current stays the last State seen.
type Watcher struct {
	cfg  WatcherConfig
	k    keys
	mu   sync.Mutex
	cur  *State        // guarded by mu; nil before the first load
	next chan struct{} // guarded by mu; closed and replaced at each change
	done chan struct{}
	stop context.CancelFunc
}

// NewWatcher starts a Watcher; Close stops it.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("cluster: watcher needs a client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{cfg: cfg, k: keys{cfg.Prefix}, next: make(chan struct{}), done: make(chan struct{}), stop: cancel}
	go w.run(ctx)
	return w, nil
}

// Current returns the last State seen, or nil before the first read.
func (w *Watcher) Current() *State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// WaitFor returns the first State (the current one included) for which ok
// returns true, or ctx's error.
func (w *Watcher) WaitFor(ctx context.Context, ok func(*State) bool) (*State, error) {
	for {
		w.mu.Lock()
		cur, next := w.cur, w.next
		w.mu.Unlock()
		if cur != nil && ok(cur) {
			return cur, nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return cur, fmt.Errorf("cluster: waiting for state: %w", ctx.Err())
		case <-w.done:
			return cur, errors.New("cluster: watcher closed")
		}
	}
}

// Close stops the watcher and waits for its goroutine.
func (w *Watcher) Close() {
	w.stop()
	<-w.done
}

// publish hands st to OnChange, then makes it current: a WaitFor that
// returns st returns after OnChange saw it.
func (w *Watcher) publish(st *State) {
	if w.cfg.OnChange != nil {
		w.cfg.OnChange(st)
	}
	w.mu.Lock()
	w.cur = st
	close(w.next)
	w.next = make(chan struct{})
	w.mu.Unlock()
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	log := w.cfg.Logger
	var r retry
	for ctx.Err() == nil {
		st, b, err := load(ctx, w.cfg.Client, w.k, log)
		if err != nil {
			log.Debug("cluster: watcher load failed", "err", err)
			if !r.wait(ctx) {
				return
			}
			continue
		}
		r.reset()
		w.publish(st)
		w.follow(ctx, b, st.Revision)
	}
}

// follow applies watch events after rev until the watch ends.
func (w *Watcher) follow(ctx context.Context, b *stateBuilder, rev int64) {
	log := w.cfg.Logger
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range w.cfg.Client.Watch(wctx, w.k.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			log.Debug("cluster: watch ended", "err", err)
			return
		}
		for _, ev := range resp.Events {
			if err := b.put(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete); err != nil {
				log.Warn("cluster: ignoring a bad key", "key", string(ev.Kv.Key), "err", err)
			}
		}
		if len(resp.Events) == 0 {
			continue
		}
		st, err := b.snapshot(resp.Events[len(resp.Events)-1].Kv.ModRevision)
		if err != nil {
			log.Warn("cluster: bad state", "err", err)
		}
		w.publish(st)
	}
}

const (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

// retry is an exponential backoff from retryMin to retryMax between
// failed attempts. The zero value is ready.
type retry struct{ d time.Duration }

// wait waits the current delay, then doubles it; it reports whether ctx is
// still alive.
func (r *retry) wait(ctx context.Context) bool {
	r.d = min(max(r.d, retryMin/2)*2, retryMax)
	return wait(ctx, r.d)
}

// reset starts the next wait at retryMin again.
func (r *retry) reset() { r.d = 0 }

// wait waits d or until ctx ends; it reports whether ctx is still alive.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
