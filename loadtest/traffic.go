package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/parley-im/parley/internal/pace"
)

// trafficPlan says which devices send, how fast and for how long.
type trafficPlan struct {
	match    func(*device) bool // senders; nil: every device with a peer
	end      time.Time          // senders stop here
	interval time.Duration      // between one sender's messages; 0: flat out
	count    int                // if above 0, each sender stops after count messages
	inFlight int                // unanswered sends per sender
	keys     bool               // the sends hand out sender keys: counted as key sends, not messages
}

// planTraffic makes the plan for cfg's rate: Rate messages a second over
// senders senders in the whole run.
func planTraffic(cfg *Config, senders int, d time.Duration) trafficPlan {
	p := trafficPlan{end: time.Now().Add(d), inFlight: cfg.InFlight}
	if cfg.Rate > 0 {
		p.interval = time.Duration(float64(senders) / float64(cfg.Rate) * float64(time.Second))
	}
	return p
}

// traffic runs plan on this worker's devices and returns when every
// sender has stopped. Latencies count from warmup after now.
func (w *Worker) traffic(ctx context.Context, p trafficPlan, warmup time.Duration) {
	if warmup >= 0 {
		w.latency.window(time.Now().Add(warmup).UnixNano(), p.end.UnixNano())
	}
	var wg sync.WaitGroup
	for _, d := range w.devices {
		if (d.peer == nil && !d.groupSender()) || (p.match != nil && !p.match(d)) {
			continue
		}
		wg.Go(func() { d.sendLoop(ctx, p) })
	}
	wg.Wait()
}

// sendLoop is a device's sender goroutine. Latency counts as package
// pace says: from the scheduled time of a send the server held back, from
// the write of one it did not.
func (d *device) sendLoop(ctx context.Context, p trafficPlan) {
	pace.Until(ctx, p.end, p.interval, &pacedDevice{d: d, p: p})
}

// pacedDevice is a device as pace.Run drives it under a plan.
type pacedDevice struct {
	d    *device
	p    trafficPlan
	sent int
	buf  []byte
}

// Send implements pace.Sender: the device is held back while it has no
// session or its in-flight window is full.
func (pd *pacedDevice) Send(due *pace.Due) (<-chan struct{}, bool) {
	d, p := pd.d, pd.p
	d.mu.Lock()
	s := d.sess
	if s == nil {
		live := d.live
		d.mu.Unlock()
		return live, true
	}
	free := p.inFlight - len(d.unacked)
	if free <= 0 {
		d.mu.Unlock()
		return d.credit, true
	}
	if p.count > 0 {
		free = min(free, p.count-pd.sent)
	}
	pd.buf = pd.buf[:0]
	ws := due.Take(free)
	for _, w := range ws {
		cmid := d.nextCMID
		d.nextCMID++
		sp := pending{intended: w.From, actual: w.At}
		d.unacked[cmid] = sp
		pd.buf = d.appendSend(pd.buf, cmid, sp)
	}
	d.mu.Unlock()
	n := len(ws)
	pd.sent += n
	if p.keys {
		d.w.stats.keySends.Add(int64(n))
	} else {
		d.w.stats.sent.Add(int64(n))
	}
	_ = s.write(pd.buf) // on failure the reader reconnects and resends
	return nil, p.count == 0 || pd.sent < p.count
}

// Late implements pace.Sender.
func (pd *pacedDevice) Late(scheduled, actual int64) {
	pd.d.w.latency.recordLate(pd.d.index, scheduled, actual)
}

// drain waits until every message sent by this worker's devices has been
// answered and delivered, or timeout passes.
func (w *Worker) drain(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if w.drained() {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			w.log.Warn("drain timed out: counting what has not arrived as lost", "after", timeout)
			return nil
		}
	}
}

// drained reports whether every send was answered and delivered.
func (w *Worker) drained() bool {
	for _, d := range w.devices {
		if d.out == nil {
			continue
		}
		d.mu.Lock()
		sent, unacked := d.nextCMID-1, len(d.unacked)
		d.mu.Unlock()
		if unacked > 0 {
			return false
		}
		if _, recv := d.out.Counts(); uint64(recv) < sent {
			return false
		}
		for _, f := range d.fanout {
			if _, recv := f.Counts(); uint64(recv) < sent {
				return false
			}
		}
	}
	return true
}

// ensureConnected connects every device that has no live session.
func (w *Worker) ensureConnected(ctx context.Context) error {
	return w.connectAll(ctx, func(d *device) bool { return d.session() == nil })
}

// churn drops and reconnects d at random until end: connections live
// ChurnLife on average (exponentially distributed) and come back after a
// pause of up to 200 ms.
func (d *device) churn(ctx context.Context, end time.Time) error {
	mean := d.w.spec.Config.ChurnLife
	for {
		life := time.Duration(rand.ExpFloat64() * float64(mean))
		if time.Now().Add(life).After(end) {
			return nil
		}
		select {
		case <-time.After(life):
		case <-ctx.Done():
			return nil
		}
		d.keep.Store(false)
		d.disconnect(true)
		time.Sleep(rand.N(200 * time.Millisecond))
		if err := d.connectRetry(ctx); err != nil {
			return err
		}
		d.w.stats.reconnects.Add(1)
	}
}

// connectRetry connects d, retrying with backoff, and marks it to
// reconnect after a drop.
func (d *device) connectRetry(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		_, err := d.connect(ctx)
		if err == nil {
			d.keep.Store(true)
			return nil
		}
		if ctx.Err() != nil || attempt == 20 {
			return fmt.Errorf("device %d: %w%s", d.index, err, portHint(err))
		}
		if o, ok := err.(errOverloaded); ok {
			backoff = max(backoff, o.after)
		}
		time.Sleep(jitter(backoff))
		backoff = min(2*backoff, 2*time.Second)
	}
}
