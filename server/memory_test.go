package server_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
)

var memConns = flag.Int("parley.memconns", 10000, "connections for BenchmarkIdleConnMemory")

// memWorkerEnv makes the test binary a client worker for the memory
// benchmark (see runMemWorker).
const memWorkerEnv = "PARLEY_MEM_WORKER"

// credential is one account handed to a worker.
type credential struct {
	User   uint64 `json:"u"`
	Device uint32 `json:"d"`
	Cred   []byte `json:"c"`
}

// BenchmarkIdleConnMemory measures the server's memory per idle
// authenticated TLS connection: N accounts log in from client worker
// processes (so the figure is the server's alone, and no process nears
// the open-file limit), go idle, and the server's heap and RSS are
// compared with the same server before they connected. Run it once:
//
//	go test ./server -run '^$' -bench IdleConnMemory -benchtime 1x [-parley.memconns 10000]
func BenchmarkIdleConnMemory(b *testing.B) {
	n := *memConns
	nd := nodetest.Start(b, func(c *node.Config) {
		c.Shards = 4
		c.Server = server.Config{IdleTrim: time.Second, Heartbeat: time.Hour, LoginTimeout: time.Hour}
	})
	creds := createAccounts(b, nd, n)
	credFile := b.TempDir() + "/creds.json"
	data, _ := json.Marshal(creds)
	if err := os.WriteFile(credFile, data, 0o600); err != nil {
		b.Fatal(err)
	}

	for b.Loop() {
		heap0, rss0 := settledMemory()
		const perWorker = 5000
		var workers []*exec.Cmd
		var wg sync.WaitGroup
		for w := 0; w*perWorker < n; w++ {
			lo, hi := w*perWorker, min(n, (w+1)*perWorker)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), memWorkerEnv+"="+strings.Join([]string{
				nd.Addr().String(), nd.Fingerprint(), credFile, strconv.Itoa(lo), strconv.Itoa(hi), fmt.Sprintf("127.0.0.%d", w+2),
			}, ","))
			stdin, _ := cmd.StdinPipe()
			defer stdin.Close()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			workers = append(workers, cmd)
			wg.Add(1)
			go func() {
				defer wg.Done()
				line, _ := bufio.NewReader(stdout).ReadString('\n')
				if !strings.HasPrefix(line, "ready") {
					b.Errorf("worker %d: %q", w, line)
				}
			}()
		}
		wg.Wait()
		if got := nd.Server().Stats().Authenticated.Load(); got != int64(n) {
			b.Fatalf("%d connections authenticated, want %d", got, n)
		}
		time.Sleep(3 * time.Second) // past IdleTrim: TLS state trimmed
		heap1, rss1 := settledMemory()
		b.ReportMetric(float64(heap1-heap0)/float64(n), "heap-B/conn")
		b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-B/conn")
		b.Logf("%d idle authenticated TLS connections: heap %+d B, RSS %+d B", n, heap1-heap0, rss1-rss0)
		for _, w := range workers {
			_ = w.Process.Kill()
			_ = w.Wait()
		}
	}
}

// createAccounts registers n accounts over pipelined connections.
func createAccounts(b *testing.B, nd *nodetest.Node, n int) []credential {
	out := make([]credential, 0, n)
	for _, u := range nd.RegisterMany(b, n) {
		out = append(out, credential{User: u.ID, Device: u.Device, Cred: u.Cred})
	}
	return out
}

func must(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// settledMemory returns the heap in use and the resident set size after
// collecting garbage and returning free memory to the OS.
func settledMemory() (heap, rss int64) {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse), readRSS()
}

// readRSS reads VmRSS from /proc/self/status, in bytes.
func readRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// runMemWorker logs in the accounts [lo, hi) of the credentials file from
// a given source address, prints "ready", and holds the connections until
// stdin closes.
func runMemWorker(spec string) {
	parts := strings.Split(spec, ",")
	addr, fp, file, src := parts[0], parts[1], parts[2], parts[5]
	lo, _ := strconv.Atoi(parts[3])
	hi, _ := strconv.Atoi(parts[4])
	data, err := os.ReadFile(file)
	if err != nil {
		fail(err)
	}
	var creds []credential
	if err := json.Unmarshal(data, &creds); err != nil {
		fail(err)
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 30 * time.Second}
	conf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if hex.EncodeToString(sum[:]) != fp {
				return fmt.Errorf("wrong server certificate")
			}
			return nil
		}}
	conns := make([]net.Conn, hi-lo)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := lo; i < hi; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := tls.DialWithDialer(dialer, "tcp", addr, conf)
			if err != nil {
				fail(err)
			}
			login, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: creds[i].User, Device: creds[i].Device, Credential: creds[i].Cred})
			if _, err := c.Write(login); err != nil {
				fail(err)
			}
			r := codec.NewReader(c, protocol.MaxFrameBody, nil)
			for {
				f, err := r.ReadFrame()
				if err != nil {
					fail(err)
				}
				if f.Kind == protocol.KindSynced {
					break
				}
			}
			conns[i-lo] = c
		}()
	}
	wg.Wait()
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "memory worker:", err)
	os.Exit(1)
}
