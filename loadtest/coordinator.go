package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// ErrVerification is returned (wrapped) by Run when messages were lost,
// duplicated, reordered or skipped. The Result is returned with it.
var ErrVerification = errors.New("loadtest: verification failed")

// workerProc is a worker child process, seen from the coordinator.
type workerProc struct {
	index int
	cmd   *exec.Cmd
	stdin io.WriteCloser
	spec  workerSpec

	last     Counters   // from the latest event
	steps    []Counters // counters at the end of each step
	interval []*hdr.Histogram
	result   *event
	share    []uint64 // the latest step's shared values
	exited   bool
	fresh    bool // a stats event arrived since the last progress line
}

// workerEvent is an event from worker index, or its exit.
type workerEvent struct {
	index  int
	ev     event
	exit   error // set with exited
	exited bool
}

// coordinator runs one load test.
type coordinator struct {
	cfg     *Config
	steps   []Step
	workers []*workerProc
	events  chan workerEvent
	admin   *adminClient    // nil without an admin endpoint
	node    *spawnedNode    // nil unless spawned as a child node
	parleyd *parleydProc    // nil unless spawned from Config.Parleyd
	cluster *parleydCluster // nil unless Config.SpawnCluster
	res     *Result
	start   time.Time

	// during is the result of the current step's During, once it has
	// returned; nil while it runs or when the step has none.
	during     chan error
	duringDone bool
	faults     chaosFaults // what a chaos run's kill loop did

	progressMu sync.Mutex // serialises lines to Config.Progress: walk and During both write

	baseline  serverMemory
	haveBase  bool
	fromCount Counters
	toCount   Counters
	fromAt    time.Time
	toAt      time.Time
	fromSrv   map[string]float64
	toSrv     map[string]float64

	fanout fanoutMerger // a groups run's fan-outs across workers
}

// Run runs the load test cfg describes. It returns the result, and an
// error wrapping ErrVerification when any message was lost, duplicated,
// reordered or skipped (the result is returned then too).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Scenario == chaosScenario.Name && cfg.Seed == 0 {
		cfg.Seed = rand.Int64N(1<<53) + 1
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := makeProfileDir(cfg.ProfileDir); err != nil {
		return nil, err
	}
	sc, _ := scenarioByName(cfg.Scenario)
	c := &coordinator{cfg: &cfg, steps: sc.Steps(&cfg), events: make(chan workerEvent, 1024)}
	c.res = &Result{Scenario: cfg.Scenario, TargetRate: cfg.Rate, MessageSize: cfg.MessageSize}
	if cfg.Scenario == chaosScenario.Name {
		c.say("chaos: seed %d, %d kills, %d partitions, %d etcd restarts over %v of traffic", cfg.Seed, cfg.Kills, cfg.Partitions, cfg.EtcdRestarts, cfg.Duration)
	}
	var nodes []Endpoint
	var admins []string
	switch {
	case cfg.SpawnCluster > 0:
		pc, err := spawnCluster(ctx, &cfg)
		if err != nil {
			return nil, err
		}
		defer pc.stop()
		c.cluster = pc
		nodes, admins = pc.endpoints(), pc.admins()
		cfg.Addr, cfg.Fingerprint, cfg.Admin = nodes[0].Addr, nodes[0].Fingerprint, ""
		for i, p := range pc.nodes {
			c.say("cluster node %d: addr %s fingerprint %s admin %s data %s", i+1, p.info.Addr, p.info.Fingerprint, p.info.Admin, p.dir)
		}
		c.say("cluster etcd: %s", pc.etcd.Endpoints()[0])
	case cfg.Spawn && cfg.Parleyd != "":
		p, err := spawnParleyd(ctx, &cfg)
		if err != nil {
			return nil, err
		}
		defer p.stop()
		c.parleyd = p
		cfg.Addr, cfg.Fingerprint, cfg.Admin = p.info.Addr, p.info.Fingerprint, p.info.Admin
		cfg.Logger.Info("spawned parleyd", "addr", cfg.Addr, "admin", cfg.Admin, "fingerprint", cfg.Fingerprint, "data", p.dir)
	case cfg.Spawn:
		n, err := spawnNode(ctx, &cfg)
		if err != nil {
			return nil, err
		}
		defer n.stop()
		c.node = n
		cfg.Addr, cfg.Fingerprint, cfg.Admin = n.info.Addr, n.info.Fingerprint, n.info.Admin
		cfg.Logger.Info("spawned a node", "addr", cfg.Addr, "admin", cfg.Admin, "fingerprint", cfg.Fingerprint)
	}
	if cfg.Admin != "" {
		admins = []string{cfg.Admin}
	}
	if len(admins) > 0 {
		c.admin = newAdminClient(admins...)
	}
	if err := c.startWorkers(nodes); err != nil {
		c.kill()
		return nil, err
	}
	defer c.kill()
	if err := c.walk(ctx); err != nil {
		return nil, err
	}
	c.record() // the series ends where the run does: a short run still has a line
	c.assemble()
	if c.cluster != nil {
		c.res.ClusterAccepted = c.cluster.accepted(ctx, c.admin)
	}
	if r := c.res; !r.Passed {
		err := fmt.Errorf("%w: %d lost, %d duplicated, %d reordered, %d skipped, %d group order mismatches, %d corrupt media",
			ErrVerification, r.Lost, r.Duplicated, r.Reordered, r.Gaps, r.OrderMismatch, r.MediaCorrupt)
		if ch := r.Chaos; ch != nil {
			err = fmt.Errorf("%w; chaos: %d violations (seed %d)", err, ch.Violations, ch.Seed)
		}
		return c.res, err
	}
	return c.res, nil
}

// startWorkers splits the accounts over the workers (pairs never split)
// and starts them; nodes are a cluster's, over which they spread their
// devices (none: every device connects to Config.Addr).
func (c *coordinator) startWorkers(nodes []Endpoint) error {
	cfg := c.cfg
	n := cfg.Connections + cfg.Connections%2
	nw := min(cfg.workers(), n/2)
	c.res.Connections, c.res.Workers = n, nw
	digits := maxPhoneDigits - len(cfg.PhonePrefix) + 1 - indexDigits
	runID := fmt.Sprintf("%0*d", digits, rand.N(pow10(digits)))
	pairsPer := n / 2 / nw
	lo := 0
	for i := range nw {
		hi := lo + 2*pairsPer
		if i == nw-1 {
			hi = n
		}
		spec := workerSpec{Config: *cfg, Index: i, Source: fmt.Sprintf("127.0.0.%d", cfg.SourceBase+i),
			Lo: lo, Hi: hi, Addr: cfg.Addr, Fingerprint: cfg.Fingerprint, Nodes: nodes, RunID: runID}
		spec.Config.Connections = n
		lo = hi
		cmd, err := childCommand(cfg, childWorker)
		if err != nil {
			return err
		}
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("loadtest: start worker: %w", err)
		}
		wp := &workerProc{index: i, cmd: cmd, stdin: stdin, spec: spec}
		c.workers = append(c.workers, wp)
		go forwardLog(stderr, cfg.Logger, fmt.Sprintf("worker %d", i))
		go c.readEvents(wp, stdout)
		line, _ := json.Marshal(spec)
		if _, err := stdin.Write(append(line, '\n')); err != nil {
			return fmt.Errorf("loadtest: worker %d: %w", i, err)
		}
	}
	return nil
}

// readEvents forwards a worker's events, then its exit.
func (c *coordinator) readEvents(wp *workerProc, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			c.cfg.Logger.Warn("worker output", "worker", wp.index, "line", sc.Text())
			continue
		}
		c.events <- workerEvent{index: wp.index, ev: ev}
	}
	c.events <- workerEvent{index: wp.index, exited: true, exit: wp.cmd.Wait()}
}

// kill stops every worker still running.
func (c *coordinator) kill() {
	for _, wp := range c.workers {
		_ = wp.stdin.Close()
		if !wp.exited && wp.cmd.Process != nil {
			_ = wp.cmd.Process.Kill()
		}
	}
}

// walk takes the workers through the steps in lock step.
func (c *coordinator) walk(ctx context.Context) error {
	// A progress line goes out when every worker has reported its second,
	// or after two seconds if one is late.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	c.start = time.Now()
	stepStart := c.start
	step := 0
	c.res.Steps = append(c.res.Steps, StepTime{Name: c.steps[0].Name})
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		if c.during != nil && !c.duringDone {
			<-c.during
		}
	}()
	c.startDuring(ctx, 0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			c.progress(step)
			tick.Reset(2 * time.Second)
		case err := <-c.during:
			c.duringDone = true
			if err != nil {
				return fmt.Errorf("loadtest: step %s: %w", c.steps[step].Name, err)
			}
			if err := c.maybeAdvance(ctx, &step, &stepStart); err != nil {
				return err
			}
		case we := <-c.events:
			wp := c.workers[we.index]
			if we.exited {
				wp.exited = true
				if wp.result == nil {
					return fmt.Errorf("loadtest: worker %d exited early: %v", we.index, we.exit)
				}
				if c.allResults() {
					return nil
				}
				continue
			}
			ev := we.ev
			switch ev.Type {
			case "error":
				return fmt.Errorf("loadtest: worker %d: %s", we.index, ev.Error)
			case "stats":
				c.fanout.add(c.cfg, ev.Fanout)
				wp.last = ev.Counters
				if h, err := decodeHist(ev.Interval); err == nil {
					wp.interval = append(wp.interval, h)
				}
				wp.fresh = true
				if c.allFresh() {
					c.progress(step)
					tick.Reset(2 * time.Second)
				}
			case "result":
				c.fanout.add(c.cfg, ev.Fanout)
				wp.last = ev.Counters
				wp.result = &ev
				if c.allResults() && c.allExited() {
					return nil
				}
			case "step":
				wp.last = ev.Counters
				wp.steps = append(wp.steps, ev.Counters)
				wp.share = ev.Share
				if err := c.maybeAdvance(ctx, &step, &stepStart); err != nil {
					return err
				}
			}
		}
	}
}

// maybeAdvance ends *step once every worker has finished it and its
// During has returned: it runs the step's After and lets the workers go
// on with the next step.
func (c *coordinator) maybeAdvance(ctx context.Context, step *int, stepStart *time.Time) error {
	if !c.allAt(*step) || (c.during != nil && !c.duringDone) {
		return nil
	}
	st := c.steps[*step]
	took := time.Since(*stepStart)
	c.res.Steps[*step].Seconds = took.Seconds()
	c.res.Steps[*step].Timed = st.Timed
	c.cfg.Logger.Info("step done", "step", st.Name, "took", took)
	if st.MeasureTo {
		c.markTo(ctx, *step)
	}
	if st.After != nil {
		if err := st.After(ctx, c); err != nil {
			return err
		}
	}
	*step++
	if *step < len(c.steps) {
		c.res.Steps = append(c.res.Steps, StepTime{Name: c.steps[*step].Name})
		if c.steps[*step].MeasureFrom {
			c.markFrom(ctx, *step)
		}
	}
	*stepStart = time.Now()
	line := []byte("go\n")
	if st.Share != nil {
		var all []uint64
		for _, w := range c.workers {
			all = append(all, w.share...)
		}
		line, _ = json.Marshal(goLine{Share: all})
		line = append(line, '\n')
	}
	for _, w := range c.workers {
		_, _ = w.stdin.Write(line)
	}
	if *step < len(c.steps) {
		c.startDuring(ctx, *step)
	}
	return nil
}

// startDuring starts step's During, if it has one.
func (c *coordinator) startDuring(ctx context.Context, step int) {
	c.during, c.duringDone = nil, false
	if d := c.steps[step].During; d != nil {
		ch := make(chan error, 1)
		c.during = ch
		go func() { ch <- d(ctx, c) }()
	}
}

func (c *coordinator) allAt(step int) bool {
	for _, w := range c.workers {
		if len(w.steps) <= step {
			return false
		}
	}
	return true
}

func (c *coordinator) allFresh() bool {
	for _, w := range c.workers {
		if !w.fresh {
			return false
		}
	}
	return true
}

func (c *coordinator) allResults() bool {
	for _, w := range c.workers {
		if w.result == nil {
			return false
		}
	}
	return true
}

func (c *coordinator) allExited() bool {
	for _, w := range c.workers {
		if !w.exited {
			return false
		}
	}
	return true
}

// sum adds the workers' counters at the end of step (or the latest, for
// step -1).
func (c *coordinator) sum(step int) Counters {
	var t Counters
	for _, w := range c.workers {
		switch {
		case step < 0:
			t.add(w.last)
		case step < len(w.steps):
			t.add(w.steps[step])
		}
	}
	return t
}

// markFrom starts the measured traffic window before step starts.
func (c *coordinator) markFrom(ctx context.Context, step int) {
	c.fromCount, c.fromAt = c.sum(step-1), time.Now()
	if c.admin != nil {
		c.fromSrv, _ = c.admin.metrics(ctx)
	}
}

// markTo ends the measured traffic window after step.
func (c *coordinator) markTo(ctx context.Context, step int) {
	c.toCount, c.toAt = c.sum(step), time.Now()
	if c.admin != nil {
		c.toSrv, _ = c.admin.metrics(ctx)
	}
}

// readBaseline reads the server's settled memory before the connections.
func (c *coordinator) readBaseline(ctx context.Context) error {
	if c.admin == nil {
		return nil
	}
	m, err := c.admin.memory(ctx, true)
	if err != nil {
		c.cfg.Logger.Warn("no server memory figures", "err", err)
		c.admin = nil
		return nil
	}
	c.baseline, c.haveBase = m, true
	return nil
}

// readConnected waits settle, then reads the server's memory with every
// connection up, as it is and then settled, and figures the memory per
// connection over the settled baseline.
func (c *coordinator) readConnected(ctx context.Context, settle time.Duration) error {
	if c.admin == nil || !c.haveBase {
		return nil
	}
	if settle > 0 {
		c.cfg.Logger.Info("waiting for the server to trim idle connections", "for", settle)
		if err := sleepCtx(ctx, settle); err != nil {
			return err
		}
	}
	// The peers' way first (as cmd/parley-peers reads them): as it is, no GC forced.
	raw, err := c.admin.memory(ctx, false)
	if err != nil {
		return err
	}
	m, err := c.admin.memory(ctx, true)
	if err != nil {
		return err
	}
	conns := c.sum(-1).Connected
	c.res.ServerRSSUnforced = raw.RSS
	if conns > 0 {
		c.res.ServerRSSUnforcedPerConn = float64(raw.RSS-c.baseline.RSS) / float64(conns)
	}
	c.res.ServerRSS = m.RSS
	c.res.ServerHeap = m.HeapInuse
	if conns > 0 {
		c.res.ServerRSSPerConn = float64(m.RSS-c.baseline.RSS) / float64(conns)
		c.res.ServerHeapPerConn = float64(m.HeapInuse-c.baseline.HeapInuse) / float64(conns)
	}
	c.res.MemoryConnections = conns
	return nil
}

// progress prints the live line and records a point of the series.
func (c *coordinator) progress(step int) {
	p, iv, t := c.record()
	if c.cfg.Progress == nil {
		return
	}
	name := ""
	if step < len(c.steps) {
		name = c.steps[step].Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs %-18s conns %6d  sent %9d  delivered %9d  %8.0f msg/s", p.T, name, t.Connected, t.Sent, t.Delivered, p.Rate)
	if iv.TotalCount() > 0 {
		fmt.Fprintf(&b, "  p50 %s p99 %s", us(p.LatencyP50), us(p.LatencyP99))
	}
	if e := t.ErrorFrames + t.DialErrors + t.Drops; e > 0 {
		fmt.Fprintf(&b, "  errors %d", e)
	}
	if bad := t.Duplicated + t.Reordered + t.Gaps; bad > 0 {
		fmt.Fprintf(&b, "  ANOMALIES %d", bad)
	}
	c.say("%s", b.String())
}

// record appends a point to the series: the counters now, the delivery
// rate since the previous point (since the start, for the first), and
// the latencies reported since the previous point.
func (c *coordinator) record() (Point, *hdr.Histogram, Counters) {
	t := c.sum(-1)
	iv := newHist()
	for _, w := range c.workers {
		for _, h := range w.interval {
			iv.Merge(h)
		}
		w.interval = w.interval[:0]
		w.fresh = false
	}
	p := Point{
		T:          time.Since(c.start).Seconds(),
		Connected:  t.Connected,
		Sent:       t.Sent,
		Delivered:  t.Delivered,
		Acked:      t.Acked,
		LatencyP50: iv.ValueAtQuantile(50),
		LatencyP99: iv.ValueAtQuantile(99),
		LatencyMax: iv.Max(),
	}
	prev := Point{} // the start of the run
	if n := len(c.res.Series); n > 0 {
		prev = c.res.Series[n-1]
	}
	if p.T > prev.T {
		p.Rate = float64(p.Delivered-prev.Delivered) / (p.T - prev.T)
	}
	c.res.Series = append(c.res.Series, p)
	return p, iv, t
}

// say writes one progress line, if the run has a progress writer.
func (c *coordinator) say(format string, args ...any) {
	if c.cfg.Progress == nil {
		return
	}
	c.progressMu.Lock()
	defer c.progressMu.Unlock()
	fmt.Fprintf(c.cfg.Progress, format+"\n", args...)
}

// assemble merges the workers' results into c.res.
func (c *coordinator) assemble() {
	r, cfg := c.res, c.cfg
	lat, raw, late, conn := newHist(), newHist(), newHist(), newHist()
	var t Counters
	var inRate int64
	for _, w := range c.workers {
		t.add(w.result.Counters)
		inRate += w.result.InRate
		for _, m := range []struct {
			dst *hdr.Histogram
			b   []byte
		}{{lat, w.result.Latency}, {raw, w.result.Uncorrected}, {late, w.result.SendLate}, {conn, w.result.Connect}} {
			if h, err := decodeHist(m.b); err == nil {
				m.dst.Merge(h)
			}
		}
	}
	r.Counters = t
	r.MessagesSent, r.MessagesDelivered, r.ReceiptsDelivered = t.Sent, t.Delivered, t.Receipts
	r.Lost, r.Duplicated, r.Reordered, r.Gaps = t.Lost, t.Duplicated, t.Reordered, t.Gaps
	r.Latency, r.LatencyUncorrected, r.SendLate, r.Connect = percentiles(lat), percentiles(raw), percentiles(late), percentiles(conn)
	r.DurationSeconds = time.Since(c.start).Seconds()
	if window := (cfg.Duration - cfg.Warmup).Seconds(); inRate > 0 && window > 0 {
		r.MsgsPerSec = float64(inRate) / window
	}
	if !c.toAt.IsZero() && !c.fromAt.IsZero() {
		up, down := c.toCount.Sent-c.fromCount.Sent, c.toCount.Delivered-c.fromCount.Delivered
		if r.MsgsPerSec == 0 && down > 0 {
			r.MsgsPerSec = float64(down) / c.toAt.Sub(c.fromAt).Seconds()
		}
		if up > 0 && down > 0 {
			r.BytesPerMsgUp = float64(c.toCount.BytesUp-c.fromCount.BytesUp) / float64(up)
			r.BytesPerMsgDown = float64(c.toCount.BytesDown-c.fromCount.BytesDown) / float64(down)
			r.FrameBytesPerMsgUp = float64(c.toCount.FrameBytesUp-c.fromCount.FrameBytesUp) / float64(up)
			r.FrameBytesPerMsgDown = float64(c.toCount.FrameBytesDown-c.fromCount.FrameBytesDown) / float64(down)
			r.LoadCPUSeconds = float64(c.toCount.CPUMicros-c.fromCount.CPUMicros) / 1e6
			r.LoadCPUPerMsgUS = r.LoadCPUSeconds / float64(down) * 1e6
			if c.fromSrv != nil && c.toSrv != nil {
				d := func(name string) float64 { return c.toSrv[name] - c.fromSrv[name] }
				r.ServerCPUPerMsgUS = d("process_cpu_seconds_total") / float64(down) * 1e6
				r.ServerCommits = int64(d("parley_shard_commits_total"))
				if r.ServerCommits > 0 {
					r.ServerOpsPerCommit = d("parley_shard_ops_total") / float64(r.ServerCommits)
					r.ServerCommitMeanUS = d("parley_shard_commit_duration_seconds_sum") / float64(r.ServerCommits) * 1e6
				}
				r.ServerCPUSeconds = d("process_cpu_seconds_total")
				r.ServerRecordsPerMsg = d("parley_shard_records_total") / float64(down)
				if syncs := d("parley_shard_syncs_total"); syncs > 0 {
					r.ServerSyncs = int64(syncs)
					r.ServerSyncsPerMsg = syncs / float64(down)
					r.ServerSyncMeanUS = d("parley_shard_sync_seconds_total") / syncs * 1e6
				}
			}
		}
	}
	c.assembleGroups()
	c.assembleMedia()
	c.assembleChaos()
	c.assembleAbuse()
	r.Passed = r.Lost+r.Duplicated+r.Reordered+r.Gaps+r.OrderMismatch+r.MediaCorrupt == 0 && (r.Chaos == nil || r.Chaos.Violations == 0)
}

func pow10(n int) int {
	p := 1
	for range n {
		p *= 10
	}
	return p
}

// us formats microseconds for people.
func us(v int64) string {
	switch {
	case v >= 10_000:
		return fmt.Sprintf("%.0fms", float64(v)/1e3)
	case v >= 1000:
		return fmt.Sprintf("%.2fms", float64(v)/1e3)
	default:
		return fmt.Sprintf("%dµs", v)
	}
}

// makeProfileDir creates dir, the workers' profile directory
// (Config.ProfileDir), with its parents; "" is none.
func makeProfileDir(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("loadtest: profile directory %s: %w", dir, err)
	}
	return nil
}
