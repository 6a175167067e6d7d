package analytics

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Writer that keeps what it is given, or fails, or holds
// every Write until released.
type recorder struct {
	mu      sync.Mutex
	batches [][]Event
	fail    bool
	hold    chan struct{} // non-nil: Write waits for it (or ctx)
	wrote   chan struct{} // capacity 1: signalled after each Write
}

func (r *recorder) Write(ctx context.Context, batch []Event) error {
	if r.hold != nil {
		select {
		case <-r.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		select {
		case r.wrote <- struct{}{}:
		default:
		}
	}()
	if r.fail {
		return errors.New("down")
	}
	r.batches = append(r.batches, append([]Event(nil), batch...))
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) events() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		n += len(b)
	}
	return n
}

// TestPipelineBatches: events go to the writer in batches of at most
// BatchSize, and what is buffered is written by Close.
func TestPipelineBatches(t *testing.T) {
	w := &recorder{wrote: make(chan struct{}, 1)}
	p, err := New(Config{Writer: w, BatchSize: 10, FlushEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		p.Emit(Event{Type: TypeLogin, User: uint64(i)})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := w.events(); n != 25 {
		t.Fatalf("writer got %d events, want 25", n)
	}
	for _, b := range w.batches {
		if len(b) > 10 {
			t.Fatalf("a batch of %d", len(b))
		}
	}
	if st := p.Stats(); st.Emitted != 25 || st.Written != 25 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	p.Emit(Event{Type: TypeLogin})
	if st := p.Stats(); st.Dropped != 1 {
		t.Fatalf("an event after Close: %+v, want it dropped", st)
	}
}

// TestPipelineNeverBlocks: while the writer hangs, Emit returns at once;
// past the buffer events are dropped and counted; a batch the writer
// refuses is counted as failed, and the pipeline goes on.
func TestPipelineNeverBlocks(t *testing.T) {
	w := &recorder{hold: make(chan struct{}), wrote: make(chan struct{}, 1)}
	p, err := New(Config{Writer: w, Buffer: 100, BatchSize: 1, WriteTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10_000 {
			p.Emit(Event{Type: TypeMessageAccepted})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked on a writer that hangs")
	}
	// One event is in the writer's hands, at most 100 wait, the rest went.
	if st := p.Stats(); st.Dropped < 10_000-101 || st.Emitted+st.Dropped != 10_000 {
		t.Fatalf("stats while the writer hangs: %+v", st)
	}
	w.mu.Lock()
	w.fail = true
	w.mu.Unlock()
	close(w.hold)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Failed != st.Emitted || st.Written != 0 {
		t.Fatalf("stats after a writer refusing everything: %+v", st)
	}
}

// TestFile: events are appended as JSON lines.
func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "analytics", "events.ndjson")
	f, err := OpenFile(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Writer: f})
	if err != nil {
		t.Fatal(err)
	}
	p.Emit(Event{Type: TypeMessageAccepted, TimeMS: 1, User: 4101, Peer: 4102, ID: 7, Size: 28})
	p.Emit(Event{Type: TypeGroupCreated, TimeMS: 2, User: 4101, Group: 12293})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var got []Event
	for sc := bufio.NewScanner(file); sc.Scan(); {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		got = append(got, e)
	}
	if len(got) != 2 || got[0].Size != 28 || got[1].Group != 12293 {
		t.Fatalf("file holds %+v", got)
	}
}

// TestKafkaDown: with no broker listening, a Kafka writer's batch fails
// within the write timeout, and the pipeline counts it and goes on; Emit
// never waits.
func TestKafkaDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	k, err := OpenKafka(KafkaConfig{Brokers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Writer: k, BatchSize: 5, FlushEvery: 10 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		p.Emit(Event{Type: TypeLogin, User: 1})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Failed != 5 || st.Written != 0 {
		t.Fatalf("stats with the broker down: %+v", st)
	}
}

// TestKafkaProduces: against franz-go's in-process broker (pkg/kfake), a
// batch is produced to the topic, one record per event keyed by user id,
// and read back whole and in order.
func TestKafkaProduces(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "parley-events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k, err := OpenKafka(KafkaConfig{Brokers: c.ListenAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Writer: k, BatchSize: 4, FlushEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{Type: TypeRegistered, User: 7, Device: 1, Count: 1},
		{Type: TypeLogin, User: 7, Device: 1},
		{Type: TypeMessageAccepted, User: 7, Device: 1, Peer: 9, ID: 100, Size: 20},
		{Type: TypeMessageDelivered, User: 9, Peer: 7, ID: 100},
		{Type: TypeMessageRead, User: 9, Peer: 7, ID: 100},
		{Type: TypeGroupCreated, User: 7, Group: 12},
	}
	for _, e := range want {
		p.Emit(e)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Written != uint64(len(want)) || st.Failed != 0 {
		t.Fatalf("stats: %+v", st)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("parley-events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []Event
	for len(got) < len(want) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d events back: %v", len(got), len(want), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var e Event
			if err := json.Unmarshal(r.Value, &e); err != nil {
				t.Errorf("record %q: %v", r.Value, err)
				return
			}
			if k := binary.BigEndian.Uint64(r.Key); k != e.User {
				t.Errorf("record keyed %d for user %d", k, e.User)
			}
			got = append(got, e)
		})
	}
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
