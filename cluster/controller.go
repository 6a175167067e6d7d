package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrNotLeader means a controller's placement write was refused because
// its leadership ended: another controller may be writing.
var ErrNotLeader = errors.New("cluster: controller is not the leader")

// errConflict means the state changed between the controller's read and
// its write; it reads again.
var errConflict = errors.New("cluster: placement changed under the controller")

// maxTxnChanges bounds the placement changes of one transaction, below
// etcd's default of 128 operations per transaction.
const maxTxnChanges = 100

// ControllerConfig configures a Controller. The zero value of each
// optional field means its default.
type ControllerConfig struct {
	// Client is the etcd client. Required.
	Client *clientv3.Client
	// Prefix is the cluster's key prefix. Default DefaultPrefix.
	Prefix string
	// ID names this controller in the election (the id of the node that
	// runs it). Required, 1 or more.
	ID uint32
	// MinNodes is how many nodes must be live before unplaced shards are
	// placed, so that the first node to start does not take every shard.
	// Default 1.
	MinNodes int
	// SessionTTL is the lease of the controller's election session, in
	// whole seconds: a controller that stops renewing it is replaced after
	// at most that long. Default 5 s.
	SessionTTL time.Duration
	// Logger receives the controller's logs; nil discards them.
	Logger *slog.Logger

	// hook, if set, is called when the controller starts (with the
	// election's leader key and revision) and stops leading (with "", 0).
	hook func(key string, rev int64)
}

func (c *ControllerConfig) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("cluster: controller needs a client"))
	}
	if c.ID == 0 {
		errs = append(errs, errors.New("cluster: controller id 0"))
	}
	if c.MinNodes < 0 {
		errs = append(errs, fmt.Errorf("cluster: MinNodes %d below 0", c.MinNodes))
	}
	if c.SessionTTL < 0 || (c.SessionTTL > 0 && c.SessionTTL < time.Second) {
		errs = append(errs, fmt.Errorf("cluster: SessionTTL %v, want 0 or at least 1s", c.SessionTTL))
	}
	return errors.Join(errs...)
}

func (c *ControllerConfig) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MinNodes == 0 {
		c.MinNodes = 1
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Controller places shards on nodes while it is the leader of the
// cluster's election; every node may run one, and one at a time leads.
// It places unplaced shards on live nodes (balanced by count), applies
// operators' move requests (RequestMove) and never moves a shard on its
// own: a shard stays on its node while the node is down.
type Controller struct {
	cfg     ControllerConfig
	k       keys
	leading atomic.Bool
	mu      sync.Mutex
	session *concurrency.Session // guarded by mu; the current session, nil between sessions
	done    chan struct{}
	stop    context.CancelFunc
}

// StartController starts a Controller that campaigns until Close.
func StartController(cfg ControllerConfig) (*Controller, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{cfg: cfg, k: keys{cfg.Prefix}, done: make(chan struct{}), stop: cancel}
	go c.run(ctx)
	return c, nil
}

// Leading reports whether the controller believes it leads. A write still
// fails with ErrNotLeader if etcd says otherwise.
func (c *Controller) Leading() bool { return c.leading.Load() }

// Lease returns the lease of the controller's current election session (0
// between sessions): revoking it deposes the controller.
func (c *Controller) Lease() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil {
		return 0
	}
	return c.session.Lease()
}

// Close stops campaigning, resigns and waits for the controller's
// goroutine, for at most SessionTTL: with etcd unreachable, a campaign
// that is cancelled resigns with the client's own context (etcd's
// concurrency.Election.Campaign) and waits until etcd answers or the
// client is closed. Close then returns anyway, so a node can stop during
// an etcd outage; the goroutine ends when the client is closed, and the
// session's lease expires in etcd on its own.
func (c *Controller) Close() {
	c.stop()
	t := time.NewTimer(c.cfg.SessionTTL)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.cfg.Logger.Warn("cluster: controller stopped without resigning: etcd does not answer; its election key goes with its lease", "controller", c.cfg.ID)
	}
}

func (c *Controller) run(ctx context.Context) {
	defer close(c.done)
	log := c.cfg.Logger.With("controller", c.cfg.ID)
	var r retry
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(c.cfg.Client,
			concurrency.WithTTL(int(c.cfg.SessionTTL/time.Second)), concurrency.WithContext(ctx))
		if err != nil {
			log.Debug("cluster: controller session failed", "err", err)
			if !r.wait(ctx) {
				return
			}
			continue
		}
		r.reset()
		c.mu.Lock()
		c.session = sess
		c.mu.Unlock()
		c.campaign(ctx, sess, log)
		c.mu.Lock()
		c.session = nil
		c.mu.Unlock()
		// Close revokes the session's lease, which resigns; with etcd
		// unreachable it gives up after the request timeout and the
		// lease expires on its own.
		cctx, cancel := context.WithTimeout(context.Background(), c.cfg.SessionTTL)
		_, _ = c.cfg.Client.Revoke(cctx, sess.Lease())
		cancel()
		sess.Orphan()
	}
}

// campaign wins the election in sess and leads until the session or ctx
// ends or a write finds the leadership gone.
func (c *Controller) campaign(ctx context.Context, sess *concurrency.Session, log *slog.Logger) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, c.k.leader())
	if err := el.Campaign(lctx, strconv.FormatUint(uint64(c.cfg.ID), 10)); err != nil {
		log.Debug("cluster: campaign ended", "err", err)
		return
	}
	c.leading.Store(true)
	if c.cfg.hook != nil {
		c.cfg.hook(el.Key(), el.Rev())
	}
	defer func() {
		c.leading.Store(false)
		if c.cfg.hook != nil {
			c.cfg.hook("", 0)
		}
	}()
	log.Info("cluster: controller leads", "key", el.Key(), "rev", el.Rev())
	err := c.lead(lctx, el, log)
	log.Info("cluster: controller stops leading", "err", err)
}

// lead reads the state, applies the plan's changes and waits for the next
// change, until ctx ends or the leadership is lost.
func (c *Controller) lead(ctx context.Context, el *concurrency.Election, log *slog.Logger) error {
	var r retry
	for ctx.Err() == nil {
		st, _, err := load(ctx, c.cfg.Client, c.k, log)
		if err == nil {
			changes := plan(st, c.cfg.MinNodes)
			if len(changes) == 0 {
				err = c.waitChange(ctx, st.Revision)
			} else {
				err = c.commit(ctx, el.Key(), el.Rev(), st, changes, log)
			}
		}
		switch {
		case err == nil, errors.Is(err, errConflict):
			r.reset()
		case errors.Is(err, ErrNotLeader):
			return err
		default:
			log.Debug("cluster: controller retries", "err", err)
			if !r.wait(ctx) {
				return ctx.Err()
			}
		}
	}
	return ctx.Err()
}

// waitChange returns after the first change under the prefix after rev.
func (c *Controller) waitChange(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range c.cfg.Client.Watch(wctx, c.k.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("cluster: controller watch: %w", err)
		}
		if len(resp.Events) > 0 {
			return nil
		}
	}
	return ctx.Err()
}

// commit writes up to maxTxnChanges of changes, read from st, in one
// transaction guarded by the leader key (leaderKey created at leaderRev)
// and by the epoch st holds. Placement changes share one new epoch.
func (c *Controller) commit(ctx context.Context, leaderKey string, leaderRev int64, st *State, changes []change, log *slog.Logger) error {
	if len(changes) > maxTxnChanges {
		changes = changes[:maxTxnChanges]
	}
	epoch := st.Epoch + 1
	var ops []clientv3.Op
	for _, ch := range changes {
		if ch.move {
			ops = append(ops, clientv3.OpDelete(c.k.move(ch.shard)))
		}
		if ch.node != 0 {
			ops = append(ops, clientv3.OpPut(c.k.place(ch.shard), encodeJSON(Placement{Node: ch.node, Epoch: epoch})))
		}
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(leaderKey), "=", leaderRev),
		clientv3.Compare(clientv3.Value(c.k.epoch()), "=", strconv.FormatUint(st.Epoch, 10)),
	}
	bumped := false
	for _, ch := range changes {
		if ch.node != 0 {
			bumped = true
			break
		}
	}
	if bumped {
		ops = append(ops, clientv3.OpPut(c.k.epoch(), strconv.FormatUint(epoch, 10)))
	}
	resp, err := c.cfg.Client.Txn(ctx).If(cmps...).Then(ops...).
		Else(clientv3.OpGet(leaderKey)).Commit()
	if err != nil {
		return fmt.Errorf("cluster: placement write: %w", err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].CreateRevision != leaderRev {
			return ErrNotLeader
		}
		return errConflict
	}
	if bumped {
		log.Info("cluster: placement changed", "epoch", epoch, "changes", len(changes))
	}
	return nil
}
