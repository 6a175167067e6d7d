package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

// nodeSpec is what the coordinator tells a spawned node, on its standard
// input.
type nodeSpec struct {
	DataDir string `json:"data_dir"`
	Shards  int    `json:"shards"`
	Loops   int    `json:"loops"`
	NoSync  bool   `json:"nosync"`
	// SyncWait is storage.Config.SyncWait: 0 the default, negative never.
	SyncWait    time.Duration `json:"sync_wait"`
	PhonePrefix string        `json:"phone_prefix"`
	TestCode    string        `json:"test_code"`
	// Abuse makes the node treat its clients as a production node does
	// for the abuse scenario: the log sender's codes count against the
	// code limits and the per-address limits apply to loopback, with
	// the connection and handshake caps per address out of the way of
	// the workers.
	Abuse bool `json:"abuse"`
}

// nodeInfo is what a spawned node answers once it listens.
type nodeInfo struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	Admin       string `json:"admin"`
	PID         int    `json:"pid"`
}

// runNode is a spawned node: it reads its spec from in, starts a node on
// loopback with an admin endpoint, answers with a nodeInfo line on out,
// and runs until in closes.
func runNode(in io.Reader, out io.Writer, logw io.Writer) error {
	node.ApplyGCDefault(os.Getenv) // as parleyd runs: the node's memory is what the idle scenario measures
	r := bufio.NewReader(in)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("loadtest node: read spec: %w", err)
	}
	var spec nodeSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("loadtest node: spec: %w", err)
	}
	sc := server.Config{Loops: spec.Loops}
	if spec.Abuse {
		sc.LimitLoopback, sc.MaxConnsPerIP, sc.MaxHandshakesPerIP = true, abuseConnsPerIP, abuseConnsPerIP
	}
	n, err := node.Start(node.Config{
		DataDir:       spec.DataDir,
		Listen:        "127.0.0.1:0",
		AdminAddr:     "127.0.0.1:0",
		Shards:        spec.Shards,
		Logger:        slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Server:        sc,
		CountLogCodes: spec.Abuse,
		Storage:       storage.Config{TestPrefix: spec.PhonePrefix, TestCode: spec.TestCode, NoSync: spec.NoSync, SyncWait: spec.SyncWait},
	})
	if err != nil {
		return err
	}
	info := nodeInfo{Addr: n.Addr().String(), Fingerprint: n.Fingerprint(), Admin: n.AdminAddr().String(), PID: os.Getpid()}
	if err := json.NewEncoder(out).Encode(info); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, r) // until the coordinator closes our stdin
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return n.Shutdown(ctx)
}

// spawnedNode is a node child process.
type spawnedNode struct {
	info  nodeInfo
	cmd   *exec.Cmd
	stdin io.WriteCloser
	dir   string
}

// spawnNode starts a node child process with a fresh data directory.
func spawnNode(ctx context.Context, cfg *Config) (*spawnedNode, error) {
	dir, err := os.MkdirTemp("", "parley-load-node-")
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	cmd, err := childCommand(cfg, childNode)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("loadtest: start node: %w", err)
	}
	go forwardLog(stderr, cfg.Logger, "node")
	sn := &spawnedNode{cmd: cmd, stdin: stdin, dir: dir}
	spec, _ := json.Marshal(nodeSpec{
		DataDir: dir, Shards: cfg.SpawnShards, Loops: cfg.SpawnLoops, NoSync: cfg.SpawnNoSync,
		SyncWait:    cfg.SpawnSyncWait,
		PhonePrefix: cfg.PhonePrefix, TestCode: cfg.TestCode, Abuse: cfg.Scenario == abuseScenario.Name,
	})
	_, _ = stdin.Write(append(spec, '\n'))
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &sn.info)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(60 * time.Second):
		err = fmt.Errorf("no answer in 60 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		sn.stop()
		return nil, fmt.Errorf("loadtest: spawned node did not start: %w", err)
	}
	return sn, nil
}

// stop shuts the node down (it sees its stdin close) and removes its data.
func (sn *spawnedNode) stop() {
	_ = sn.stdin.Close()
	done := make(chan struct{})
	go func() { _ = sn.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = sn.cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(sn.dir)
}

// childCommand returns the command that runs this program as a child of
// the given role.
func childCommand(cfg *Config, role string) (*exec.Cmd, error) {
	argv := cfg.WorkerCommand
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("loadtest: find own executable: %w", err)
		}
		argv = []string{exe}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	return cmd, nil
}

// forwardLog sends a child's stderr lines to the logger.
func forwardLog(r io.Reader, log *slog.Logger, who string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		log.Warn(sc.Text(), "from", who)
	}
}
