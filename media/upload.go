package media

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// Uploads are staged in Dir/uploads/<id>, one file per media id, so two
// clients uploading the same bytes never write the same file. The offset
// of an upload is the length of that file. When the last byte is in, the
// file is synced, its SHA-256 checked against the slot's, and it is
// committed: moved into the Store under its hash unless the Store has it
// already (then it is simply removed), after which the media id is ready.

// errCut is a PUT body that ended early: the connection broke or went
// idle. What arrived is kept for a resumed PUT.
var errCut = errors.New("media: upload cut")

// serveUploadOffset answers HEAD on an upload URL: how many bytes the
// server holds ([S-14-11]).
func (s *Service) serveUploadOffset(w http.ResponseWriter, id ID) {
	rec, ok, err := s.meta.media(id)
	switch {
	case err != nil:
		s.log.Error("media: upload offset", "id", id, "err", err)
		httpError(w, http.StatusInternalServerError, codeInternal)
		return
	case !ok:
		httpError(w, http.StatusNotFound, codeNotFound)
		return
	}
	off := rec.size
	if rec.state != stateReady {
		off = min(s.partialSize(id), rec.size)
	}
	uploadHeaders(w, off, rec.size)
	w.WriteHeader(http.StatusOK)
}

func uploadHeaders(w http.ResponseWriter, off, size int64) {
	h := w.Header()
	h.Set(headerUploadOffset, strconv.FormatInt(off, 10))
	h.Set(headerUploadLength, strconv.FormatInt(size, 10))
	h.Set("Cache-Control", "no-store")
}

// serveUpload answers PUT on an upload URL ([S-14-11]).
func (s *Service) serveUpload(w http.ResponseWriter, r *http.Request, id ID, t *transfer, ctl *http.ResponseController) {
	rec, status, code := s.claim(id)
	if code != 0 {
		if code == codeUploadBusy {
			w.Header().Set("Retry-After", "1")
			uploadHeaders(w, min(s.partialSize(id), rec.size), rec.size)
		}
		httpError(w, status, code)
		return
	}
	if rec.state == stateReady { // a retried PUT whose answer was lost
		uploadHeaders(w, rec.size, rec.size)
		w.WriteHeader(http.StatusOK)
		return
	}
	defer s.release(id)

	start, ranged, code := parseContentRange(r.Header.Get("Content-Range"), rec.size)
	if code == 0 && r.ContentLength >= 0 && start+r.ContentLength != rec.size {
		code = codeSizeMismatch
	}
	switch code {
	case 0:
	case codeSizeMismatch:
		s.refuseUpload(w, id, http.StatusBadRequest, code)
		return
	default:
		httpError(w, http.StatusBadRequest, code)
		return
	}
	if have := min(s.partialSize(id), rec.size); ranged && start != have {
		uploadHeaders(w, have, rec.size)
		httpError(w, http.StatusConflict, codeOffsetMismatch)
		return
	}
	room, code := s.admitPut(id, rec, start)
	if code != 0 {
		// Nothing is read or discarded: the client may continue later.
		if code == codeStorageFull {
			w.Header().Set("Retry-After", strconv.Itoa(int(storageFullRetry/time.Second)))
		}
		uploadHeaders(w, min(s.partialSize(id), rec.size), rec.size)
		httpError(w, http.StatusInsufficientStorage, code)
		return
	}

	got, sum, err := s.receive(ctl, r, id, start, rec.size, t, room)
	room.end()
	switch {
	case errors.Is(err, errCut):
		s.log.Debug("media: upload cut", "id", id, "offset", got, "err", err)
		s.touchPending(id)
		// Seldom seen: the connection is usually gone. The bytes are kept.
		uploadHeaders(w, got, rec.size)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestTimeout)
		return
	case err != nil:
		s.log.Error("media: upload", "id", id, "err", err)
		httpError(w, http.StatusInternalServerError, codeInternal)
		return
	case got != rec.size:
		s.refuseUpload(w, id, http.StatusBadRequest, codeSizeMismatch) // a body shorter or longer than the slot's size
		return
	case sum != rec.hash:
		s.refuseUpload(w, id, http.StatusUnprocessableEntity, codeHashMismatch)
		return
	}
	if err := s.commit(r.Context(), id); err != nil {
		s.log.Error("media: upload commit", "id", id, "err", err)
		httpError(w, http.StatusInternalServerError, codeInternal)
		return
	}
	w.Header().Del("Connection") // the body was read to its end
	uploadHeaders(w, rec.size, rec.size)
	w.WriteHeader(http.StatusOK)
}

// claim marks id's upload as having a PUT in progress. It returns the
// record, or the status and code refusing the PUT.
func (s *Service) claim(id ID) (record, int, pb.ErrorCode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok, err := s.meta.media(id)
	switch {
	case err != nil:
		s.log.Error("media: upload", "id", id, "err", err)
		return rec, http.StatusInternalServerError, codeInternal
	case !ok:
		return rec, http.StatusNotFound, codeNotFound
	case rec.state == stateReady:
		return rec, 0, 0
	case s.active[id]:
		return rec, http.StatusConflict, codeUploadBusy
	}
	s.active[id] = true
	return rec, 0, 0
}

// admitPut checks that a PUT writing id's upload from start fits its
// uploader's staging quota and the free-space reserve ([S-14-20],
// [S-14-21]); if so the upload counts its whole size against the quota
// until the PUT ends, and the returned reservation holds the bytes it may
// write.
func (s *Service) admitPut(id ID, rec record, start int64) (*reservation, pb.ErrorCode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.roomLocked(rec.owner, id, rec.size, rec.size-start); code != 0 {
		return nil, code
	}
	s.stage.set(id, rec.owner, rec.size)
	return s.disk.reserveBytes(rec.size - start), 0
}

// release ends the PUT in progress on id. What the upload counts against
// its uploader's quota is again the bytes staged: none once it was
// committed or discarded.
func (s *Service) release(id ID) {
	s.mu.Lock()
	delete(s.active, id)
	if rec, ok, err := s.meta.media(id); err == nil && ok && rec.state == statePending {
		s.stage.set(id, rec.owner, min(s.partialSize(id), rec.size))
	} else {
		s.stage.set(id, 0, 0)
	}
	s.mu.Unlock()
}

// parseContentRange parses the Content-Range of a PUT to an upload of size
// bytes: "bytes <start>-<size-1>/<size>". No header means the whole media
// from byte 0. A header that is not of that form is INVALID_ARGUMENT; one
// whose end or total is not the slot's size is MEDIA_SIZE_MISMATCH.
func parseContentRange(h string, size int64) (start int64, ranged bool, code pb.ErrorCode) {
	if h == "" {
		return 0, false, 0
	}
	spec, ok := strings.CutPrefix(h, "bytes ")
	rng, total, ok2 := strings.Cut(spec, "/")
	first, last, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, false, codeInvalidArgument
	}
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	t, err3 := strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || a < 0 || b < a {
		return 0, false, codeInvalidArgument
	}
	if t != size || b != size-1 {
		return 0, false, codeSizeMismatch
	}
	return a, true, 0
}

// receive writes the PUT body into id's staged file from offset start and
// returns the offset reached and, when that is size, the SHA-256 of the
// whole file. It reads at most one byte beyond size (to detect a body
// that is too long). A body that breaks off, or that the watchdog cuts for
// moving too slowly, returns errCut, after syncing what arrived.
func (s *Service) receive(ctl *http.ResponseController, r *http.Request, id ID, start, size int64, t *transfer, room *reservation) (int64, Hash, error) {
	var sum Hash
	f, err := os.OpenFile(s.partialPath(id), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return start, sum, fmt.Errorf("media: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(start); err != nil {
		return start, sum, fmt.Errorf("media: %w", err)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp

	// A resumed upload hashes what the server already has first.
	h := sha256.New()
	if start > 0 {
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, start), buf); err != nil {
			return start, sum, fmt.Errorf("media: rehash: %w", err)
		}
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return start, sum, fmt.Errorf("media: %w", err)
	}
	got, rerr := s.copyIn(ctl, f, h, r.Body, size-start+1, buf, t, room)
	got += start
	if err := f.Sync(); err != nil {
		return got, sum, fmt.Errorf("media: %w", err)
	}
	if rerr != nil {
		return got, sum, rerr
	}
	copy(sum[:], h.Sum(nil))
	return got, sum, nil
}

// copyIn copies at most limit bytes of body to f and h, giving up when a
// read makes no progress for IdleTimeout or the watchdog cuts t for
// moving too slowly. It returns the bytes copied and nil at the body's
// clean end, errCut when the body broke off or was cut.
func (s *Service) copyIn(ctl *http.ResponseController, f *os.File, h hash.Hash, body io.Reader, limit int64, buf []byte, t *transfer, room *reservation) (int64, error) {
	s.xfer.stream(t, true, s.cfg.Now())
	defer s.xfer.stream(t, false, s.cfg.Now())
	s.stats.uploads.Add(1)
	var n int64
	for n < limit {
		if !t.arm(ctl.SetReadDeadline, time.Now().Add(s.cfg.IdleTimeout)) {
			return n, fmt.Errorf("%w: %w", errCut, errSlow)
		}
		m, err := body.Read(buf[:min(int64(len(buf)), limit-n)])
		if m > 0 {
			if _, werr := f.Write(buf[:m]); werr != nil {
				return n, fmt.Errorf("media: %w", werr)
			}
			room.wrote(m)
			h.Write(buf[:m])
			n += int64(m)
			t.progress(m)
			s.stats.bytesIn.Add(uint64(m))
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			if t.wasCut() {
				err = errSlow
			}
			return n, fmt.Errorf("%w: %w", errCut, err)
		}
	}
	return n, nil
}

// refuseUpload ends an upload for good ([S-14-11]): its staged bytes and
// its media id are deleted, so nothing is left behind.
func (s *Service) refuseUpload(w http.ResponseWriter, id ID, status int, code pb.ErrorCode) {
	if err := s.discard(id); err != nil {
		s.log.Error("media: discard upload", "id", id, "err", err)
	}
	httpError(w, status, code)
}

// discard deletes the pending media id and its staged file.
func (s *Service) discard(id ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.meta.db.NewBatch()
	_ = b.Delete(mediaKey(id), nil)
	err := s.meta.commit(b)
	if err == nil {
		s.stage.set(id, 0, 0)
	}
	if rerr := os.Remove(s.partialPath(id)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = fmt.Errorf("media: %w", rerr)
	}
	return err
}

// touchPending records activity on the unfinished upload id.
func (s *Service) touchPending(id ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok, err := s.meta.media(id)
	if err != nil || !ok || rec.state != statePending {
		return
	}
	rec.touched = s.cfg.Now().UnixMilli()
	b := s.meta.db.NewBatch()
	_ = b.Set(mediaKey(id), rec.encode(), nil)
	if err := s.meta.commit(b); err != nil {
		s.log.Error("media: touch upload", "id", id, "err", err)
	}
}

// commit makes the verified upload of id usable: its blob goes into the
// store unless the store has it (dedupe), then one synced batch writes the
// blob record, the id's ready record and the index. A sweeper deleting the
// same hash finishes first; the sweeper leaves a hash being committed
// alone ([S-14-17]).
func (s *Service) commit(ctx context.Context, id ID) error {
	s.mu.Lock()
	rec, ok, err := s.meta.media(id)
	if err != nil || !ok {
		s.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("media: upload %s vanished", id)
		}
		return err
	}
	h := rec.hash
	for s.deleting[h] {
		s.cond.Wait()
	}
	_, stored, err := s.meta.blob(h)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.committing[h]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.committing[h]--; s.committing[h] == 0 {
			delete(s.committing, h)
		}
		s.mu.Unlock()
	}()

	path := s.partialPath(id)
	if !stored {
		if err := s.store.Put(ctx, h, path, rec.size); err != nil {
			return err
		}
	}

	s.mu.Lock()
	br, ok, err := s.meta.blob(h)
	if err == nil {
		if !ok {
			br = blobRecord{size: rec.size}
		}
		br.touched = s.cfg.Now().UnixMilli()
		rec.state = stateReady
		b := s.meta.db.NewBatch()
		_ = b.Set(blobKey(h), br.encode(), nil)
		_ = b.Set(mediaKey(id), rec.encode(), nil)
		_ = b.Set(indexKey(h, id), nil, nil)
		err = s.meta.commit(b)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		s.log.Warn("media: remove staged upload", "id", id, "err", rerr)
	}
	if s.cfg.OnUploaded != nil {
		s.cfg.OnUploaded(rec.owner, rec.size, rec.typ)
	}
	return nil
}
