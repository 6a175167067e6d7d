// Package reports is the operator's queue of user reports (spec.md
// section 18.5). The server hands it each REPORT; the queue rate limits
// them per account, writes them, one JSON object per line, to a file that
// rotates by size (internal/ndjson), syncs it, and only then has the
// report answered OK. The operator reads the file, or the most recent
// reports at the admin endpoint (GET /reports, ServeHTTP).
//
// What a report holds: when, the reporting user and device, the reported
// user, the group, the reason, and the messages with the content the
// reporting client revealed (spec [S-18-14]). It holds no phone number.
//
// Threading: Take, Recent, Stats and ServeHTTP may be called from any
// goroutine; Take never blocks (it runs on the server's event loops). One
// writer goroutine owns the file and calls the done callbacks. Close
// stops the writer once it has written what was taken.
package reports

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/parley-im/parley/internal/ndjson"
)

// Config configures a Queue. The zero value of each optional field means
// its default.
type Config struct {
	// Path is the file reports are appended to; rotated files are
	// Path.1, Path.2, …. Required.
	Path string
	// MaxBytes is the size of one file before it rotates. Default 64 MiB.
	MaxBytes int64
	// Keep is how many rotated files are kept. Default 4.
	Keep int
	// PerHour is how many reports one account may make per hour, its
	// devices together, with bursts of as many ([S-18-13]). Default 10.
	PerHour int
	// QueueLen is how many reports may wait for the writer; beyond it
	// Take refuses with ErrBusy. Default 256.
	QueueLen int
	// Recent is how many of the latest reports Recent returns (kept in
	// memory, bodies included). Default 100.
	Recent int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the queue's errors; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.PerHour == 0 {
		c.PerHour = 10
	}
	if c.QueueLen == 0 {
		c.QueueLen = 256
	}
	if c.Recent == 0 {
		c.Recent = 100
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("no path"))
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"reports per hour", c.PerHour}, {"queue length", c.QueueLen}, {"recent reports", c.Recent}, {"kept files", c.Keep}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("negative %s %d", v.name, v.n))
		}
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("negative file size %d", c.MaxBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reports: config: %w", err)
	}
	return nil
}

// Report is one user's report, as the operator reads it.
type Report struct {
	Time     time.Time `json:"time"`
	Reporter uint64    `json:"reporter"`
	Device   uint32    `json:"device"`
	User     uint64    `json:"user"`
	Group    uint64    `json:"group,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Messages []Message `json:"messages"`
}

// Message is one reported message: its id, content type, and the content
// the reporting client revealed, as Text when it is UTF-8, else as Body
// (base64 in JSON).
type Message struct {
	ID   uint64 `json:"id"`
	Type string `json:"type,omitempty"`
	Text string `json:"text,omitempty"`
	Body []byte `json:"body,omitempty"`
}

// NewMessage returns the Message for id, of content type typ (its name;
// "" for text), with content body.
func NewMessage(id uint64, typ string, body []byte) Message {
	m := Message{ID: id, Type: typ}
	if utf8.Valid(body) {
		m.Text = string(body)
	} else {
		m.Body = append([]byte(nil), body...)
	}
	return m
}

// Errors of Take.
var (
	// ErrBusy: the writer is behind; the report was not taken.
	ErrBusy = errors.New("reports: queue full")
	// ErrClosed: the queue is closed.
	ErrClosed = errors.New("reports: closed")
)

// RateLimitedError refuses a report of an account over its budget.
type RateLimitedError struct {
	// Wait is how long until the account may report again.
	Wait time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("reports: rate limited, retry in %v", e.Wait)
}

// Stats are a queue's counters since Open.
type Stats struct {
	Taken, Written, Failed uint64 // reports taken, durable, lost to a write error
	RateLimited, Busy      uint64 // reports refused
	Waiting                int    // reports waiting for the writer now
}

// Queue is the operator's queue of reports.
type Queue struct {
	cfg  Config
	file *ndjson.File // owned by the writer

	mu                           sync.Mutex
	closed                       bool               // guarded by mu
	buckets                      map[uint64]*bucket // guarded by mu: per-account budgets
	recent                       []Report           // guarded by mu: the latest, oldest first
	work                         chan job           // buffered QueueLen; closed by Close under mu
	done                         chan struct{}      // closed when the writer has returned
	written                      atomic.Uint64
	taken, failed, limited, busy atomic.Uint64
}

type job struct {
	r    Report
	done func(error)
}

// bucket is one account's report budget: tokens refill at PerHour per
// hour, up to PerHour.
type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets bounds the accounts whose budget is remembered; when full,
// those whose budget has refilled are forgotten first.
const maxBuckets = 1 << 16

// Open opens the queue's file and starts its writer.
func Open(cfg Config) (*Queue, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f, err := ndjson.Open(ndjson.Config{Path: cfg.Path, MaxBytes: cfg.MaxBytes, Keep: cfg.Keep})
	if err != nil {
		return nil, fmt.Errorf("reports: %w", err)
	}
	q := &Queue{
		cfg: cfg, file: f, buckets: map[uint64]*bucket{},
		work: make(chan job, cfg.QueueLen), done: make(chan struct{}),
	}
	go q.write()
	return q, nil
}

// Take queues r, made now, for the writer, which calls done once: with
// nil when r is durable, else with the write error. It refuses r at once,
// calling nothing, with a *RateLimitedError when r.Reporter is over its
// budget, ErrBusy when the writer is behind, ErrClosed after Close. It
// never blocks. r.Time is set to now.
func (q *Queue) Take(r Report, done func(error)) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	now := q.cfg.Now()
	if wait := q.spendLocked(r.Reporter, now); wait > 0 {
		q.limited.Add(1)
		return &RateLimitedError{Wait: wait}
	}
	r.Time = now
	select {
	case q.work <- job{r, done}:
		q.taken.Add(1)
		return nil
	default:
		q.refundLocked(r.Reporter)
		q.busy.Add(1)
		return ErrBusy
	}
}

// spendLocked spends one report of user's budget at now and returns 0, or
// returns how long until one is available. q.mu must be held.
func (q *Queue) spendLocked(user uint64, now time.Time) time.Duration {
	per := float64(q.cfg.PerHour)
	b := q.buckets[user]
	if b == nil {
		if len(q.buckets) >= maxBuckets {
			q.forgetLocked(now)
		}
		b = &bucket{tokens: per, at: now}
		q.buckets[user] = b
	}
	b.refill(now, per)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / per * float64(time.Hour))
}

func (q *Queue) refundLocked(user uint64) {
	if b := q.buckets[user]; b != nil {
		b.tokens = min(b.tokens+1, float64(q.cfg.PerHour))
	}
}

func (b *bucket) refill(now time.Time, per float64) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(per, b.tokens+d.Hours()*per)
		b.at = now
	}
}

// forgetLocked drops the budgets that have refilled, or, if that is not
// enough, half of them. q.mu must be held.
func (q *Queue) forgetLocked(now time.Time) {
	per := float64(q.cfg.PerHour)
	for id, b := range q.buckets {
		if b.refill(now, per); b.tokens >= per {
			delete(q.buckets, id)
		}
	}
	for id := range q.buckets {
		if len(q.buckets) < maxBuckets/2 {
			return
		}
		delete(q.buckets, id)
	}
}

// write is the writer goroutine: it writes what is queued, as many as
// have come at once, syncs, and calls their done callbacks.
func (q *Queue) write() {
	defer close(q.done)
	var batch []job
	var lines []byte
	for j := range q.work {
		batch = append(batch[:0], j)
	more:
		for len(batch) < 64 {
			select {
			case j, ok := <-q.work:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		lines = lines[:0]
		for _, j := range batch {
			b, err := json.Marshal(j.r)
			if err != nil { // cannot happen: plain fields
				q.cfg.Logger.Error("reports: encode", "err", err)
				continue
			}
			lines = append(append(lines, b...), '\n')
		}
		err := q.file.Write(lines)
		if err == nil {
			err = q.file.Sync()
		}
		if err != nil {
			q.cfg.Logger.Error("reports: write", "err", err)
			q.failed.Add(uint64(len(batch)))
		} else {
			q.written.Add(uint64(len(batch)))
			q.remember(batch)
		}
		for _, j := range batch {
			if j.done != nil {
				j.done(err)
			}
		}
		clear(batch)
	}
}

// remember keeps the latest reports for Recent.
func (q *Queue) remember(batch []job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, j := range batch {
		q.recent = append(q.recent, j.r)
	}
	if over := len(q.recent) - q.cfg.Recent; over > 0 {
		q.recent = append(q.recent[:0], q.recent[over:]...)
	}
}

// Recent returns the latest durable reports, oldest first.
func (q *Queue) Recent() []Report {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Report(nil), q.recent...)
}

// Stats returns the queue's counters.
func (q *Queue) Stats() Stats {
	return Stats{
		Taken: q.taken.Load(), Written: q.written.Load(), Failed: q.failed.Load(),
		RateLimited: q.limited.Load(), Busy: q.busy.Load(), Waiting: len(q.work),
	}
}

// ServeHTTP answers GET with the latest reports as a JSON array, oldest
// first: the admin endpoint's /reports.
func (q *Queue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(q.Recent())
}

// Close takes no more reports, waits for the writer to write and answer
// what was taken, and closes the file. Later calls return nil.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	close(q.work)
	q.mu.Unlock()
	<-q.done
	return q.file.Close()
}
