package node

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/admin"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// What the admin endpoint (and parleyctl through it) asks of a node:
// status, readiness, a user's devices, revoking a device, draining, and
// backups (backup.go).

// Drain tells the node to stop as an operator's SIGTERM does: Run tells
// every client to go away (GoAway, then each reconnects elsewhere or
// later) and shuts the node down. From the call on, the node is not ready
// (NotReady). A node started with Start alone only stops being ready;
// whoever started it watches Draining. Later calls do nothing.
func (n *Node) Drain() { n.drainOnce.Do(func() { close(n.drain) }) }

// Draining returns a channel closed once Drain was called.
func (n *Node) Draining() <-chan struct{} { return n.drain }

// NotReady returns why the node should not get new clients, or nil when
// it is ready: a shard not serving (stopped by a storage failure, or
// closing), the node draining, free disk space below the reserve (nothing
// new is stored), the node shutting down.
func (n *Node) NotReady() []string {
	var why []string
	select {
	case <-n.drain:
		why = append(why, "draining")
	default:
	}
	n.opMu.Lock()
	stopped := n.stopped
	n.opMu.Unlock()
	if stopped {
		return append(why, "shutting down")
	}
	for _, s := range n.shards {
		if !s.Serving() {
			why = append(why, fmt.Sprintf("shard %d not serving", s.ID()))
		}
	}
	if n.disk != nil && n.disk.full.Load() {
		why = append(why, "free disk space below the reserve")
	}
	return why
}

// Status returns the node's state for an operator.
func (n *Node) Status() admin.Status {
	st := admin.Status{
		Version:     buildVersion(),
		Started:     n.started.UTC(),
		UptimeS:     time.Since(n.started).Seconds(),
		Addr:        n.Addr().String(),
		DataDir:     n.cfg.DataDir,
		Fingerprint: n.fingerprint,
		MediaURL:    n.MediaURL(),
		NotReady:    n.NotReady(),
	}
	st.Ready = len(st.NotReady) == 0
	if a := n.AdminAddr(); a != nil {
		st.Admin = a.String()
	}
	if n.disk != nil {
		st.FreeBytes = n.disk.lastFree.Load()
		st.DiskFull = n.disk.full.Load()
	}
	ss := n.srv.Stats()
	st.Connections, st.Authenticated = ss.Open.Load(), ss.Authenticated.Load()
	n.opMu.Lock()
	shards := n.shards
	n.opMu.Unlock()
	for _, s := range shards {
		sst := s.Stats()
		st.Shards = append(st.Shards, admin.ShardStatus{ID: s.ID(), Serving: s.Serving(), Queue: sst.QueueLength,
			Unconfirmed: sst.Unconfirmed, Commits: sst.Commits})
	}
	return st
}

// buildVersion is the main module's version and VCS revision, as the Go
// toolchain recorded them.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v
}

// User reads user's account (or, with user 0, phone's) from its shard:
// its devices and what each has queued.
func (n *Node) User(user uint64, phone string) (storage.UserInfo, error) {
	shard := n.router.ShardOfPhone(phone)
	if user != 0 {
		shard = n.router.ShardOf(user)
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.stopped {
		return storage.UserInfo{}, ErrStopped
	}
	s := n.router.Shard(shard)
	if s == nil {
		return storage.UserInfo{}, fmt.Errorf("node: shard %d is served by another node of the cluster", shard)
	}
	return s.Inspect(user, phone)
}

// RevokeDevice revokes device of user as its primary would ([S-9-14]):
// the device is disconnected with DEVICE_REVOKED and its credential stops
// working. A primary cannot be revoked (the user registers again). It
// waits for the shard's answer until ctx ends.
func (n *Node) RevokeDevice(ctx context.Context, user uint64, device uint32) error {
	info, err := n.User(user, "")
	if err != nil {
		return err
	}
	var primary uint32
	found := false
	for _, d := range info.Devices {
		if d.Primary && !d.Revoked {
			primary = d.ID
		}
		if d.ID == device && !d.Revoked {
			found = true
			if d.Primary {
				return fmt.Errorf("node: device %d is user %d's primary: it cannot be revoked (the user registers again): %w", device, user, admin.ErrRefused)
			}
		}
	}
	if !found {
		return fmt.Errorf("node: user %d has no active device %d: %w", user, device, admin.ErrRefused)
	}
	ep := &answer{done: make(chan struct{})}
	ref, release := n.resolver.add(ep)
	defer release()
	op := storage.Op{Kind: storage.OpRevokeDevice, User: user, Device: primary, Target: device, RID: 1, Conn: ref}
	if err := n.router.Submit(op); err != nil {
		return fmt.Errorf("node: revoke: %w", err)
	}
	select {
	case <-ep.done:
	case <-ctx.Done():
		return fmt.Errorf("node: revoke: %w", ctx.Err())
	}
	return ep.err
}

// answer is the storage.Endpoint of one request made by the node itself:
// it keeps the first answer.
type answer struct {
	once sync.Once
	done chan struct{}
	err  error // set before done closes
}

func (a *answer) finish(err error) {
	a.once.Do(func() { a.err = err; close(a.done) })
}

// Post implements storage.Endpoint; nothing but the answer is expected.
func (a *answer) Post([]byte) bool { return true }

// Reply implements storage.Endpoint: Ok, or an Error with its code.
func (a *answer) Reply(frames []byte) {
	f, _, err := codec.NextFrame(frames, protocol.MaxFrameBody)
	switch {
	case err != nil:
		a.finish(fmt.Errorf("node: answer: %w", err))
	case f.Kind == protocol.KindOK:
		a.finish(nil)
	case f.Kind == protocol.KindError:
		var e pb.Error
		if err := codec.ParseProto(f.Body, &e); err != nil {
			a.finish(fmt.Errorf("node: answer: %w", err))
			return
		}
		a.finish(fmt.Errorf("node: refused: %s: %w", protocol.Code(e.Code), admin.ErrRefused))
	default:
		a.finish(fmt.Errorf("node: unexpected answer %s", f.Kind))
	}
}

// Authenticated implements storage.Endpoint; never called for a revoke.
func (a *answer) Authenticated(storage.Session) { a.finish(errors.New("node: unexpected login")) }

// Fail implements storage.Endpoint.
func (a *answer) Fail(code protocol.Code) { a.finish(fmt.Errorf("node: failed: %s", code)) }

// Close implements storage.Endpoint.
func (a *answer) Close(code protocol.Code) { a.finish(fmt.Errorf("node: closed: %s", code)) }

// LookupPart implements storage.Endpoint; never called for a revoke.
func (a *answer) LookupPart(uint64, []*pb.Contact) {
	a.finish(errors.New("node: unexpected lookup part"))
}

// operator adapts a Node to admin.Operator.
type operator struct{ n *Node }

func (o operator) Status() admin.Status { return o.n.Status() }
func (o operator) NotReady() []string   { return o.n.NotReady() }
func (o operator) Drain()               { o.n.Drain() }
func (o operator) Backup(dir string) error {
	_, err := o.n.Backup(dir)
	return err
}
func (o operator) User(user uint64, phone string) (storage.UserInfo, error) {
	return o.n.User(user, phone)
}
func (o operator) RevokeDevice(ctx context.Context, user uint64, device uint32) error {
	return o.n.RevokeDevice(ctx, user, device)
}
