package tls13

// The idle-memory measurement. Off by default (it opens thousands of
// sockets and takes a minute); run it with
//
//	go test -run 'IdleMemory|StdTLSMemory' -tls13.mem -tls13.mem.n=5000 -v ./internal/tls13
//
// Clients run in a child process, so the heap and CPU figures are the
// server's alone.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

var (
	memTest  = flag.Bool("tls13.mem", false, "run the idle-memory measurements (slow; opens 2×N sockets)")
	memConns = flag.Int("tls13.mem.n", 5000, "connections per idle-memory run (both ends in separate processes; keep N below 19000)")
)

const (
	envConns  = "TLS13_TEST_N"
	envPlain  = "TLS13_TEST_PLAIN"
	envSource = "TLS13_TEST_SOURCE" // source IP for the clients' sockets
)

func init() {
	children["mem-clients"] = memClients
}

// memClients runs in a child process: it opens N connections (64 dials in
// flight), sends 64 bytes on each and waits for the echo, prints "ready",
// and holds them until its stdin closes.
func memClients() error {
	n, err := strconv.Atoi(os.Getenv(envConns))
	if err != nil {
		return err
	}
	cfg, err := childConfig()
	if err != nil {
		return err
	}
	plain := os.Getenv(envPlain) == "1"
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(os.Getenv(envSource))}}
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 64)
	msg := randomBytes(64)
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := dialer.Dial("tcp", os.Getenv(envAddr))
			if err == nil && !plain {
				c = tls.Client(c, cfg)
			}
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				err = echo(c, msg)
				_ = c.SetDeadline(time.Time{})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("connection %d: %w", i, err)
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.Close()
	}
	return nil
}

// memSample is the process's memory after two GCs and returning freed
// memory to the OS.
type memSample struct {
	heap, objects, rss uint64
}

func sampleMem(t *testing.T) memSample {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, objects: ms.HeapObjects, rss: readRSS(t)}
}

func readRSS(t *testing.T) uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func perConn(after, before uint64, n int) float64 {
	return (float64(after) - float64(before)) / float64(n)
}

// TestIdleMemory measures heap, heap objects and RSS per idle connection
// of the gnet echo server, and server CPU per connection (accept,
// handshake, one 64-byte echo), for plain TCP and for Conn.
func TestIdleMemory(t *testing.T) {
	if !*memTest {
		t.Skip("run with -tls13.mem")
	}
	n := *memConns
	t.Logf("Conn is %d bytes (unsafe.Sizeof), %d connections per run, GOMAXPROCS %d, %s",
		unsafe.Sizeof(Conn{}), n, runtime.GOMAXPROCS(0), runtime.Version())
	modes := []struct {
		name  string
		plain bool
		idle  bool
		env   []string
	}{
		{"gnet, plain TCP", true, false, nil},
		{"gnet + tls13.Conn, Idle (AES-128-GCM)", false, true, nil},
		{"gnet + tls13.Conn, AEADs kept (AES-128-GCM)", false, false, nil},
		{"gnet + tls13.Conn, Idle (ChaCha20-Poly1305)", false, true, []string{"GODEBUG=cpu.aes=off"}},
		{"gnet + tls13.Conn, AEADs kept (ChaCha20-Poly1305)", false, false, []string{"GODEBUG=cpu.aes=off"}},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-52s %10s %8s %10s %12s\n", "server", "heap B/conn", "objs", "RSS B/conn", "CPU µs/conn")
	for i, m := range modes {
		e := startEcho(t, Config{}, func(e *echoServer) { e.plain, e.idle = m.plain, m.idle })
		before := sampleMem(t)
		cpu0 := cpuTime()

		env := append([]string{envConns + "=" + strconv.Itoa(n), fmt.Sprintf("%s=127.0.0.%d", envSource, 10+i)}, m.env...)
		if m.plain {
			env = append(env, envPlain+"=1")
		}
		cmd := childCommand(t, e, "mem-clients", env...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "ready\n" {
			_ = cmd.Process.Kill()
			t.Fatalf("%s: child said %q, %v", m.name, line, errors.Join(err, cmd.Wait()))
		}
		waitFor(t, "all connections open", func() bool { return e.open.Load() == int64(n) })
		cpu := cpuTime() - cpu0
		after := sampleMem(t)
		if !m.plain && e.ready.Load() != int64(n) {
			t.Fatalf("%s: %d handshakes completed, want %d", m.name, e.ready.Load(), n)
		}
		fmt.Fprintf(&report, "%-52s %10.0f %8.1f %10.0f %12.0f\n", m.name,
			perConn(after.heap, before.heap, n), perConn(after.objects, before.objects, n),
			perConn(after.rss, before.rss, n), float64(cpu.Microseconds())/float64(n))

		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: child: %v", m.name, err)
		}
		waitFor(t, "all connections closed", func() bool { return e.open.Load() == 0 })
		e.shutdown(t)
	}
	t.Log(report.String())
}

// TestStdTLSMemory measures, for comparison, what the study's hybrid keeps
// per idle connection: a server-side crypto/tls.Conn after its handshake
// and one 64-byte echo, over net.Pipe (the pipe's own cost is measured
// first and subtracted).
func TestStdTLSMemory(t *testing.T) {
	if !*memTest {
		t.Skip("run with -tls13.mem")
	}
	n := min(*memConns, 5000)
	held := make([]net.Conn, 0, n)

	base := sampleMem(t)
	for range n {
		s, c := net.Pipe()
		_ = c
		held = append(held, s)
	}
	pipes := sampleMem(t)
	for _, s := range held {
		s.Close()
	}
	held = held[:0]
	runtime.KeepAlive(held)
	base2 := sampleMem(t)

	scfg := forceSettings(serverTLSConfig().Clone())
	msg := randomBytes(64)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	servers := make([]*tls.Conn, 0, n)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cs, ss := net.Pipe()
			server := tls.Server(ss, scfg)
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(server, buf); err != nil {
					done <- err
					return
				}
				_, err := server.Write(buf)
				done <- err
			}()
			client := tls.Client(cs, clientTLSConfig())
			if err := echo(client, msg); err != nil {
				t.Error(err)
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
			mu.Lock()
			servers = append(servers, server)
			mu.Unlock()
		})
	}
	wg.Wait()
	after := sampleMem(t)
	pipe := perConn(pipes.heap, base.heap, n)
	t.Logf("\nnet.Pipe end alone: %.0f B/conn\ncrypto/tls server Conn after handshake + 64 B echo (%s), pipe subtracted: %.0f heap B/conn, %.1f objects/conn",
		pipe, tls.CipherSuiteName(servers[0].ConnectionState().CipherSuite),
		perConn(after.heap, base2.heap, n)-pipe, perConn(after.objects, base2.objects, n))
	runtime.KeepAlive(servers)
}
