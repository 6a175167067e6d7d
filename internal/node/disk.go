package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// diskGuard keeps the shards from filling the disk: Pebble cannot survive
// a failed write to its log, so below the reserve of free space the shards
// stop storing new data (storage.Shard.SetFull), and they start again once
// the free space is a tenth of the reserve above it (so a node near the
// line does not flap). It checks once a second, on its own goroutine.
type diskGuard struct {
	dir     string
	reserve uint64
	free    func(dir string) (uint64, error)
	shards  []fullSetter
	log     *slog.Logger

	full     atomic.Bool
	lastFree atomic.Uint64
	done     chan struct{}
	stopped  chan struct{}
}

// diskFree is the default Config.FreeSpace: the bytes available to an
// unprivileged user in dir's file system.
func diskFree(dir string) (uint64, error) {
	u, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		return 0, fmt.Errorf("node: free space of %s: %w", dir, err)
	}
	return u.AvailBytes, nil
}

// fullSetter is what the guard tells: a shard (storage.Shard.SetFull).
type fullSetter interface{ SetFull(full bool) }

func newDiskGuard(dir string, reserve uint64, free func(string) (uint64, error), shards []fullSetter, log *slog.Logger) *diskGuard {
	return &diskGuard{dir: dir, reserve: reserve, free: free, shards: shards, log: log,
		done: make(chan struct{}), stopped: make(chan struct{})}
}

// check reads the free space once and tells the shards.
func (g *diskGuard) check() {
	free, err := g.free(g.dir)
	if err != nil {
		g.log.Error("disk guard", "err", err)
		return
	}
	g.lastFree.Store(free)
	full := g.full.Load()
	switch {
	case !full && free < g.reserve:
		g.log.Error("free disk space below the reserve: storing nothing new until it returns", "free_bytes", free, "reserve_bytes", g.reserve)
	case full && free >= g.reserve+g.reserve/10:
		g.log.Warn("free disk space back above the reserve: storing again", "free_bytes", free, "reserve_bytes", g.reserve)
	default:
		return
	}
	g.full.Store(!full)
	for _, s := range g.shards {
		s.SetFull(!full)
	}
}

// run checks every second until stop.
func (g *diskGuard) run() {
	defer close(g.stopped)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-t.C:
			g.check()
		}
	}
}

func (g *diskGuard) stop() {
	close(g.done)
	<-g.stopped
}

// privateDir creates dir for the node's data, readable by its owner only
// (0700), and narrows an existing one to that: the shards, keys and media
// under it must not rely on the permissions of a parent directory.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("node: data directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("node: data directory: %w", err)
	}
	return nil
}

// loadOrCreateKey returns the 32-byte secret in file name, creating it
// (0600) with random bytes on first use.
func loadOrCreateKey(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	switch {
	case err == nil && len(b) == 32:
		return b, nil
	case err == nil:
		return nil, fmt.Errorf("node: %s holds %d bytes, want a 32-byte key", name, len(b))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("node: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := writeFileAtomic(name, b, 0o600); err != nil {
		return nil, err
	}
	return b, nil
}
