package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"
)

// A chaos run's node faults: Kills times during the traffic, at moments
// drawn from the seed, the coordinator either kills parleyd with SIGKILL
// or stops it with SIGTERM (a graceful shutdown: GoAway to every client,
// then the shards commit and close), and starts it again on the same data
// directory and ports.

// errParleydExit is returned when parleyd exits on its own during a
// chaos run: a crash, which is a finding.
var errParleydExit = errors.New("loadtest: parleyd exited on its own")

// gracefulShare is the share of the faults that are graceful restarts
// (SIGTERM) rather than SIGKILL.
const gracefulShare = 0.3

// gracefulStopTimeout bounds a graceful stop: parleyd gives itself 10 s.
const gracefulStopTimeout = 30 * time.Second

// fault is one planned fault: at offset At into the traffic, SIGTERM if
// Graceful, else SIGKILL.
type fault struct {
	At       time.Duration
	Graceful bool
}

// planFaults draws n faults from seed, at moments spread at random over
// [lead, window-tail) of the traffic, in time order. The same seed gives
// the same plan.
func planFaults(seed int64, n int, window time.Duration) []fault {
	rng := rand.New(rand.NewPCG(uint64(seed), 0xfa17))
	lead, tail := min(window/10, time.Second), min(window/10, 2*time.Second)
	span := max(window-lead-tail, time.Millisecond)
	fs := make([]fault, n)
	for i := range fs {
		fs[i] = fault{At: lead + time.Duration(rng.Int64N(int64(span))), Graceful: rng.Float64() < gracefulShare}
	}
	slices.SortFunc(fs, func(a, b fault) int { return int(a.At - b.At) })
	return fs
}

// chaosFaults is what the kill loop did, for the result.
type chaosFaults struct {
	kills, graceful int
	slowStops       int           // graceful stops that needed SIGKILL after the timeout
	badExits        int           // graceful stops that exited non-zero
	downMax         time.Duration // longest from the signal to the ready line
	downTotal       time.Duration
}

// faultNodes draws, from seed, which node of a cluster of n each of k
// faults strikes (node index 0 … n-1); nil for one node. It has a
// generator of its own so that a seed's single-node plan stays what it
// was.
func faultNodes(seed int64, k, n int) []int {
	if n <= 1 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x40de))
	out := make([]int, k)
	for i := range out {
		out[i] = rng.IntN(n)
	}
	return out
}

// killLoop carries out the fault plan against the spawned parleyd, or a
// spawned cluster's nodes, while the workers run the traffic step; it
// returns when every fault is done and the node is up again. A fault
// that falls due while a node is still restarting from the previous one
// waits for it.
func (c *coordinator) killLoop(ctx context.Context) error {
	p := c.parleyd
	plan := planFaults(c.cfg.Seed, c.cfg.Kills, c.cfg.Duration)
	var targets []int
	if c.cluster != nil {
		targets = faultNodes(c.cfg.Seed, len(plan), len(c.cluster.nodes))
	}
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i, f := range plan {
		who := "parleyd"
		if targets != nil {
			p = c.cluster.nodes[targets[i]]
			who = fmt.Sprintf("node %d", targets[i]+1)
		}
		timer.Reset(max(0, time.Until(start.Add(f.At))))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("%w (%v); its last lines:\n%s", errParleydExit, p.exit, p.tail)
		}
		sig, how := syscall.SIGKILL, "SIGKILL"
		if f.Graceful {
			sig, how = syscall.SIGTERM, "SIGTERM"
		}
		down := time.Now()
		if ok, err := p.stopWith(sig, gracefulStopTimeout); f.Graceful {
			c.faults.graceful++
			if !ok {
				c.faults.slowStops++
				c.cfg.Logger.Warn("parleyd did not stop within the timeout after SIGTERM; killed", "timeout", gracefulStopTimeout)
			} else if err != nil {
				c.faults.badExits++
				c.cfg.Logger.Warn("parleyd exited with an error after SIGTERM", "exit", err, "last_lines", p.tail.String())
			}
		} else {
			c.faults.kills++
		}
		if err := p.start(ctx); err != nil {
			return err
		}
		took := time.Since(down)
		c.faults.downTotal += took
		c.faults.downMax = max(c.faults.downMax, took)
		at := down.Sub(start)
		c.cfg.Logger.Info("fault", "n", i+1, "signal", how, "target", who, "at", at, "down", took)
		c.say("%6.1fs fault %d/%d: %s %s at %.1fs into the traffic; up again after %v",
			time.Since(c.start).Seconds(), i+1, len(plan), how, who, at.Seconds(), took.Round(time.Millisecond))
	}
	return nil
}
