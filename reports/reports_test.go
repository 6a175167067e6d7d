package reports

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// take takes r and waits for its done.
func take(t *testing.T, q *Queue, r Report) error {
	t.Helper()
	done := make(chan error, 1)
	if err := q.Take(r, func(err error) { done <- err }); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("done not called")
		return nil
	}
}

// TestQueue: a report is answered once it is in the file; an account has
// PerHour reports per hour, refilled over the hour, and one account's
// spending does not touch another's; the latest are served as JSON.
func TestQueue(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "reports", "reports.ndjson")
	q, err := Open(Config{Path: path, PerHour: 2, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := Report{Reporter: 4101, Device: 1, User: 4102, Reason: "spam",
		Messages: []Message{NewMessage(7, "", []byte("buy now")), NewMessage(8, "CONTENT_IMAGE", []byte{0xff, 0})}}
	for range 2 {
		if err := take(t, q, r); err != nil {
			t.Fatal(err)
		}
	}
	// The file holds both, as they were made.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []Report
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var r Report
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	f.Close()
	if len(got) != 2 || got[0].Reporter != 4101 || got[0].Messages[0].Text != "buy now" || string(got[0].Messages[1].Body) != "\xff\x00" || !got[0].Time.Equal(clk.Now()) {
		t.Fatalf("file holds %+v", got)
	}

	var rl *RateLimitedError
	if err := take(t, q, r); !errors.As(err, &rl) || rl.Wait != 30*time.Minute {
		t.Fatalf("third report: %v, want rate limited for 30 min", err)
	}
	if err := take(t, q, Report{Reporter: 4103, User: 4102, Messages: r.Messages}); err != nil {
		t.Fatalf("another account: %v", err)
	}
	clk.Add(30 * time.Minute)
	if err := take(t, q, r); err != nil {
		t.Fatalf("after half an hour: %v", err)
	}

	rec := httptest.NewRecorder()
	q.ServeHTTP(rec, httptest.NewRequest("GET", "/reports", nil))
	var served []Report
	if err := json.Unmarshal(rec.Body.Bytes(), &served); err != nil || len(served) != 4 {
		t.Fatalf("served %d reports, %v: %s", len(served), err, rec.Body)
	}
	if st := q.Stats(); st.Taken != 4 || st.Written != 4 || st.RateLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestQueueBusy: while the writer is behind, a full queue refuses at once
// (ErrBusy) and does not spend the account's budget; what was taken is
// written and answered before Close returns.
func TestQueueBusy(t *testing.T) {
	q, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.ndjson"), QueueLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	held := make(chan struct{})
	r := Report{Reporter: 1, User: 2, Messages: []Message{{ID: 3}}}
	// The first report's done holds the writer.
	if err := q.Take(r, func(error) { close(held); <-release }); err != nil {
		t.Fatal(err)
	}
	<-held
	answered := make(chan error, 1)
	if err := q.Take(r, func(err error) { answered <- err }); err != nil {
		t.Fatal(err) // fills the queue
	}
	if err := q.Take(r, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("a full queue: %v, want ErrBusy", err)
	}
	close(release)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-answered; err != nil {
		t.Fatalf("the queued report: %v", err)
	}
	if err := q.Take(r, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if st := q.Stats(); st.Busy != 1 || st.Written != 2 {
		t.Fatalf("stats %+v", st)
	}
}
