package loadtest

import (
	"context"
	"time"
)

// Scenario is a kind of run: a sequence of steps every worker walks
// through in lock step with the coordinator.
type Scenario struct {
	// Name is what --scenario takes.
	Name string
	// Summary is one line for the tool's help.
	Summary string
	// Steps returns the steps of a run with cfg (defaults applied). It is
	// called in the coordinator and in every worker and must return the
	// same steps in each.
	Steps func(cfg *Config) []Step
}

// Step is one phase of a scenario.
type Step struct {
	// Name names the step in progress lines and in Result.Steps.
	Name string
	// Worker is the step's work in each worker process; nil: nothing.
	Worker func(ctx context.Context, w *Worker) error
	// After runs in the coordinator once every worker has finished the
	// step, before the next one starts; nil: nothing.
	After func(ctx context.Context, c *coordinator) error
	// During runs in the coordinator, on a goroutine of its own, while
	// the workers run the step: from the go that starts the step until it
	// returns. The step ends when every worker has finished it and During
	// has returned; an error ends the run. nil: nothing.
	During func(ctx context.Context, c *coordinator) error
	// Timed reports the step's wall time, from the coordinator's go to the
	// last worker done, in Result.Steps.
	Timed bool
	// MeasureFrom and MeasureTo bound the traffic that the per-message
	// figures (bytes, server CPU) divide: from the start of the step
	// marked MeasureFrom to the end of the one marked MeasureTo.
	MeasureFrom, MeasureTo bool
	// Share, if set, runs in each worker after the step's Worker and
	// returns one value per device of the worker, in account order; the
	// coordinator joins them in account order and hands the whole vector
	// to every worker (Worker.shared) before the next step starts. It is
	// how workers learn what other workers know: user ids, group ids, the
	// last cmid each device sent.
	Share func(w *Worker) []uint64
}

// Scenarios lists the scenarios, one file each.
var Scenarios = []Scenario{
	idleScenario,
	pairsScenario,
	envelopesScenario,
	groupsScenario,
	groupEnvelopesScenario,
	mediaScenario,
	offlineScenario,
	stormScenario,
	churnScenario,
	chaosScenario,
	abuseScenario,
}

// ScenarioNames returns the names of Scenarios.
func ScenarioNames() []string {
	names := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		names[i] = s.Name
	}
	return names
}

func scenarioByName(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Steps shared by the scenarios.

// stepRegister creates every worker's accounts (paired: 2i talks to
// 2i+1); the coordinator then reads the server's settled memory as the
// baseline for the per-connection figure.
func stepRegister(paired bool) Step {
	return Step{
		Name: "register",
		Worker: func(ctx context.Context, w *Worker) error {
			if err := w.register(ctx); err != nil {
				return err
			}
			if paired {
				w.pair()
			}
			return nil
		},
		After: func(ctx context.Context, c *coordinator) error { return c.readBaseline(ctx) },
		Timed: true,
	}
}

// stepConnect logs in the devices match selects (nil: all) and waits for
// each one's Synced; settle is how long the coordinator waits before it
// reads the server's memory (0: at once).
func stepConnect(name string, match func(*device) bool, settle time.Duration) Step {
	return Step{
		Name: name,
		Worker: func(ctx context.Context, w *Worker) error {
			w.startPinger()
			return w.connectAll(ctx, match)
		},
		After: func(ctx context.Context, c *coordinator) error { return c.readConnected(ctx, settle) },
		Timed: true,
	}
}

// stepDrain waits until every message sent has arrived (or the drain
// timeout passes; then what is missing is lost).
func stepDrain() Step {
	return Step{
		Name:      "drain",
		Worker:    func(ctx context.Context, w *Worker) error { return w.drain(ctx, w.spec.Config.DrainTimeout) },
		Timed:     true,
		MeasureTo: true,
	}
}

// stepClose closes every connection.
func stepClose() Step {
	return Step{
		Name:   "close",
		Worker: func(_ context.Context, w *Worker) error { w.closeAll(); return nil },
	}
}

// everyone selects all devices.
func everyone(*device) bool { return true }

// even and odd split paired devices into the two sides of each pair.
func even(d *device) bool { return d.index%2 == 0 }
func odd(d *device) bool  { return d.index%2 == 1 }
