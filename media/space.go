package media

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Room for uploads ([S-14-20], [S-14-21]): the staging quota counts, per
// uploader, the bytes of unfinished uploads (staged on disk, or for an
// upload a PUT is writing its whole size); the free-space reserve keeps
// the file system of Dir from filling, counting what admitted PUTs have
// yet to write. Both are checked when a slot is asked for and again when
// a PUT starts, before its body is read.

// storageFullRetry is the Retry-After of MEDIA_STORAGE_FULL: free space
// comes back when the operator or the sweeper makes some, not in seconds.
const storageFullRetry = time.Minute

// freeSpaceTTL is how long a free-space figure is used before the file
// system is asked again.
const freeSpaceTTL = time.Second

// staged is what one unfinished upload counts against its uploader.
type staged struct {
	owner uint64
	bytes int64
}

// staging counts the bytes of unfinished uploads per uploader. Its maps
// are guarded by Service.mu; total may be read at any time.
type staging struct {
	ids   map[ID]staged
	users map[uint64]int64
	total atomic.Int64
}

func newStaging() staging {
	return staging{ids: make(map[ID]staged), users: make(map[uint64]int64)}
}

// set makes upload id of owner count n bytes (0: nothing).
func (st *staging) set(id ID, owner uint64, n int64) {
	if old, ok := st.ids[id]; ok {
		st.total.Add(-old.bytes)
		if st.users[old.owner] -= old.bytes; st.users[old.owner] <= 0 {
			delete(st.users, old.owner)
		}
		delete(st.ids, id)
	}
	if n > 0 {
		st.ids[id] = staged{owner: owner, bytes: n}
		st.users[owner] += n
		st.total.Add(n)
	}
}

// over reports whether owner's uploads would pass quota if upload id
// counted size bytes. A negative quota is none.
func (st *staging) over(quota int64, owner uint64, id ID, size int64) bool {
	if quota < 0 {
		return false
	}
	have := st.users[owner]
	if old, ok := st.ids[id]; ok && old.owner == owner {
		have -= old.bytes
	}
	return have+size > quota
}

// diskSpace tells how much the file system holding the service's
// directory can still take. Its methods are safe for concurrent use.
type diskSpace struct {
	dir     string
	reserve int64 // MinFreeBytes; negative: none
	free    func(dir string) (uint64, error)
	now     func() time.Time

	// pending counts the bytes admitted PUTs have yet to write; written
	// the bytes they have written since the service started.
	pending, written atomic.Int64

	mu       sync.Mutex
	at       time.Time // guarded by mu: when avail was read; zero: never
	avail    int64     // guarded by mu: free bytes at that time
	written0 int64     // guarded by mu: written at that time
	err      error     // guarded by mu: the error reading it
}

// statfsFree is the default Config.FreeSpace: the bytes available to an
// unprivileged user in the file system holding dir.
func statfsFree(dir string) (uint64, error) {
	u, err := vfs.Default.GetDiskUsage(dir)
	return u.AvailBytes, err
}

// available returns the free bytes for new uploads: the file system's
// figure (at most freeSpaceTTL old) less what PUTs have written since it
// was read and have yet to write.
func (d *diskSpace) available() (int64, error) {
	now := d.now()
	d.mu.Lock()
	if d.at.IsZero() || now.Sub(d.at) >= freeSpaceTTL || now.Before(d.at) {
		n, err := d.free(d.dir)
		d.at, d.avail, d.written0, d.err = now, int64(min(n, 1<<62)), d.written.Load(), err
	}
	avail, since, err := d.avail, d.written.Load()-d.written0, d.err
	d.mu.Unlock()
	return avail - since - d.pending.Load(), err
}

// lastFree returns the last figure read from the file system, for
// metrics.
func (d *diskSpace) lastFree() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.avail
}

// fits reports whether n more bytes leave the reserve free. When the file
// system cannot tell, it lets the upload in (and says why).
func (d *diskSpace) fits(n int64) (bool, error) {
	if d.reserve < 0 {
		return true, nil
	}
	avail, err := d.available()
	if err != nil {
		return true, err
	}
	return avail-n >= d.reserve, nil
}

// reservation is the room one PUT was admitted with: the bytes it may
// still write.
type reservation struct {
	d    *diskSpace
	left int64
}

// reserve admits a PUT that may write n bytes.
func (d *diskSpace) reserveBytes(n int64) *reservation {
	d.pending.Add(n)
	return &reservation{d: d, left: n}
}

// wrote counts m bytes written.
func (r *reservation) wrote(m int) {
	n := min(int64(m), r.left)
	r.left -= n
	r.d.pending.Add(-n)
	r.d.written.Add(int64(m))
}

// end returns what the PUT did not write.
func (r *reservation) end() {
	r.d.pending.Add(-r.left)
	r.left = 0
}
