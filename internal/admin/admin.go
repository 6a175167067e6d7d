package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/reports"
	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/sms"
	"github.com/parley-im/parley/storage"
)

// Config configures an Admin endpoint.
type Config struct {
	// Addr is the address to listen on, host:port; port 0 picks a free
	// port (see Admin.Addr). Required.
	Addr string
	// Server is the node's client server; nil leaves its metrics out.
	Server *server.Server
	// Shards are the node's shards; their metrics are labelled by ID.
	Shards []*storage.Shard
	// Commits is the commit histogram the shards feed; nil leaves it out.
	Commits *Commits
	// Media is the node's media service; nil leaves its metrics out.
	Media *media.Service
	// SMS is the node's SMS sender; nil (the log sender) leaves its
	// metrics out.
	SMS *sms.Sender
	// Push is the node's push dispatcher; nil (no provider) leaves the
	// push metrics out.
	Push *push.Dispatcher
	// Reports is the node's queue of user reports, served at /reports
	// (the latest, as JSON); nil leaves it and its metrics out.
	Reports *reports.Queue
	// Analytics is the node's analytics pipeline; nil (the stream is off)
	// leaves its metrics out.
	Analytics *analytics.Pipeline
	// Operator serves /healthz, /readyz, /status, /users, /drain and
	// /backup (ops.go); nil leaves them out.
	Operator Operator
	// TempDir is where POST /backup writes a backup before streaming it
	// (a directory of its own, removed afterwards); on the data
	// directory's file system, the shards' sstables are hard-linked rather
	// than copied. Required with Operator.
	TempDir string
	// Logger receives the endpoint's errors; nil discards them.
	Logger *slog.Logger
}

// Admin is a running admin endpoint.
type Admin struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// Start listens on cfg.Addr and serves the endpoint until Close.
func Start(cfg Config) (*Admin, error) {
	if cfg.Addr == "" {
		return nil, errors.New("admin: no listen address")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{srv: cfg.Server, shards: cfg.Shards},
	)
	if cfg.Commits != nil {
		reg.MustRegister(cfg.Commits.duration, cfg.Commits.ops, cfg.Commits.syncs)
	}
	if cfg.Media != nil {
		reg.MustRegister(mediaCollector{svc: cfg.Media})
	}
	if cfg.SMS != nil {
		reg.MustRegister(smsCollector{sender: cfg.SMS})
	}
	if cfg.Reports != nil {
		reg.MustRegister(reportsCollector{q: cfg.Reports})
	}
	if cfg.Analytics != nil {
		reg.MustRegister(analyticsCollector{p: cfg.Analytics})
	}
	if cfg.Push != nil {
		reg.MustRegister(pushCollector{d: cfg.Push, shards: cfg.Shards})
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{log}}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/memory", serveMemory)
	if cfg.Reports != nil {
		mux.Handle("/reports", cfg.Reports)
	}
	if cfg.Operator != nil {
		if cfg.TempDir == "" {
			return nil, errors.New("admin: an Operator without a TempDir")
		}
		handleOps(mux, cfg.Operator, cfg.TempDir)
	}
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "parleyd admin: /metrics /healthz /readyz /status /users/{id or +phone} /debug/pprof/ /debug/memory[?settle=1] /reports;"+
			" POST (with a Parley-Admin header) /drain /backup /users/{id}/devices/{device}/revoke")
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	a := &Admin{
		ln:  ln,
		log: log,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
	}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin endpoint stopped", "err", err)
		}
	}()
	return a, nil
}

// Addr returns the address the endpoint listens on.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// Close stops the endpoint, waiting up to ctx for requests in progress
// (a CPU profile runs for its whole duration) before cutting them off.
func (a *Admin) Close(ctx context.Context) error {
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
		return fmt.Errorf("admin: close: %w", err)
	}
	return nil
}

// Memory is the process's memory, as /debug/memory reports it.
type Memory struct {
	// HeapInuse is the Go heap in use (runtime.MemStats.HeapInuse), bytes.
	HeapInuse uint64 `json:"heap_inuse_bytes"`
	// RSS is the resident set size (VmRSS), bytes; 0 where unknown.
	RSS uint64 `json:"rss_bytes"`
	// Goroutines is the number of goroutines.
	Goroutines int `json:"goroutines"`
	// Settled says the figures were read after two collections and
	// returning free memory to the OS.
	Settled bool `json:"settled"`
}

// ReadMemory reads the process's memory; settle first collects garbage
// twice and returns free memory to the OS, so the figures are comparable
// between two reads (it pauses the process for a few milliseconds).
func ReadMemory(settle bool) Memory {
	if settle {
		runtime.GC()
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Memory{HeapInuse: ms.HeapInuse, RSS: readRSS(), Goroutines: runtime.NumGoroutine(), Settled: settle}
}

// serveMemory answers GET /debug/memory[?settle=1] with a Memory in JSON.
func serveMemory(w http.ResponseWriter, r *http.Request) {
	settle := r.URL.Query().Get("settle") == "1"
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ReadMemory(settle))
}

// readRSS reads VmRSS from /proc/self/status, in bytes; 0 if unknown.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// slogPrinter adapts a slog.Logger to promhttp's error logger.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error(fmt.Sprint(v...), "component", "admin") }
