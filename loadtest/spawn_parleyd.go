package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// parleydProc is a real parleyd child process (Config.Parleyd) on a data
// directory and addresses of its own, which a chaos run kills and starts
// again: the same data directory, client port and admin port every time,
// so clients reconnect to where they were and resume from their cursors.
//
// Threading: a parleydProc belongs to one goroutine at a time (the
// coordinator's, or the kill loop's while a step's During runs).
type parleydProc struct {
	bin  string
	dir  string
	args []string // after the first start: the addresses it got
	log  *slog.Logger
	info nodeInfo

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	exit   error         // cmd.Wait's result, set before exited closes
	tail   *lineTail     // the last lines of its log, for errors
}

// parleydStartTimeout bounds one start of parleyd, until its ready line.
const parleydStartTimeout = 60 * time.Second

// spawnParleyd starts cfg.Parleyd with a fresh data directory, its test
// phone numbers, media off, and the client and admin endpoints on free
// loopback ports, which later starts reuse.
func spawnParleyd(ctx context.Context, cfg *Config) (*parleydProc, error) {
	dir, err := os.MkdirTemp("", "parley-load-parleyd-")
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	p, err := startParleyd(ctx, cfg, dir, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// startParleyd starts cfg.Parleyd on data directory dir (which stop
// removes) with extra flags after the common ones, as spawnParleyd says.
func startParleyd(ctx context.Context, cfg *Config, dir string, extra []string) (*parleydProc, error) {
	p := &parleydProc{bin: cfg.Parleyd, dir: dir, log: cfg.Logger}
	p.args = []string{
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--media-listen", "",
		"--data", dir, "--shards", strconv.Itoa(cfg.SpawnShards),
		"--test-phone-prefix", cfg.PhonePrefix, "--test-code", cfg.TestCode,
		"--log-level", "info", // the ready line is logged at info
	}
	p.args = append(p.args, syncWaitArgs(cfg.SpawnSyncWait)...)
	if cfg.Scenario == abuseScenario.Name { // as spawnNode's nodeSpec.Abuse
		n := strconv.Itoa(abuseConnsPerIP)
		p.args = append(p.args, "--count-log-codes", "--limit-loopback", "--max-conns-per-ip", n, "--max-handshakes-per-ip", n)
	}
	p.args = append(p.args, extra...)
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	p.args[1], p.args[3] = p.info.Addr, p.info.Admin
	return p, nil
}

// syncWaitArgs returns parleyd's flag for Config.SpawnSyncWait w: none
// for the default (0), "--sync-wait 0s" (never wait) for a negative w.
func syncWaitArgs(w time.Duration) []string {
	if w == 0 {
		return nil
	}
	return []string{"--sync-wait", max(w, 0).String()}
}

// start starts the process and waits for its ready line, which gives its
// addresses and certificate fingerprint.
func (p *parleydProc) start(ctx context.Context) error {
	cmd := exec.Command(p.bin, p.args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("loadtest: parleyd: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("loadtest: start parleyd %s: %w", p.bin, err)
	}
	p.cmd, p.exited, p.exit, p.tail = cmd, make(chan struct{}), nil, &lineTail{}
	ready := make(chan nodeInfo, 1)
	go p.readLog(stderr, ready)
	timer := time.NewTimer(parleydStartTimeout)
	defer timer.Stop()
	select {
	case info := <-ready:
		info.PID = cmd.Process.Pid
		p.info = info
		return nil
	case <-p.exited:
		err = fmt.Errorf("exited before it was ready (%v)", p.exit)
	case <-timer.C:
		err = fmt.Errorf("not ready after %v", parleydStartTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.signal(syscall.SIGKILL)
	<-p.exited
	return fmt.Errorf("loadtest: parleyd: %w; its last lines:\n%s", err, p.tail)
}

// readLog reads parleyd's log: it sends the ready line's figures on
// ready, passes warnings and errors to the run's logger, keeps the last
// lines, and records the exit once the log ends.
func (p *parleydProc) readLog(r io.Reader, ready chan<- nodeInfo) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	tail, cmd, exited := p.tail, p.cmd, p.exited
	for sc.Scan() {
		line := sc.Text()
		tail.add(line)
		f := logFields(line)
		switch {
		case f["msg"] == "parleyd ready":
			ready <- nodeInfo{Addr: f["addr"], Fingerprint: f["fingerprint"], Admin: f["admin"]}
		case f["level"] == "WARN" || f["level"] == "ERROR" || f["level"] == "":
			p.log.Warn(line, "from", "parleyd")
		}
	}
	_, _ = io.Copy(io.Discard, r)
	err := cmd.Wait()
	p.exit = err
	close(exited)
}

// signal sends sig to the process, if it still runs.
func (p *parleydProc) signal(sig syscall.Signal) {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stopWith sends sig and waits up to grace for the process to exit, then
// kills it. It reports whether the process exited within grace and its
// exit status.
func (p *parleydProc) stopWith(sig syscall.Signal, grace time.Duration) (inTime bool, exit error) {
	p.signal(sig)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.exited:
		return true, p.exit
	case <-timer.C:
		p.signal(syscall.SIGKILL)
		<-p.exited
		return false, p.exit
	}
}

// stop ends the process gracefully (SIGTERM, then SIGKILL after 30 s) and
// removes its data directory.
func (p *parleydProc) stop() {
	if p.cmd != nil {
		if ok, err := p.stopWith(syscall.SIGTERM, 30*time.Second); !ok || err != nil {
			p.log.Warn("parleyd did not stop cleanly", "in_time", ok, "exit", err)
		}
	}
	_ = os.RemoveAll(p.dir)
}

// logFields parses a log/slog text line (key=value, values quoted when
// they need it) into its fields. A line that is not one yields what it
// could parse.
func logFields(line string) map[string]string {
	f := map[string]string{}
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			return f
		}
		key, rest := s[:eq], s[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return f
			}
			val, _ = strconv.Unquote(q)
			s = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, s = rest[:end], rest[end:]
		}
		f[key] = val
	}
	return f
}

// lineTail keeps the last lines of a log. It is safe for concurrent use.
type lineTail struct {
	mu    sync.Mutex
	lines []string // guarded by mu
}

// tailLines is how many lines a lineTail keeps.
const tailLines = 20

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		t.lines = append(t.lines[:0], t.lines[1:]...)
	}
	t.lines = append(t.lines, line)
}

// String returns the lines kept, one per line.
func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
