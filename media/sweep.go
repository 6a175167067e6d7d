package media

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// orphanEvery is how many sweeps pass between two scans of the whole
// store for blobs without a record (left by a crash between storing a
// blob and recording it, or between forgetting one and deleting it).
const orphanEvery = 24

// SweepStats says what one sweep deleted.
type SweepStats struct {
	Blobs      int // expired blobs
	Media      int // media ids that went with them
	Incomplete int // abandoned unfinished uploads
	Orphans    int // staged files and blobs without a record
}

func (s *Service) sweepLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	for n := 0; ; n++ {
		st, err := s.sweep(ctx, n%orphanEvery == 0)
		if err != nil && ctx.Err() == nil {
			s.log.Error("media: sweep", "err", err)
		} else if st != (SweepStats{}) {
			s.log.Info("media: swept", "blobs", st.Blobs, "media", st.Media, "incomplete", st.Incomplete, "orphans", st.Orphans)
		}
		if s.cfg.SweepInterval < 0 {
			<-s.stop
			return
		}
		t := time.NewTimer(s.cfg.SweepInterval)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Sweep deletes what has expired ([S-14-16]): stored media whose last
// reference is older than Expiry (the blob and every media id naming it),
// unfinished uploads idle for longer than IncompleteExpiry and without a
// PUT in progress, and files and blobs that no record names. It never
// deletes a blob an upload is committing or an upload a PUT is writing.
func (s *Service) Sweep(ctx context.Context) (SweepStats, error) {
	return s.sweep(ctx, true)
}

func (s *Service) sweep(ctx context.Context, orphans bool) (SweepStats, error) {
	var st SweepStats
	now := s.cfg.Now().UnixMilli()
	blobCutoff := now - s.cfg.Expiry.Milliseconds()
	uploadCutoff := now - s.cfg.IncompleteExpiry.Milliseconds()

	// Expired blobs: candidates from a scan, each decided again under mu.
	var stale []Hash
	err := s.meta.scan(prefixBlob, nil, func(k, v []byte) bool {
		if br, err := decodeBlob(v); err == nil && br.touched < blobCutoff && len(k) == 1+HashLen {
			var h Hash
			copy(h[:], k[1:])
			stale = append(stale, h)
		}
		return ctx.Err() == nil
	})
	if err != nil {
		return st, err
	}
	for _, h := range stale {
		n, err := s.expireBlob(ctx, h, blobCutoff)
		if err != nil {
			return st, err
		}
		if n >= 0 {
			st.Blobs++
			st.Media += n
		}
	}

	// Abandoned uploads.
	var idle []ID
	err = s.meta.scan(prefixMedia, nil, func(k, v []byte) bool {
		if r, err := decodeRecord(v); err == nil && r.state == statePending && r.touched < uploadCutoff && len(k) == 1+IDLen {
			var id ID
			copy(id[:], k[1:])
			idle = append(idle, id)
		}
		return ctx.Err() == nil
	})
	if err != nil {
		return st, err
	}
	for _, id := range idle {
		done, err := s.expireUpload(id, uploadCutoff)
		if err != nil {
			return st, err
		}
		if done {
			st.Incomplete++
		}
	}

	// Staged files nobody will finish.
	entries, err := os.ReadDir(s.uploads)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("media: %w", err)
	}
	for _, e := range entries {
		id, perr := ParseID(e.Name())
		if perr != nil {
			continue
		}
		gone, err := s.dropOrphanPartial(id)
		if err != nil {
			return st, err
		}
		if gone {
			st.Orphans++
		}
	}

	if orphans {
		err := s.store.List(ctx, func(h Hash) error {
			n, err := s.expireBlob(ctx, h, -1)
			if n >= 0 {
				st.Orphans++
			}
			return err
		})
		if err != nil {
			return st, err
		}
	}
	return st, ctx.Err()
}

// expireBlob deletes blob h and its media ids if its record is older than
// cutoff and no upload is committing it; with cutoff -1, if it has no
// record at all (an orphan). It returns how many media ids went with it,
// or -1 when it left the blob alone.
func (s *Service) expireBlob(ctx context.Context, h Hash, cutoff int64) (int, error) {
	s.mu.Lock()
	br, ok, err := s.meta.blob(h)
	if err != nil {
		s.mu.Unlock()
		return -1, err
	}
	if s.committing[h] > 0 || s.deleting[h] || (cutoff < 0 && ok) || (cutoff >= 0 && (!ok || br.touched >= cutoff)) {
		s.mu.Unlock()
		return -1, nil
	}
	var ids []ID
	if ok {
		if ids, err = s.meta.idsOf(h); err != nil {
			s.mu.Unlock()
			return -1, err
		}
		b := s.meta.db.NewBatch()
		_ = b.Delete(blobKey(h), nil)
		for _, id := range ids {
			_ = b.Delete(mediaKey(id), nil)
			_ = b.Delete(indexKey(h, id), nil)
		}
		if err := s.meta.commit(b); err != nil {
			s.mu.Unlock()
			return -1, err
		}
	}
	s.deleting[h] = true
	s.mu.Unlock()

	// The records are gone, so nothing hands out this blob any more; a
	// commit of the same bytes waits until the delete is done.
	err = s.store.Delete(ctx, h)

	s.mu.Lock()
	delete(s.deleting, h)
	s.cond.Broadcast()
	s.mu.Unlock()
	if err != nil {
		// The blob is an orphan now; a later sweep retries.
		s.log.Warn("media: delete blob", "hash", h, "err", err)
	}
	return len(ids), nil
}

// expireUpload deletes the unfinished upload id if it is still idle since
// before cutoff and no PUT is writing it.
func (s *Service) expireUpload(id ID, cutoff int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok, err := s.meta.media(id)
	if err != nil || !ok || r.state != statePending || r.touched >= cutoff || s.active[id] {
		return false, err
	}
	b := s.meta.db.NewBatch()
	_ = b.Delete(mediaKey(id), nil)
	if err := s.meta.commit(b); err != nil {
		return false, err
	}
	s.stage.set(id, 0, 0)
	if err := os.Remove(s.partialPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("media: %w", err)
	}
	return true, nil
}

// dropOrphanPartial removes the staged file of id if no pending record
// names it and no PUT is writing it.
func (s *Service) dropOrphanPartial(id ID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[id] {
		return false, nil
	}
	r, ok, err := s.meta.media(id)
	if err != nil || (ok && r.state == statePending) {
		return false, err
	}
	if err := os.Remove(s.partialPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("media: %w", err)
	}
	return true, nil
}
