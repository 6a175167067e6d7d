// Package analytics is a node's stream of metadata events: registrations,
// logins, messages accepted, delivered and read, groups created, media
// uploaded. An event holds ids, sizes and times only: never a message
// body, a phone number or a name. The node's parts Emit events into a
// Pipeline, which batches them and hands each batch to a Writer: a local
// NDJSON file (File) by default, or a Kafka topic (Kafka).
//
// The pipeline never slows the chat down: Emit never blocks and never
// allocates beyond the event's copy into a bounded buffer; when the buffer
// is full (the writer is slow or down) the event is dropped and counted.
// A batch the writer refuses is dropped and counted too, after one retry;
// analytics counts, it does not account. A shard hands over a cycle's
// events once the cycle has committed (a cycle a storage error aborted
// emits none), but before the commit is synced: an event may describe an
// operation that a crash then undid.
//
// Threading: Emit and Stats may be called from any goroutine. One
// goroutine per Pipeline calls the Writer; Close stops it after a last
// flush.
package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Event types.
const (
	TypeRegistered       = "registered"        // a device registered: User, Device (a new account: Count 1)
	TypeLogin            = "login"             // a device logged in: User, Device
	TypeMessageAccepted  = "message_accepted"  // a message stored: User (sender), Device, Peer or Group, ID, Size, Count (group members)
	TypeMessageDelivered = "message_delivered" // a device acknowledged messages: User (the recipient), Peer (sender), Group, ID (up to)
	TypeMessageRead      = "message_read"      // a user read messages: User (the reader), Peer (sender), Group, ID (up to)
	TypeGroupCreated     = "group_created"     // a group was created: User (creator), Group
	TypeMediaUploaded    = "media_uploaded"    // an upload was stored: User, Size
)

// Event is one metadata event. Fields that do not apply are zero (and
// left out of the JSON).
type Event struct {
	Type   string `json:"type"`
	TimeMS int64  `json:"ts_ms"` // Unix milliseconds
	Shard  int    `json:"shard,omitempty"`
	User   uint64 `json:"user,omitempty"`
	Device uint32 `json:"device,omitempty"`
	Peer   uint64 `json:"peer,omitempty"`
	Group  uint64 `json:"group,omitempty"`
	ID     uint64 `json:"id,omitempty"`
	Size   int64  `json:"size,omitempty"` // bytes
	Count  int    `json:"count,omitempty"`
}

// Sink takes events; a Pipeline is one. Emit must not block.
type Sink interface {
	Emit(Event)
}

// Writer takes batches of events to where they are kept. Write is called
// by one goroutine at a time and must give up when ctx ends.
type Writer interface {
	Write(ctx context.Context, batch []Event) error
	Close() error
}

// Config configures a Pipeline. The zero value of each optional field
// means its default.
type Config struct {
	// Writer is where batches go. Required.
	Writer Writer
	// Buffer is how many events may wait for the writer; more are dropped.
	// Default 65536.
	Buffer int
	// BatchSize is the most events in one batch. Default 1000.
	BatchSize int
	// FlushEvery is the longest an event waits for a batch to fill.
	// Default 1 s.
	FlushEvery time.Duration
	// WriteTimeout bounds one Write. Default 10 s.
	WriteTimeout time.Duration
	// Logger receives the pipeline's errors (one line per failing batch,
	// at most one a minute); nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Buffer == 0 {
		c.Buffer = 1 << 16
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.FlushEvery == 0 {
		c.FlushEvery = time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Writer == nil {
		errs = append(errs, errors.New("no writer"))
	}
	if c.Buffer < 0 || c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("negative buffer %d or batch size %d", c.Buffer, c.BatchSize))
	}
	if c.FlushEvery < 0 || c.WriteTimeout < 0 {
		errs = append(errs, fmt.Errorf("negative flush interval %v or write timeout %v", c.FlushEvery, c.WriteTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("analytics: config: %w", err)
	}
	return nil
}

// Stats are a pipeline's counters since New.
type Stats struct {
	Emitted uint64 // taken into the buffer
	Dropped uint64 // refused: the buffer was full, or the pipeline closed
	Written uint64 // handed to the writer, which took them
	Failed  uint64 // in batches the writer refused twice
	Waiting int    // in the buffer now
}

// Pipeline batches events for its Writer.
type Pipeline struct {
	cfg    Config
	events chan Event
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	emitted, dropped, written, failed atomic.Uint64
	closed                            atomic.Bool
	lastLog                           time.Time // owned by the writer goroutine
}

// New starts a pipeline.
func New(cfg Config) (*Pipeline, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, events: make(chan Event, cfg.Buffer), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// Emit queues e, or drops and counts it when the buffer is full. It never
// blocks. A nil Pipeline drops everything, uncounted.
func (p *Pipeline) Emit(e Event) {
	if p == nil {
		return
	}
	if p.closed.Load() {
		p.dropped.Add(1)
		return
	}
	select {
	case p.events <- e:
		p.emitted.Add(1)
	default:
		p.dropped.Add(1)
	}
}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() Stats {
	return Stats{
		Emitted: p.emitted.Load(), Dropped: p.dropped.Load(), Written: p.written.Load(),
		Failed: p.failed.Load(), Waiting: len(p.events),
	}
}

// run is the writer goroutine.
func (p *Pipeline) run() {
	defer close(p.done)
	batch := make([]Event, 0, p.cfg.BatchSize)
	tick := time.NewTicker(p.cfg.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case e := <-p.events:
			if batch = append(batch, e); len(batch) >= p.cfg.BatchSize {
				batch = p.flush(batch)
			}
		case <-tick.C:
			batch = p.flush(batch)
		case <-p.stop:
			for {
				select {
				case e := <-p.events:
					if batch = append(batch, e); len(batch) >= p.cfg.BatchSize {
						batch = p.flush(batch)
					}
				default:
					p.flush(batch)
					return
				}
			}
		}
	}
}

// flush writes batch, retrying once, and returns it emptied.
func (p *Pipeline) flush(batch []Event) []Event {
	if len(batch) == 0 {
		return batch
	}
	var err error
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
		err = p.cfg.Writer.Write(ctx, batch)
		cancel()
		if err == nil {
			p.written.Add(uint64(len(batch)))
			return batch[:0]
		}
	}
	p.failed.Add(uint64(len(batch)))
	if now := time.Now(); now.Sub(p.lastLog) >= time.Minute {
		p.lastLog = now
		p.cfg.Logger.Error("analytics: events dropped: the writer refused them", "events", len(batch), "err", err)
	}
	return batch[:0]
}

// Close stops taking events, writes what is buffered, and closes the
// writer. Later calls return nil.
func (p *Pipeline) Close() error {
	var err error
	p.once.Do(func() {
		p.closed.Store(true)
		close(p.stop)
		<-p.done
		err = p.cfg.Writer.Close()
	})
	return err
}
