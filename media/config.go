package media

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// Config configures a Service. The zero value of each optional field means
// its default.
type Config struct {
	// Dir holds the media metadata (Dir/meta, a Pebble database), the
	// URL-signing key (Dir/url.key, created on first start), unfinished
	// uploads (Dir/uploads) and, with the default store, the blobs
	// (Dir/blobs). Required.
	Dir string
	// BaseURL is what the URLs handed to clients start with: the scheme,
	// host and port at which clients reach Handler, such as
	// "https://media.example.com" or "https://127.0.0.1:5443", without a
	// trailing slash. Required.
	BaseURL string
	// Store keeps the blobs; nil means an FSStore in Dir/blobs.
	Store Store
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// OnStorageFatal is called when the metadata database (Pebble) reports
	// an error it cannot continue from; it must not return. nil panics.
	OnStorageFatal func(msg string)
	// Now is the clock; nil means time.Now. Expiry, URL lifetimes and the
	// sweeper all read it, so tests can move time.
	Now func() time.Time
	// OnUploaded, if set, is called once an upload is stored, with its
	// uploader (0 for records older than the field), size in bytes and
	// type (analytics); from the goroutine that finished the upload, so it
	// must be quick and must not block.
	OnUploaded func(user uint64, size int64, typ pb.ContentType)

	// Expiry is how long stored media lives after its last reference (an
	// upload slot for its bytes or a download URL for it). Default 30 days.
	Expiry time.Duration
	// IncompleteExpiry is how long an unfinished upload is kept after the
	// last slot issued for it or the last PUT to it. Default 7 days.
	IncompleteExpiry time.Duration
	// UploadURLTTL is how long an upload URL works. Default 24 hours.
	UploadURLTTL time.Duration
	// DownloadURLTTL is how long a download URL works. Default 1 hour.
	DownloadURLTTL time.Duration
	// SweepInterval is how often the sweeper runs; it also runs at Start.
	// Default 1 hour; negative means never on its own (tests call Sweep).
	SweepInterval time.Duration

	// Workers is the number of goroutines answering slot and URL requests
	// (each answer may wait for an fsync). Default 4.
	Workers int
	// QueueLen bounds the requests waiting for a worker; beyond it a
	// request is refused with OVERLOADED. Default 1024.
	QueueLen int
	// RequestsPerMinute limits the slot and URL requests of one user per
	// minute; beyond it they are refused with RATE_LIMITED. Default 600.
	RequestsPerMinute int
	// MaxTransfers bounds concurrent HTTP requests; beyond it the handler
	// answers 503 OVERLOADED with Retry-After. Default 256.
	MaxTransfers int
	// MaxUserTransfers bounds the concurrent HTTP requests of one user
	// (uploads, downloads and HEADs on URLs issued to that user); beyond
	// it the handler answers 429 MEDIA_TOO_MANY_TRANSFERS. Default 8, at
	// most MaxTransfers.
	MaxUserTransfers int
	// ReservedTransfers is the share of MaxTransfers kept for users with
	// no transfer in progress: once no more than this many slots are
	// free, a user who already holds one gets 429
	// MEDIA_TOO_MANY_TRANSFERS, so a few users cannot take every slot.
	// Default MaxTransfers/8 (32); negative means none.
	ReservedTransfers int
	// IdleTimeout is how long an HTTP upload or download may move no byte
	// before the server gives up on it. Default 30 s.
	IdleTimeout time.Duration
	// MinTransferRate is the slowest a transfer may move its body, in
	// bytes per second averaged over each RateWindow; a slower one is cut
	// (an upload keeps what arrived and resumes from there). Default 1024
	// (1 KiB/s); negative means no minimum.
	MinTransferRate int
	// RateWindow is the period over which MinTransferRate is measured,
	// from the start of a body. Default 30 s.
	RateWindow time.Duration

	// StagingQuota bounds the bytes of unfinished uploads of one user (the
	// uploader who asked for the slot): bytes staged on disk plus the rest
	// of each upload a PUT is writing. A slot or PUT that would pass it is
	// refused with MEDIA_QUOTA_EXCEEDED. Default 4 GiB (two of the largest
	// documents); negative means no quota.
	StagingQuota int64
	// MinFreeBytes is the free-space reserve of the file system holding
	// Dir: a slot or PUT that would leave less free (counting the bytes
	// PUTs in progress have yet to write) is refused with
	// MEDIA_STORAGE_FULL; downloads go on. Default 1 GiB; negative means
	// no reserve.
	MinFreeBytes int64
	// FreeSpace returns the bytes available to the service in the file
	// system holding dir; nil means the operating system's figure
	// (statfs). It is called at most once a second (by Now). Tests inject
	// it.
	FreeSpace func(dir string) (uint64, error)
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Expiry = cmp.Or(c.Expiry, 30*24*time.Hour)
	c.IncompleteExpiry = cmp.Or(c.IncompleteExpiry, 7*24*time.Hour)
	c.UploadURLTTL = cmp.Or(c.UploadURLTTL, 24*time.Hour)
	c.DownloadURLTTL = cmp.Or(c.DownloadURLTTL, time.Hour)
	c.SweepInterval = cmp.Or(c.SweepInterval, time.Hour)
	c.Workers = cmp.Or(c.Workers, 4)
	c.QueueLen = cmp.Or(c.QueueLen, 1024)
	c.RequestsPerMinute = cmp.Or(c.RequestsPerMinute, 600)
	c.MaxTransfers = cmp.Or(c.MaxTransfers, 256)
	c.MaxUserTransfers = cmp.Or(c.MaxUserTransfers, min(8, c.MaxTransfers))
	c.ReservedTransfers = cmp.Or(c.ReservedTransfers, c.MaxTransfers/8)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, 30*time.Second)
	c.MinTransferRate = cmp.Or(c.MinTransferRate, 1024)
	c.RateWindow = cmp.Or(c.RateWindow, 30*time.Second)
	c.StagingQuota = cmp.Or(c.StagingQuota, 4<<30)
	c.MinFreeBytes = cmp.Or(c.MinFreeBytes, 1<<30)
	if c.FreeSpace == nil {
		c.FreeSpace = statfsFree
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
}

// validate reports every problem with c at once.
func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("no directory"))
	}
	if u, err := url.Parse(c.BaseURL); c.BaseURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("base URL %q: want https://host[:port]", c.BaseURL))
	}
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"expiry", c.Expiry}, {"incomplete expiry", c.IncompleteExpiry}, {"upload URL lifetime", c.UploadURLTTL},
		{"download URL lifetime", c.DownloadURLTTL}, {"idle timeout", c.IdleTimeout}, {"rate window", c.RateWindow}} {
		if v.d < time.Second {
			errs = append(errs, fmt.Errorf("%s %v below 1s", v.name, v.d))
		}
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"workers", c.Workers}, {"queue length", c.QueueLen}, {"requests per minute", c.RequestsPerMinute},
		{"max transfers", c.MaxTransfers}, {"max transfers per user", c.MaxUserTransfers}} {
		if v.n < 1 {
			errs = append(errs, fmt.Errorf("%s %d below 1", v.name, v.n))
		}
	}
	if c.MaxUserTransfers > c.MaxTransfers {
		errs = append(errs, fmt.Errorf("max transfers per user %d above max transfers %d", c.MaxUserTransfers, c.MaxTransfers))
	}
	if c.ReservedTransfers >= c.MaxTransfers {
		errs = append(errs, fmt.Errorf("reserved transfers %d leave none of max transfers %d", c.ReservedTransfers, c.MaxTransfers))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("media: config: %w", err)
	}
	return nil
}
