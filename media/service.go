package media

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol/pb"
)

// Replier is where the answer to a slot or URL request goes: the
// requesting connection. The server's connections implement it (it is
// storage.Endpoint's Reply); Reply copies frames, never blocks, may be
// called from any goroutine and does nothing once the connection is gone.
type Replier = interface{ Reply(frames []byte) }

// touchEvery is how stale a blob's last reference must be before a
// download URL request writes a fresh one: expiry is exact to this much.
const touchEvery = time.Hour

// Service is the media service of one node: it answers slot and URL
// requests from the chat connections, serves the HTTPS endpoint
// (Handler), and sweeps expired media. Open it, Start it, Close it.
type Service struct {
	cfg     Config
	log     *slog.Logger
	meta    *meta
	store   Store
	sign    signer
	uploads string // directory of unfinished uploads

	queue     chan job
	xfer      *transfers // the endpoint's requests in progress
	disk      *diskSpace // free space of Dir's file system
	stats     counters
	stop      chan struct{}
	wg        sync.WaitGroup
	started   bool
	closeOnce sync.Once

	// mu serialises every read-modify-write of the metadata and guards
	// the maps below; it is never held across blob I/O.
	mu   sync.Mutex
	cond *sync.Cond // on mu: signalled when a deletion ends
	// active holds the media ids with a PUT in progress; guarded by mu.
	active map[ID]bool
	// committing counts uploads moving a blob into the store; guarded by
	// mu. The sweeper leaves such a hash alone.
	committing map[Hash]int
	// deleting holds hashes the sweeper is deleting from the store;
	// guarded by mu. A commit of the same hash waits for it.
	deleting map[Hash]bool
	// stage counts the bytes of unfinished uploads per uploader; its maps
	// are guarded by mu.
	stage staging

	limMu     sync.Mutex
	limMinute int64            // guarded by limMu: the minute counted
	limCount  map[uint64]int32 // guarded by limMu: requests per user this minute
}

// job is one slot or URL request waiting for a worker.
type job struct {
	user     uint64
	upload   *pb.MediaUpload
	download *pb.MediaDownload
	ep       Replier
}

// Open opens (creating on first use) the service's directory and
// metadata. It does not start any goroutine.
func Open(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "media"),
		uploads:    filepath.Join(cfg.Dir, "uploads"),
		store:      cfg.Store,
		queue:      make(chan job, cfg.QueueLen),
		xfer:       newTransfers(&cfg),
		stop:       make(chan struct{}),
		active:     make(map[ID]bool),
		committing: make(map[Hash]int),
		deleting:   make(map[Hash]bool),
		limCount:   make(map[uint64]int32),
		stage:      newStaging(),
	}
	s.disk = &diskSpace{dir: cfg.Dir, reserve: cfg.MinFreeBytes, free: cfg.FreeSpace, now: cfg.Now}
	s.cond = sync.NewCond(&s.mu)
	if s.store == nil {
		s.store = &FSStore{Dir: filepath.Join(cfg.Dir, "blobs")}
	}
	if err := os.MkdirAll(s.uploads, 0o700); err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.Dir, "url.key"))
	if err != nil {
		return nil, err
	}
	s.sign = signer{key: key}
	if s.meta, err = openMeta(filepath.Join(cfg.Dir, "meta"), s.log, cfg.OnStorageFatal); err != nil {
		return nil, err
	}
	if err := s.countStaged(); err != nil {
		s.meta.close()
		return nil, err
	}
	return s, nil
}

// countStaged counts the bytes of every unfinished upload against its
// uploader (the staging quota), as Open finds them.
func (s *Service) countStaged() error {
	return s.meta.scan(prefixMedia, nil, func(k, v []byte) bool {
		if r, err := decodeRecord(v); err == nil && r.state == statePending && len(k) == 1+IDLen {
			id := ID(k[1:])
			s.stage.set(id, r.owner, min(s.partialSize(id), r.size))
		}
		return true
	})
}

// Start starts the workers, the sweeper (which runs once right away) and
// the watchdog of slow transfers.
func (s *Service) Start() {
	s.started = true
	for range s.cfg.Workers {
		s.wg.Add(1)
		go s.work()
	}
	s.wg.Add(2)
	go s.sweepLoop()
	go s.watchLoop()
}

// watchEvery is how often the watchdog looks at the transfers' rates.
const watchEvery = time.Second

func (s *Service) watchLoop() {
	defer s.wg.Done()
	if s.xfer.minBytes <= 0 {
		return
	}
	tk := time.NewTicker(watchEvery)
	defer tk.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tk.C:
			s.checkTransfers()
		}
	}
}

// checkTransfers cuts the transfers that moved less than
// Config.MinTransferRate over their last Config.RateWindow, by the
// service's clock ([S-14-19]). The watchdog calls it every second.
func (s *Service) checkTransfers() {
	up, down := s.xfer.check(s.cfg.Now())
	if up+down > 0 {
		s.stats.slowUploads.Add(uint64(up))
		s.stats.slowDownloads.Add(uint64(down))
		s.log.Debug("media: slow transfers cut", "uploads", up, "downloads", down)
	}
}

// Close stops the workers and the sweeper, answers the requests still
// queued with OVERLOADED, waits for the HTTP requests in progress, and
// closes the metadata. Shut the HTTP server in front of Handler down (or
// close it) first, so that no request is left waiting on its client.
func (s *Service) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		// Wait for HTTP handlers still running (http.Server.Close does not
		// wait for them); from here on the handler answers 503.
		s.xfer.close()
		for {
			select {
			case j := <-s.queue:
				j.ep.Reply(errorFrame(codeOverloaded, rid(j), 1000))
				continue
			default:
			}
			break
		}
		err = s.meta.close()
	})
	return err
}

func rid(j job) uint32 {
	if j.upload != nil {
		return j.upload.Rid
	}
	return j.download.Rid
}

// Upload queues a MediaUpload request of user; the answer (MediaUploadSlot
// or Error) goes to ep. It never blocks: it reports false, and answers
// nothing, when the queue is full.
func (s *Service) Upload(user uint64, m *pb.MediaUpload, ep Replier) bool {
	return s.enqueue(job{user: user, upload: m, ep: ep})
}

// Download queues a MediaDownload request of user; the answer
// (MediaDownloadUrl or Error) goes to ep. It never blocks: it reports
// false, and answers nothing, when the queue is full.
func (s *Service) Download(user uint64, m *pb.MediaDownload, ep Replier) bool {
	return s.enqueue(job{user: user, download: m, ep: ep})
}

func (s *Service) enqueue(j job) bool {
	select {
	case s.queue <- j:
		return true
	default:
		return false
	}
}

func (s *Service) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.queue:
			if j.upload != nil {
				j.ep.Reply(s.answerUpload(j.user, j.upload))
			} else {
				j.ep.Reply(s.answerDownload(j.user, j.download))
			}
		}
	}
}

// errorFrame encodes an Error answering request rid.
func errorFrame(code pb.ErrorCode, rid uint32, retryAfterMS uint32) []byte {
	return codec.AppendError(nil, code, rid, 0, "", retryAfterMS)
}

// limit counts one request of user and returns 0, or how many
// milliseconds remain of the minute once the user has used up its budget.
func (s *Service) limit(user uint64, now time.Time) uint32 {
	minute := now.Unix() / 60
	s.limMu.Lock()
	defer s.limMu.Unlock()
	if minute != s.limMinute {
		s.limMinute = minute
		clear(s.limCount)
	}
	if int(s.limCount[user]) >= s.cfg.RequestsPerMinute {
		return uint32((minute+1)*60000 - now.UnixMilli())
	}
	s.limCount[user]++
	return 0
}

// checkUpload returns the code refusing m, or 0 ([S-14-3]).
func checkUpload(m *pb.MediaUpload) pb.ErrorCode {
	limit := maxSize(m.Type)
	switch {
	case limit == 0 || m.Size == 0 || len(m.Sha256) != HashLen || (len(m.Resume) != 0 && len(m.Resume) != IDLen):
		return codeInvalidArgument
	case m.Size > uint64(limit):
		return codeTooLarge
	}
	return 0
}

// answerUpload answers a MediaUpload.
func (s *Service) answerUpload(user uint64, m *pb.MediaUpload) []byte {
	if code := checkUpload(m); code != 0 {
		return errorFrame(code, m.Rid, 0)
	}
	now := s.cfg.Now()
	if wait := s.limit(user, now); wait > 0 {
		s.stats.refused[refuseRate].Add(1)
		return errorFrame(codeRateLimited, m.Rid, wait)
	}
	slot, code, err := s.slot(user, m, now)
	if err != nil {
		s.log.Error("media: upload slot", "err", err)
		return errorFrame(codeInternal, m.Rid, 0)
	}
	switch code {
	case 0:
	case codeStorageFull:
		return errorFrame(code, m.Rid, uint32(storageFullRetry/time.Millisecond))
	default:
		return errorFrame(code, m.Rid, 0)
	}
	slot.Rid = m.Rid
	b, err := codec.AppendProto(nil, kindUploadSlot, slot)
	if err != nil {
		return errorFrame(codeInternal, m.Rid, 0)
	}
	return b
}

// slot issues an upload slot to user: a fresh id for bytes already
// stored (no upload), a fresh id and URL for new bytes, or a fresh URL for
// an unfinished upload named by m.Resume. An upload that would pass its
// uploader's staging quota or the free-space reserve gets no URL.
func (s *Service) slot(user uint64, m *pb.MediaUpload, now time.Time) (*pb.MediaUploadSlot, pb.ErrorCode, error) {
	var h Hash
	copy(h[:], m.Sha256)
	size := int64(m.Size)
	ms := now.UnixMilli()
	s.mu.Lock()
	defer s.mu.Unlock()

	if len(m.Resume) > 0 {
		id, _ := IDFromBytes(m.Resume)
		r, ok, err := s.meta.media(id)
		switch {
		case err != nil:
			return nil, 0, err
		case !ok:
			return nil, codeNotFound, nil
		case r.hash != h || r.size != size || r.typ != m.Type:
			return nil, codeInvalidArgument, nil
		case r.state == stateReady:
			if err := s.touchBlobLocked(h, ms, 0); err != nil {
				return nil, 0, err
			}
			return &pb.MediaUploadSlot{Id: id[:], Stored: true}, 0, nil
		}
		held := min(s.partialSize(id), r.size)
		if code := s.roomLocked(r.owner, id, r.size, r.size-held); code != 0 {
			return nil, code, nil
		}
		r.touched = ms
		b := s.meta.db.NewBatch()
		_ = b.Set(mediaKey(id), r.encode(), nil)
		if err := s.meta.commit(b); err != nil {
			return nil, 0, err
		}
		return s.uploadSlot(id, user, now, held), 0, nil
	}

	id := NewID()
	br, stored, err := s.meta.blob(h)
	if err != nil {
		return nil, 0, err
	}
	if stored && br.size != size {
		return nil, codeInvalidArgument, nil // the same SHA-256 with another size: the request is wrong
	}
	if !stored {
		if code := s.roomLocked(user, id, size, size); code != 0 {
			return nil, code, nil
		}
	}
	b := s.meta.db.NewBatch()
	r := record{state: statePending, typ: m.Type, size: size, hash: h, created: ms, touched: ms, owner: user}
	if stored {
		// Content-hash dedupe: the bytes are here; the new id is usable now.
		r.state = stateReady
		br.touched = ms
		_ = b.Set(blobKey(h), br.encode(), nil)
		_ = b.Set(indexKey(h, id), nil, nil)
	}
	_ = b.Set(mediaKey(id), r.encode(), nil)
	if err := s.meta.commit(b); err != nil {
		return nil, 0, err
	}
	if stored {
		return &pb.MediaUploadSlot{Id: id[:], Stored: true}, 0, nil
	}
	return s.uploadSlot(id, user, now, 0), 0, nil
}

// roomLocked returns the code refusing an upload that would make upload
// id of owner count size bytes of staging and write need more bytes to
// disk, or 0 ([S-14-20], [S-14-21]). s.mu must be held.
func (s *Service) roomLocked(owner uint64, id ID, size, need int64) pb.ErrorCode {
	if s.stage.over(s.cfg.StagingQuota, owner, id, size) {
		s.stats.refused[refuseQuota].Add(1)
		return codeQuotaExceeded
	}
	ok, err := s.disk.fits(need)
	if err != nil {
		s.log.Warn("media: free space unknown", "dir", s.cfg.Dir, "err", err)
	}
	if !ok {
		s.stats.refused[refuseDisk].Add(1)
		return codeStorageFull
	}
	return 0
}

func (s *Service) uploadSlot(id ID, user uint64, now time.Time, offset int64) *pb.MediaUploadSlot {
	url, ttl := s.url(opUpload, id, user, now, s.cfg.UploadURLTTL)
	return &pb.MediaUploadSlot{Id: id[:], Url: url, ExpiresInS: ttl, Offset: uint64(offset)}
}

// url returns the signed URL for op on id, issued to user and valid for
// ttl from now, and its lifetime in whole seconds.
func (s *Service) url(op string, id ID, user uint64, now time.Time, ttl time.Duration) (string, uint32) {
	secs := int64(ttl / time.Second)
	u, exp, sig := s.sign.sign(op, id, user, now.Unix()+secs)
	path := downloadPath
	if op == opUpload {
		path = uploadPath
	}
	return s.cfg.BaseURL + path + id.String() + "?u=" + u + "&exp=" + exp + "&sig=" + sig, uint32(secs)
}

// touchBlobLocked records a reference to blob h at ms if the last one is
// older than stale ms. s.mu must be held.
func (s *Service) touchBlobLocked(h Hash, ms, stale int64) error {
	br, ok, err := s.meta.blob(h)
	if err != nil || !ok || br.touched > ms-stale {
		return err
	}
	br.touched = ms
	b := s.meta.db.NewBatch()
	_ = b.Set(blobKey(h), br.encode(), nil)
	return s.meta.commit(b)
}

// answerDownload answers a MediaDownload.
func (s *Service) answerDownload(user uint64, m *pb.MediaDownload) []byte {
	id, err := IDFromBytes(m.Id)
	if err != nil {
		return errorFrame(codeInvalidArgument, m.Rid, 0)
	}
	now := s.cfg.Now()
	if wait := s.limit(user, now); wait > 0 {
		s.stats.refused[refuseRate].Add(1)
		return errorFrame(codeRateLimited, m.Rid, wait)
	}
	r, ok, err := s.meta.media(id)
	switch {
	case err != nil:
		s.log.Error("media: download URL", "err", err)
		return errorFrame(codeInternal, m.Rid, 0)
	case !ok:
		return errorFrame(codeNotFound, m.Rid, 0)
	case r.state != stateReady:
		return errorFrame(codeNotReady, m.Rid, 0)
	}
	s.mu.Lock()
	_, alive, err := s.meta.blob(r.hash)
	if err == nil && alive {
		err = s.touchBlobLocked(r.hash, now.UnixMilli(), int64(touchEvery/time.Millisecond))
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		s.log.Error("media: download URL", "err", err)
		return errorFrame(codeInternal, m.Rid, 0)
	case !alive:
		return errorFrame(codeNotFound, m.Rid, 0) // swept meanwhile
	}
	url, ttl := s.url(opDownload, id, user, now, s.cfg.DownloadURLTTL)
	b, err := codec.AppendProto(nil, kindDownloadURL, &pb.MediaDownloadUrl{
		Rid: m.Rid, Url: url, ExpiresInS: ttl, Size: uint64(r.size), Sha256: r.hash[:], Type: r.typ,
	})
	if err != nil {
		return errorFrame(codeInternal, m.Rid, 0)
	}
	return b
}

// partialPath is where the unfinished upload of id is staged.
func (s *Service) partialPath(id ID) string { return filepath.Join(s.uploads, id.String()) }

// partialSize is how many bytes of id's upload the server holds.
func (s *Service) partialSize(id ID) int64 {
	fi, err := os.Stat(s.partialPath(id))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Counts are the numbers of things the service holds, for tests and
// metrics.
type Counts struct {
	Blobs    int // blob records
	Ready    int // media ids usable for download
	Pending  int // media ids waiting for their upload
	Partials int // files of unfinished uploads
}

// Counts counts what the metadata and the upload directory hold.
func (s *Service) Counts() (Counts, error) {
	var c Counts
	err := s.meta.scan(prefixBlob, nil, func(_, _ []byte) bool { c.Blobs++; return true })
	if err == nil {
		err = s.meta.scan(prefixMedia, nil, func(_, v []byte) bool {
			if r, derr := decodeRecord(v); derr == nil && r.state == stateReady {
				c.Ready++
			} else {
				c.Pending++
			}
			return true
		})
	}
	if err != nil {
		return c, err
	}
	entries, err := os.ReadDir(s.uploads)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("media: %w", err)
	}
	c.Partials = len(entries)
	return c, nil
}

// Store returns the service's blob store.
func (s *Service) Store() Store { return s.store }
