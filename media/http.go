package media

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// URL paths of the endpoint (spec.md section 14.3). The rest of a URL is
// the media id in hex and the query "exp=<unix seconds>&sig=<signature>".
const (
	uploadPath   = "/media/v1/upload/"
	downloadPath = "/media/v1/download/"
)

// HTTP headers of the endpoint.
const (
	headerError        = "Parley-Error"  // the ErrorCode number of a refusal
	headerUploadOffset = "Upload-Offset" // bytes of the upload the server holds
	headerUploadLength = "Upload-Length" // the declared size of the upload
)

// copyBufSize is the buffer one transfer streams through: the only memory
// a transfer holds, whatever the size of the media.
const copyBufSize = 128 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Handler returns the HTTP handler of the media endpoint. Serve it over
// TLS on its own listener; every request runs on its own goroutine (the
// net/http model), bounded by Config.MaxTransfers and, per user, by
// Config.MaxUserTransfers.
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && r.ProtoMajor == 1 {
		// A PUT refused before its body is read closes the connection:
		// net/http would otherwise read up to 256 KiB of the body first,
		// for as long as a trickling client likes. serveUpload keeps the
		// connection once it has read the body to its end.
		w.Header().Set("Connection", "close")
	}
	var op, rest string
	switch {
	case strings.HasPrefix(r.URL.Path, uploadPath):
		op, rest = opUpload, r.URL.Path[len(uploadPath):]
		if r.Method != http.MethodPut && r.Method != http.MethodHead {
			w.Header().Set("Allow", "PUT, HEAD")
			httpError(w, http.StatusMethodNotAllowed, codeInvalidArgument)
			return
		}
	case strings.HasPrefix(r.URL.Path, downloadPath):
		op, rest = opDownload, r.URL.Path[len(downloadPath):]
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpError(w, http.StatusMethodNotAllowed, codeInvalidArgument)
			return
		}
	default:
		httpError(w, http.StatusNotFound, codeNotFound)
		return
	}
	// [S-14-9] the signature first, in constant time, then the expiry.
	id, err := ParseID(rest)
	var user uint64
	if err == nil {
		q := r.URL.Query()
		user, err = s.sign.verify(op, id, q.Get("u"), q.Get("exp"), q.Get("sig"), s.cfg.Now())
	}
	switch {
	case errors.Is(err, errExpired):
		httpError(w, http.StatusForbidden, codeURLExpired)
		return
	case err != nil:
		httpError(w, http.StatusForbidden, codeBadSignature)
		return
	}

	// A slot, counted against the user the URL was issued to.
	ctl := http.NewResponseController(w)
	put := r.Method == http.MethodPut
	cancel := func() { _ = ctl.SetWriteDeadline(past) }
	if put {
		cancel = func() { _ = ctl.SetReadDeadline(past) }
	}
	t, why := s.xfer.acquire(user, put, cancel)
	if why != admitted {
		s.stats.refused[why].Add(1)
		w.Header().Set("Retry-After", "1")
		if why == refuseFull {
			httpError(w, http.StatusServiceUnavailable, codeOverloaded) // [S-14-14]
		} else {
			httpError(w, http.StatusTooManyRequests, codeTooMany) // [S-14-18]
		}
		return
	}
	defer s.xfer.release(t)
	switch {
	case op == opDownload:
		s.serveDownload(w, r, id, t, ctl)
	case r.Method == http.MethodHead:
		s.serveUploadOffset(w, id)
	default:
		s.serveUpload(w, r, id, t, ctl)
	}
}

// past is a deadline in the past: it ends a blocked read or write at once.
var past = time.Unix(1, 0)

// httpError answers a refused request: the status, the code in the
// Parley-Error header, and the code's name as a plain-text body
// ([S-14-10]).
func httpError(w http.ResponseWriter, status int, code pb.ErrorCode) {
	h := w.Header()
	h.Set(headerError, strconv.Itoa(int(code)))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strings.TrimPrefix(code.String(), "ERROR_")+"\n")
}

// serveDownload serves GET and HEAD on a download URL, with a single byte
// range if asked ([S-14-12]).
func (s *Service) serveDownload(w http.ResponseWriter, r *http.Request, id ID, t *transfer, ctl *http.ResponseController) {
	rec, ok, err := s.meta.media(id)
	switch {
	case err != nil:
		s.log.Error("media: download", "id", id, "err", err)
		httpError(w, http.StatusInternalServerError, codeInternal)
		return
	case !ok:
		httpError(w, http.StatusNotFound, codeNotFound)
		return
	case rec.state != stateReady:
		httpError(w, http.StatusConflict, codeNotReady)
		return
	}
	etag := `"` + rec.hash.String() + `"`
	off, n, status := int64(0), rec.size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && (r.Header.Get("If-Range") == "" || r.Header.Get("If-Range") == etag) {
		var satisfiable, ok bool
		off, n, satisfiable, ok = parseRange(rg, rec.size)
		switch {
		case !ok:
			off, n = 0, rec.size // not a single byte range: the whole content
		case !satisfiable:
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(rec.size, 10))
			httpError(w, http.StatusRequestedRangeNotSatisfiable, codeInvalidArgument)
			return
		default:
			status = http.StatusPartialContent
		}
	}
	var body io.ReadCloser
	if r.Method == http.MethodGet {
		body, err = s.store.Open(r.Context(), rec.hash, off, n)
		switch {
		case errors.Is(err, ErrBlobNotFound):
			httpError(w, http.StatusNotFound, codeNotFound)
			return
		case err != nil:
			s.log.Error("media: download", "id", id, "err", err)
			httpError(w, http.StatusInternalServerError, codeInternal)
			return
		}
		defer body.Close()
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	if status == http.StatusPartialContent {
		h.Set("Content-Range", "bytes "+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10)+"/"+strconv.FormatInt(rec.size, 10))
	}
	w.WriteHeader(status)
	if body == nil {
		return
	}
	if err := s.copyOut(w, ctl, body, n, t); err != nil {
		s.log.Debug("media: download cut", "id", id, "err", err)
	}
}

// parseRange parses a Range header for content of size bytes. ok is false
// for anything but one byte range (the server then sends everything);
// satisfiable is false for a range that starts beyond the end.
func parseRange(h string, size int64) (off, n int64, satisfiable, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if first == "" { // suffix: the last n bytes
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k < 0 {
			return 0, 0, false, false
		}
		if k == 0 {
			return 0, 0, false, true
		}
		k = min(k, size)
		return size - k, k, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false, false
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, false, true
	}
	return a, b - a + 1, true, true
}

// copyOut streams n bytes of body to w, giving up when a write makes no
// progress for IdleTimeout or the watchdog cuts t for moving too slowly.
func (s *Service) copyOut(w http.ResponseWriter, ctl *http.ResponseController, body io.Reader, n int64, t *transfer) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	s.xfer.stream(t, true, s.cfg.Now())
	defer s.xfer.stream(t, false, s.cfg.Now())
	s.stats.downloads.Add(1)
	for n > 0 {
		m, err := io.ReadFull(body, buf[:min(int64(len(buf)), n)])
		if m > 0 {
			if !t.arm(ctl.SetWriteDeadline, time.Now().Add(s.cfg.IdleTimeout)) {
				return errSlow
			}
			if _, werr := w.Write(buf[:m]); werr != nil {
				if t.wasCut() {
					return fmt.Errorf("%w: %w", errSlow, werr)
				}
				return werr
			}
			t.progress(m)
			s.stats.bytesOut.Add(uint64(m))
			n -= int64(m)
		}
		if err != nil {
			if n > 0 {
				return err
			}
			break
		}
	}
	t.arm(ctl.SetWriteDeadline, time.Time{})
	return nil
}
