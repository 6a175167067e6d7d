package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Media transfers (spec.md section 14). The bytes go over HTTPS to signed
// URLs; the URLs come over the chat connection (MEDIA_UPLOAD,
// MEDIA_DOWNLOAD), through a MediaRequester. The media id, the SHA-256
// and the key of end-to-end encrypted media travel in the body of an
// ordinary Send, which the server never reads.

// ErrMediaCorrupt reports downloaded bytes whose size or SHA-256 differ
// from what the server announced for the media id.
var ErrMediaCorrupt = errors.New("client: downloaded media does not match its size and SHA-256")

// MediaID is a media id: 16 random bytes the server assigns.
type MediaID [16]byte

// String returns the id as 32 hex digits.
func (id MediaID) String() string { return fmt.Sprintf("%x", id[:]) }

// MediaUploadRequest is what a client asks an upload slot for.
type MediaUploadRequest struct {
	Type   pb.ContentType // IMAGE, VIDEO, VOICE or DOCUMENT
	Size   int64          // bytes, at most protocol.MaxMediaSize(Type)
	SHA256 [32]byte       // of exactly the bytes to upload
	// Resume names an unfinished upload of the same bytes to continue;
	// nil asks for a new one.
	Resume *MediaID
}

// MediaUploadSlot is the server's answer to a MediaUploadRequest.
type MediaUploadSlot struct {
	ID MediaID
	// Stored says the server has these bytes already: the id is usable,
	// nothing is to be uploaded, URL is empty.
	Stored bool
	URL    string        // the signed upload URL
	TTL    time.Duration // how long URL works
	Offset int64         // bytes of the upload the server already has
}

// MediaDownloadURL is the server's answer to a download URL request.
type MediaDownloadURL struct {
	URL    string
	TTL    time.Duration
	Size   int64
	SHA256 [32]byte
	Type   pb.ContentType
}

// MediaRequester asks the server for upload slots and download URLs over
// the chat connection: MEDIA_UPLOAD → MEDIA_UPLOAD_SLOT and MEDIA_DOWNLOAD
// → MEDIA_DOWNLOAD_URL, each with its own rid. A refusal is a
// *ServerError. Implementations retry OVERLOADED, RATE_LIMITED and
// INTERNAL themselves, as Client does for its other requests.
type MediaRequester interface {
	RequestUploadSlot(ctx context.Context, req MediaUploadRequest) (MediaUploadSlot, error)
	RequestDownloadURL(ctx context.Context, id MediaID) (MediaDownloadURL, error)
}

// MediaRef is a stored media: what a sender puts in the message body,
// with the key if the bytes are encrypted.
type MediaRef struct {
	ID     MediaID
	Type   pb.ContentType
	Size   int64
	SHA256 [32]byte
}

// Media uploads and downloads media with resumption. Its methods are safe
// for concurrent use.
type Media struct {
	// Requester gets slots and URLs. Required.
	Requester MediaRequester
	// HTTP carries the transfers; NewMediaHTTPClient builds one that
	// trusts the server the way a Config does. Required.
	HTTP *http.Client
	// Attempts bounds the HTTP requests one transfer may make, resumed
	// ones included; zero means 20.
	Attempts int
	// Backoff is the delay before the n-th retry after a failed request
	// (n from 0); nil means 250 ms doubling up to 8 s.
	Backoff func(n int) time.Duration
	// OnSlot, if set, is called with the media id as soon as an upload slot
	// is issued, so the application can save it and continue the upload
	// with ResumeUpload after a restart.
	OnSlot func(MediaRef)
}

// NewMediaHTTPClient returns an HTTP client for the media URLs of the
// server cfg names: TLS 1.3 with the same pinned fingerprint or CA pool
// as the chat connection (by default the media endpoint uses the chat
// certificate). It has no overall timeout; transfers are bounded by
// their context and by the server's idle timeout.
func NewMediaHTTPClient(cfg Config) (*http.Client, error) {
	var pin []byte
	if cfg.Fingerprint != "" {
		var err error
		if pin, err = ParseFingerprint(cfg.Fingerprint); err != nil {
			return nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig(cfg, "", pin) // ServerName: the URL's host unless cfg.ServerName
	tr.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: tr}, nil
}

func (m *Media) attempts() int {
	if m.Attempts > 0 {
		return m.Attempts
	}
	return 20
}

func (m *Media) wait(ctx context.Context, n int, hint time.Duration) error {
	d := hint
	if d == 0 {
		if m.Backoff != nil {
			d = m.Backoff(n)
		} else {
			d = min(250*time.Millisecond<<min(n, 5), 8*time.Second)
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retriable reports whether a media endpoint refusal with code c passes
// with time: the server or the user's share of it is busy ([S-14-14],
// [S-14-18]), or it failed.
func retriable(c protocol.Code) bool {
	return c == protocol.CodeOverloaded || c == protocol.CodeMediaTooManyTransfers || c == protocol.CodeInternal
}

// httpRefusal turns a refused media request into a *ServerError carrying
// the code of the Parley-Error header (INTERNAL if there is none).
func httpRefusal(res *http.Response) *ServerError {
	code := protocol.CodeInternal
	if n, err := strconv.Atoi(res.Header.Get("Parley-Error")); err == nil {
		code = protocol.Code(n)
	}
	se := &ServerError{Code: code, Message: "HTTP " + res.Status}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil {
		se.RetryAfter = time.Duration(s) * time.Second
	}
	return se
}

// UploadMedia uploads the size bytes of r, whose SHA-256 is sum, as media
// of type typ, and returns the reference to put in a message. It asks for
// a slot (no upload at all if the server has the bytes), PUTs them, and
// when a PUT breaks off asks the server how far it got (HEAD) and sends
// the rest; an expired URL is renewed for the same upload.
func (m *Media) UploadMedia(ctx context.Context, typ pb.ContentType, r io.ReaderAt, size int64, sum [32]byte) (MediaRef, error) {
	ref := MediaRef{Type: typ, Size: size, SHA256: sum}
	slot, err := m.Requester.RequestUploadSlot(ctx, MediaUploadRequest{Type: typ, Size: size, SHA256: sum})
	if err != nil {
		return ref, err
	}
	ref.ID = slot.ID
	if slot.Stored {
		return ref, nil
	}
	if m.OnSlot != nil {
		m.OnSlot(ref)
	}
	return ref, m.upload(ctx, ref, r, slot)
}

// ResumeUpload continues the upload of ref (from UploadMedia's OnSlot)
// after the application restarted, from wherever the server stands.
func (m *Media) ResumeUpload(ctx context.Context, ref MediaRef, r io.ReaderAt) error {
	id := ref.ID
	slot, err := m.Requester.RequestUploadSlot(ctx, MediaUploadRequest{Type: ref.Type, Size: ref.Size, SHA256: ref.SHA256, Resume: &id})
	if err != nil || slot.Stored {
		return err
	}
	return m.upload(ctx, ref, r, slot)
}

func (m *Media) upload(ctx context.Context, ref MediaRef, r io.ReaderAt, slot MediaUploadSlot) error {
	url, off, known := slot.URL, slot.Offset, true
	var last error
	for n := 0; n < m.attempts(); n++ {
		if !known {
			o, err := m.uploadOffset(ctx, url)
			if CodeOf(err) == protocol.CodeMediaURLExpired {
				id := ref.ID
				s, err := m.Requester.RequestUploadSlot(ctx, MediaUploadRequest{Type: ref.Type, Size: ref.Size, SHA256: ref.SHA256, Resume: &id})
				if err != nil || s.Stored {
					return err
				}
				url, off = s.URL, s.Offset
			} else if err != nil {
				if se := (*ServerError)(nil); errors.As(err, &se) && !retriable(se.Code) {
					return err
				}
				last = err
				if err := m.wait(ctx, n, 0); err != nil {
					return err
				}
				continue
			} else {
				off = o
			}
			known = true
		}
		res, err := m.put(ctx, url, r, off, ref.Size)
		if err != nil {
			last, known = err, false
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := m.wait(ctx, n, 0); err != nil {
				return err
			}
			continue
		}
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			return nil
		}
		se := httpRefusal(res)
		last, known = se, false
		switch {
		case se.Code == protocol.CodeMediaOffsetMismatch:
			if o, err := strconv.ParseInt(res.Header.Get("Upload-Offset"), 10, 64); err == nil {
				off, known = o, true
			}
		case se.Code == protocol.CodeMediaUploadBusy, res.StatusCode == http.StatusRequestTimeout,
			retriable(se.Code), se.Code == protocol.CodeMediaStorageFull:
			if err := m.wait(ctx, n, se.RetryAfter); err != nil {
				return err
			}
		case se.Code == protocol.CodeMediaURLExpired:
		default:
			return se // wrong hash or size, bad signature, gone: final ([S-14-11])
		}
	}
	return fmt.Errorf("client: upload of media %s: giving up: %w", ref.ID, last)
}

// put sends bytes [off, size) of r to url.
func (m *Media) put(ctx context.Context, url string, r io.ReaderAt, off, size int64) (*http.Response, error) {
	if off >= size {
		// The server has every byte but has not made the id usable (a
		// failed commit): send everything again.
		off = 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, io.NewSectionReader(r, off, size-off))
	if err != nil {
		return nil, err
	}
	req.ContentLength = size - off
	req.Header.Set("Content-Type", "application/octet-stream")
	if off > 0 {
		req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, size-1, size))
	}
	return m.HTTP.Do(req)
}

// uploadOffset asks how many bytes of an upload the server has.
func (m *Media) uploadOffset(ctx context.Context, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return 0, err
	}
	res, err := m.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, httpRefusal(res)
	}
	return strconv.ParseInt(res.Header.Get("Upload-Offset"), 10, 64)
}

// DownloadMedia writes media id to w, resuming with Range requests when
// the connection breaks and renewing an expired URL, and checks the size
// and SHA-256 the server announced (ErrMediaCorrupt). It returns what the
// server said about the media.
func (m *Media) DownloadMedia(ctx context.Context, id MediaID, w io.Writer) (MediaDownloadURL, error) {
	return m.download(ctx, id, w, 0, sha256.New())
}

// DownloadMediaFile downloads media id into the file at path, continuing
// a partial file that an earlier, interrupted call left there; the file is
// complete and verified when it returns nil.
func (m *Media) DownloadMediaFile(ctx context.Context, id MediaID, path string) (MediaDownloadURL, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return MediaDownloadURL{}, err
	}
	defer f.Close()
	h := sha256.New()
	have, err := io.Copy(h, f) // what an earlier attempt fetched
	if err != nil {
		return MediaDownloadURL{}, err
	}
	u, err := m.download(ctx, id, f, have, h)
	if errors.Is(err, ErrMediaCorrupt) {
		_ = f.Truncate(0) // start afresh next time
	}
	if err == nil {
		err = f.Sync()
	}
	return u, err
}

func (m *Media) download(ctx context.Context, id MediaID, w io.Writer, have int64, h hash.Hash) (MediaDownloadURL, error) {
	u, err := m.Requester.RequestDownloadURL(ctx, id)
	if err != nil {
		return u, err
	}
	if have > u.Size {
		return u, ErrMediaCorrupt
	}
	var last error
	for n := 0; have < u.Size && n < m.attempts(); n++ {
		got, err := m.get(ctx, u, io.MultiWriter(w, h), have)
		have += got
		if err == nil {
			continue
		}
		last = err
		var se *ServerError
		switch {
		case ctx.Err() != nil:
			return u, ctx.Err()
		case errors.As(err, &se) && se.Code == protocol.CodeMediaURLExpired:
			nu, err := m.Requester.RequestDownloadURL(ctx, id)
			if err != nil {
				return u, err
			}
			u.URL = nu.URL
		case errors.As(err, &se) && !retriable(se.Code):
			return u, err
		default:
			if err := m.wait(ctx, n, 0); err != nil {
				return u, err
			}
		}
	}
	if have < u.Size {
		return u, fmt.Errorf("client: download of media %s: giving up: %w", id, last)
	}
	if have != u.Size || [32]byte(h.Sum(nil)) != u.SHA256 {
		return u, ErrMediaCorrupt
	}
	return u, nil
}

// get writes the bytes of u from offset from to w and returns how many it
// wrote; a response cut short is an error after the bytes it delivered.
func (m *Media) get(ctx context.Context, u MediaDownloadURL, w io.Writer, from int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.URL, nil)
	if err != nil {
		return 0, err
	}
	if from > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
	}
	res, err := m.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if from > 0 { // the server sent everything: skip what we have
			if _, err := io.CopyN(io.Discard, res.Body, from); err != nil {
				return 0, err
			}
		}
	default:
		return 0, httpRefusal(res)
	}
	n, err := io.Copy(w, io.LimitReader(res.Body, u.Size-from))
	if err == nil && n < u.Size-from {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
