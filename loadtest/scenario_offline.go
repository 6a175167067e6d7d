package loadtest

import (
	"context"
	"time"
)

// offlineScenario queues Queue messages for each offline user, then
// connects the users and times the drain of their backlogs.
var offlineScenario = Scenario{
	Name:    "offline",
	Summary: "queue --queue messages per offline user, then reconnect them and time the drain",
	Steps: func(cfg *Config) []Step {
		return []Step{
			stepRegister(true),
			stepConnect("connect senders", even, 0),
			{
				Name: "queue",
				Worker: func(ctx context.Context, w *Worker) error {
					cfg := &w.spec.Config
					p := trafficPlan{match: even, end: time.Now().Add(24 * time.Hour), count: cfg.Queue, inFlight: max(cfg.InFlight, 100)}
					w.traffic(ctx, p, -1)
					return w.waitAnswered(ctx, cfg.DrainTimeout)
				},
				Timed:       true,
				MeasureFrom: true,
			},
			{
				// The figure: from the go to the last backlog delivered.
				Name: "connect and drain",
				Worker: func(ctx context.Context, w *Worker) error {
					if err := w.connectAll(ctx, odd); err != nil {
						return err
					}
					return w.drain(ctx, w.spec.Config.DrainTimeout)
				},
				Timed:     true,
				MeasureTo: true,
			},
			stepClose(),
		}
	},
}

// waitAnswered waits until every send has its Sent.
func (w *Worker) waitAnswered(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		n := 0
		for _, d := range w.devices {
			d.mu.Lock()
			n += len(d.unacked)
			d.mu.Unlock()
		}
		if n == 0 {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			w.log.Warn("sends still unanswered", "n", n, "after", timeout)
			return nil
		}
	}
}
