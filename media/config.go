package media

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
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
	// Now is the clock; nil means time.Now. Expiry, URL lifetimes and the
	// sweeper all read it, so tests can move time.
	Now func() time.Time

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
	// answers 503 with Retry-After. Default 256.
	MaxTransfers int
	// IdleTimeout is how long an HTTP upload or download may move no byte
	// before the server gives up on it. Default 30 s.
	IdleTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	setDefault(&c.Expiry, 30*24*time.Hour)
	setDefault(&c.IncompleteExpiry, 7*24*time.Hour)
	setDefault(&c.UploadURLTTL, 24*time.Hour)
	setDefault(&c.DownloadURLTTL, time.Hour)
	setDefault(&c.SweepInterval, time.Hour)
	setDefault(&c.Workers, 4)
	setDefault(&c.QueueLen, 1024)
	setDefault(&c.RequestsPerMinute, 600)
	setDefault(&c.MaxTransfers, 256)
	setDefault(&c.IdleTimeout, 30*time.Second)
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
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
		{"download URL lifetime", c.DownloadURLTTL}, {"idle timeout", c.IdleTimeout}} {
		if v.d < time.Second {
			errs = append(errs, fmt.Errorf("%s %v below 1s", v.name, v.d))
		}
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"workers", c.Workers}, {"queue length", c.QueueLen}, {"requests per minute", c.RequestsPerMinute}, {"max transfers", c.MaxTransfers}} {
		if v.n < 1 {
			errs = append(errs, fmt.Errorf("%s %d below 1", v.name, v.n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("media: config: %w", err)
	}
	return nil
}
