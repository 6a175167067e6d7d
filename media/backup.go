package media

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
)

// CheckpointStats says what Checkpoint copied.
type CheckpointStats struct {
	// Blobs is how many blobs were copied (0 with a store other than
	// FSStore, whose blobs stay where they are).
	Blobs int
	// Bytes is their size.
	Bytes int64
}

// Checkpoint writes a copy of the service to dir, which must not exist:
// the metadata (a Pebble checkpoint, dir/meta), the URL key (dir/url.key)
// and, with the default FSStore, every blob a record names (dir/blobs,
// hard-linked where the file system allows, else copied). Unfinished
// uploads are left out: their records come along, so a client resuming
// one after a restore learns from HEAD that it starts again at 0.
//
// It holds the service's lock throughout, so no record changes meanwhile
// and every blob the copied metadata names is copied: slot and URL
// requests and the commits of finished uploads wait for it (a hard link is
// one system call per blob; a copy takes as long as the bytes). Blobs in
// an S3 bucket are not copied: docs/operations.md says how to keep them.
// dir opens as a Config.Dir (with the same Store).
func (s *Service) Checkpoint(dir string) (CheckpointStats, error) {
	var st CheckpointStats
	s.mu.Lock()
	defer s.mu.Unlock()
	// A blob being deleted has lost its records already; wait for the
	// delete, so the blobs on disk are exactly the recorded ones.
	for len(s.deleting) > 0 {
		s.cond.Wait()
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return st, fmt.Errorf("media: checkpoint: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return st, fmt.Errorf("media: checkpoint: %w", err)
	}
	if err := s.meta.db.Checkpoint(filepath.Join(dir, "meta"), pebble.WithFlushedWAL()); err != nil {
		return st, fmt.Errorf("media: checkpoint metadata: %w", err)
	}
	if err := linkOrCopy(filepath.Join(s.cfg.Dir, "url.key"), filepath.Join(dir, "url.key")); err != nil {
		return st, err
	}
	fsStore, ok := s.store.(*FSStore)
	if !ok {
		return st, nil
	}
	to := &FSStore{Dir: filepath.Join(dir, "blobs")}
	var ierr error
	err := s.meta.scan(prefixBlob, nil, func(k, v []byte) bool {
		if len(k) != 1+HashLen {
			return true
		}
		var h Hash
		copy(h[:], k[1:])
		dst := to.path(h)
		if ierr = os.MkdirAll(filepath.Dir(dst), 0o700); ierr != nil {
			return false
		}
		if ierr = linkOrCopy(fsStore.path(h), dst); ierr != nil {
			return false
		}
		if br, err := decodeBlob(v); err == nil {
			st.Bytes += br.size
		}
		st.Blobs++
		return true
	})
	return st, errors.Join(err, ierr)
}

// linkOrCopy makes dst a hard link to src, or a copy of it (0600, synced)
// where src's file system cannot link to dst.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("media: checkpoint: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("media: checkpoint: %w", err)
	}
	_, err = io.Copy(out, in)
	err = errors.Join(err, out.Sync(), out.Close())
	if err != nil {
		return fmt.Errorf("media: checkpoint: %w", err)
	}
	return nil
}
