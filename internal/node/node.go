package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/internal/admin"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/reports"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/sms"
	"github.com/parley-im/parley/storage"
)

// Config configures a node. The zero value of each field means its
// default, so the zero Config is a complete single node.
type Config struct {
	// DataDir holds the shards and the generated certificate. Default
	// "parley-data" in the working directory.
	DataDir string
	// Listen is the client address, host:port. Default "127.0.0.1:5222".
	Listen string
	// Shards is the number of shards (Pebble databases). It is fixed when
	// the data directory is created (recorded in DataDir/shard-count) and must
	// match it afterwards. 0 means: as recorded, or for a new directory
	// GOMAXPROCS — more actors than cores add fsyncs and context switches
	// without parallelism (measured: docs/benchmarks.md, "Shard count").
	Shards int
	// CertFile and KeyFile are the TLS certificate and key (PEM). Default
	// DataDir/tls/cert.pem and key.pem, generated self-signed on first start.
	CertFile, KeyFile string
	// TicketKeyFile holds the 32-byte secret the TLS session ticket keys
	// are derived from (server.Config.TicketSecret), so that clients
	// resume their sessions across restarts of the node; give the nodes
	// behind one name the same file. Default DataDir/tls/ticket.key,
	// created with 32 random bytes on first start. "none" means a random
	// secret per start: every client does a full handshake after a restart.
	TicketKeyFile string
	// Plaintext serves without TLS, behind a TLS-terminating proxy.
	Plaintext bool
	// Logger receives all logs; nil means slog.Default().
	Logger *slog.Logger
	// Codes sends verification codes; nil means the SMS sender of SMS
	// when SMS.Gateway is set, else LogCodes, which logs them (development
	// only). Codes and SMS.Gateway may not both be set.
	Codes storage.CodeSender
	// CountLogCodes applies the server's verification-code limits
	// (server.Config.CodesPerConn and the rest, [S-9-17]) to the codes
	// the log sender writes, as if each cost an SMS: to try the limits
	// without a gateway (parley-load's abuse scenario). By default the
	// codes that go to the log, like those of the reserved test numbers
	// (Storage.TestPrefix), are outside them.
	CountLogCodes bool
	// FreeCodes puts every code outside the code limits, whatever sends
	// it: for tests whose Codes only catches them.
	FreeCodes bool
	// SMS configures the node's SMS sender when SMS.Gateway is set: the
	// node starts it, hands it every shard's codes, counts its work in the
	// admin metrics and stops it after the shards. Logger is filled in by
	// the node.
	SMS sms.Config
	// Push configures the node's push notifications (spec.md section 19)
	// when at least one of Push.APNs, Push.FCM and Push.Webhook is set:
	// the node starts a push.Dispatcher, hands it every shard's pushes,
	// counts its work in the admin metrics and stops it before the
	// shards. Submit and Logger are filled in by the node. With none set
	// the node offers no push (PUSH_UNAVAILABLE).
	Push push.Config
	// OnPushReport, if set, is called with each report of a push
	// (storage.OpPushDone) once the report is queued on its shard, from
	// the dispatcher's goroutine: tests wait on it.
	OnPushReport func(op storage.Op)
	// AdminAddr is the address of the admin endpoint (Prometheus /metrics,
	// /debug/pprof/, /debug/memory), host:port; port 0 picks a free port.
	// Default "": no admin endpoint. Keep it on a private address.
	AdminAddr string
	// MediaAddr is the address of the HTTPS media endpoint (spec.md
	// section 14), host:port. Default "127.0.0.1:5443", or a free port
	// when Listen asks for one (port 0), so test nodes never collide;
	// "off" runs the node without media (MEDIA_UNAVAILABLE). It serves
	// with the chat listener's certificate, or plain HTTP when Plaintext.
	MediaAddr string
	// MediaURL is the base URL in the media URLs handed to clients, such
	// as "https://media.example.com". Default "https://" (or "http://"
	// when Plaintext) followed by the address the endpoint listens on.
	MediaURL string
	// MediaS3 keeps the media blobs in an S3-compatible bucket; zero (no
	// Endpoint) keeps them in DataDir/media/blobs.
	MediaS3 media.S3Config
	// Media tunes the media service; Dir, BaseURL, Store and Logger are
	// filled in by the node.
	Media media.Config
	// Server tunes the client server; Addr, TLS, Plaintext, Router, Media and
	// Logger are filled in by the node, and FDReserve when zero (see
	// FDReserve), so the connection cap (Server.MaxConns) is derived from
	// the process's open-file limit less what the node's other parts need.
	Server server.Config
	// Reports configures the operator's queue of user reports (spec.md
	// section 18.5); Path defaults to DataDir/reports/reports.ndjson, and
	// Logger is the node's.
	Reports reports.Config
	// Analytics configures the node's analytics stream (by default NDJSON
	// files under DataDir/analytics).
	Analytics AnalyticsConfig
	// Storage tunes every shard; ID, Dir, Forwarder, Codes, CodeKey and
	// Logger are filled in by the node (and Epoch and Fence in a cluster).
	Storage storage.Config
	// Cluster, if set, makes the node one of a cluster (docs/cluster.md):
	// it joins through etcd, opens only the shards placed on it, reaches
	// the others over node links, and serves any user. nil is the single
	// node, with no etcd.
	Cluster *ClusterConfig

	// MinFreeBytes is the free space the node keeps on the data
	// directory's file system: below it the shards store nothing new and
	// answer STORAGE_FULL ([S-8-22]) while deliveries and acks go on.
	// Default 512 MiB, below the media service's own reserve, so that
	// uploads stop first.
	MinFreeBytes uint64
	// FreeSpace returns the bytes available in dir's file system; nil
	// means statfs. Tests inject it.
	FreeSpace func(dir string) (uint64, error)
	// OnStorageFatal is called when Pebble reports an error it cannot
	// continue from (a failed write to its log); it must not return. nil
	// panics, as Pebble expects of a logger's Fatalf. parleyd logs and
	// exits, so a supervisor restarts it and the shards recover.
	OnStorageFatal func(msg string)
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "parley-data"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:5222"
	}

	if c.CertFile == "" {
		c.CertFile = filepath.Join(c.DataDir, "tls", "cert.pem")
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, "tls", "key.pem")
	}
	if c.TicketKeyFile == "" {
		c.TicketKeyFile = filepath.Join(c.DataDir, "tls", "ticket.key")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = 512 << 20
	}
	if c.FreeSpace == nil {
		c.FreeSpace = diskFree
	}
	if c.Codes == nil && c.SMS.Gateway == nil {
		c.Codes = LogCodes{Logger: c.Logger}
	}
	if c.MediaAddr == "" {
		c.MediaAddr = "127.0.0.1:5443"
		if _, port, err := net.SplitHostPort(c.Listen); err == nil && port == "0" {
			c.MediaAddr = "127.0.0.1:0"
		}
	}
}

func (c *Config) validate() error {
	if c.Shards < 1 || c.Shards > storage.MaxShards {
		return fmt.Errorf("node: %d shards, want 1 to %d", c.Shards, storage.MaxShards)
	}
	if c.Codes != nil && c.SMS.Gateway != nil {
		return errors.New("node: both a code sender (Codes) and an SMS gateway (SMS.Gateway)")
	}
	return c.Analytics.validate()
}

// shardCount returns how many shards the data directory in dir holds: the
// count it was created with (recorded in dir/shard-count), which want must
// match if it is not 0; for a new directory want, or GOMAXPROCS when want
// is 0. Slots map to shards by the count, so it can never change under
// existing data.
func shardCount(dir string, want int) (int, error) {
	name := filepath.Join(dir, "shard-count")
	b, err := os.ReadFile(name)
	switch {
	case err == nil:
		have, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if perr != nil || have < 1 {
			return 0, fmt.Errorf("node: %s: not a shard count: %q", name, b)
		}
		if want != 0 && want != have {
			return 0, fmt.Errorf("node: %s holds %d shards, not %d: the shard count is fixed when a data directory is created", dir, have, want)
		}
		return have, nil
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("node: %w", err)
	}
	if want == 0 {
		want = runtime.GOMAXPROCS(0)
	}
	if want < 1 || want > storage.MaxShards {
		return 0, fmt.Errorf("node: %d shards, want 1 to %d", want, storage.MaxShards)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("node: %w", err)
	}
	if err := writeFileAtomic(name, []byte(strconv.Itoa(want)+"\n"), 0o600); err != nil {
		return 0, err
	}
	return want, nil
}

// FDReserve returns the file descriptors a node keeps out of the client
// connection cap (server.Config.FDReserve) for its other parts: 128 for
// the process (standard streams, listeners, the event loops' pollers, the
// admin endpoint, up to 64 connections being handed to a loop), 128 per
// shard (Pebble's write-ahead log, manifest and the sstables it keeps
// open: a shard with more live sstables needs more, set
// server.Config.FDReserve), and, with media on, 2 per concurrent media
// transfer (a socket and a file; maxTransfers 0 means media's default,
// 256).
func FDReserve(shards int, media bool, maxTransfers int) int {
	n := 128 + 128*shards
	if media {
		if maxTransfers == 0 {
			maxTransfers = 256 // media.Config.MaxTransfers's default
		}
		n += 2 * maxTransfers
	}
	return n
}

// LogCodes is the embedded verification-code sender: it logs each code.
// For development and tests only; production plugs in an SMS gateway.
type LogCodes struct{ Logger *slog.Logger }

// SendCode implements storage.CodeSender: it logs the code and reports it
// sent.
func (l LogCodes) SendCode(phone, code string, done func(error)) {
	l.Logger.Warn("verification code (log sender: configure an SMS gateway for production)", "phone", phone, "code", code)
	done(nil)
}

// freeCode returns the server's FreeCode: a code costs the operator
// nothing when it goes to the log (unless CountLogCodes), when every code
// is free (FreeCodes), when its number is a reserved test number, or when
// the caller's own FreeCode (nil: none) says so.
func freeCode(cfg Config, user func(string) bool) func(string) bool {
	_, logged := cfg.Codes.(LogCodes)
	all := cfg.FreeCodes || (logged && !cfg.CountLogCodes)
	prefix := cfg.Storage.TestPrefix
	return func(phone string) bool {
		return all || (prefix != "" && strings.HasPrefix(phone, prefix)) || (user != nil && user(phone))
	}
}

// Node is a running node.
type Node struct {
	cfg         Config
	router      *router.Router
	conns       *server.Registry
	resolver    *conns  // conns and the node's own requests, for the router
	member      *member // the cluster side; nil on a single node
	shards      []*storage.Shard
	srv         *server.Server
	served      chan error
	fingerprint string
	admin       *admin.Admin // nil without AdminAddr
	reports     *reports.Queue
	analytics   *analytics.Pipeline // nil with the sink off
	media       *media.Service      // nil with MediaAddr "off"
	sms         *sms.Sender         // nil without Config.SMS.Gateway
	push        *push.Dispatcher    // nil without a push provider
	mediaHTTP   *http.Server
	mediaLn     net.Listener
	mediaServed chan error
	disk        *diskGuard
	unlock      func() error // releases the data directory; nil until Start returns
	started     time.Time

	// opMu serialises backups with the end of Shutdown (ops.go).
	opMu    sync.Mutex
	stopped bool // guarded by opMu: Shutdown is closing the shards

	drainOnce sync.Once
	drain     chan struct{} // closed by Drain
}

// Start locks the data directory (PIDFile), opens the shards, starts the
// server and returns once it listens. A data directory another node
// holds fails with a *DataDirInUseError; an address it cannot listen on
// with a *ListenError.
func Start(cfg Config) (*Node, error) {
	cfg.setDefaults()
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n, err := startLocked(cfg)
	if err != nil {
		_ = unlock()
		return nil, err
	}
	n.unlock = unlock
	return n, nil
}

// startLocked is Start once the data directory is locked.
func startLocked(cfg Config) (_ *Node, rerr error) {
	shards, err := shardCount(cfg.DataDir, cfg.Shards)
	if err != nil {
		return nil, err
	}
	cfg.Shards = shards
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	r, err := router.New(cfg.Shards)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, router: r, served: make(chan error, 1), started: time.Now(), drain: make(chan struct{})}
	defer func() {
		if rerr != nil && n.member != nil { // a failure before closeShards
			_ = n.member.close(context.Background())
			n.member = nil
		}
	}()
	if err := privateDir(cfg.DataDir); err != nil {
		return nil, err
	}
	// What an interrupted POST /backup left behind (admin.Config.TempDir).
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "backups")); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	codeKey, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "codes.key"))
	if err != nil {
		return nil, err
	}
	gen, err := nextGeneration(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// The node's connections, named by refs the shards hold; node 0 on a
	// single node.
	var self uint32
	var placed *cluster.State
	if cfg.Cluster != nil {
		if n.member, placed, err = joinCluster(cfg, n.router, gen); err != nil {
			return nil, err
		}
		self = cfg.Cluster.ID
	}
	n.conns = server.NewRegistry(self, gen)
	n.resolver = newConns(n.conns, self, gen)
	n.router.AttachConns(n.resolver)

	var tlsConfig *tls.Config
	var ticketSecret []byte
	if !cfg.Plaintext && cfg.TicketKeyFile != "none" {
		if err := os.MkdirAll(filepath.Dir(cfg.TicketKeyFile), 0o700); err != nil {
			return nil, fmt.Errorf("node: ticket key: %w", err)
		}
		if ticketSecret, err = loadOrCreateKey(cfg.TicketKeyFile); err != nil {
			return nil, err
		}
	}
	if !cfg.Plaintext {
		cert, created, err := loadOrCreateCert(cfg.CertFile, cfg.KeyFile, time.Now())
		if err != nil {
			return nil, err
		}
		n.fingerprint = Fingerprint(cert.Certificate[0])
		if created {
			log.Info("created a self-signed certificate", "file", cfg.CertFile)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}

	var commits *admin.Commits
	if cfg.AdminAddr != "" {
		commits = admin.NewCommits()
	}
	if cfg.SMS.Gateway != nil {
		smsConfig := cfg.SMS
		smsConfig.Logger = log
		if n.sms, err = sms.New(smsConfig); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		cfg.Codes = n.sms
	}
	if n.analytics, err = openAnalytics(cfg); err != nil {
		n.closeShards()
		return nil, err
	}
	routed := make([]*storage.Shard, cfg.Shards) // by shard id; nil: another node's
	if cfg.Push.APNs != nil || cfg.Push.FCM != nil || cfg.Push.Webhook != nil {
		pc := cfg.Push
		pc.Submit, pc.Logger = n.router.Submit, log
		if hook := cfg.OnPushReport; hook != nil {
			pc.Submit = func(op storage.Op) error {
				err := n.router.Submit(op)
				hook(op)
				return err
			}
		}
		if n.push, err = push.New(pc); err != nil {
			n.closeShards()
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	for i := range cfg.Shards {
		sc := cfg.Storage
		if commits != nil {
			observe := commits.Observer(uint16(i))
			if user := sc.OnCommit; user != nil {
				sc.OnCommit = func(d time.Duration, ops int) { observe(d, ops); user(d, ops) }
			} else {
				sc.OnCommit = observe
			}
			if user := sc.OnSync; user != nil {
				sc.OnSync = func(d time.Duration) { commits.ObserveSync(d); user(d) }
			} else {
				sc.OnSync = commits.ObserveSync
			}
		}
		sc.ID = uint16(i)
		if placed != nil {
			if placed.Owner(sc.ID).Node != self {
				continue
			}
			n.member.shardConfig(&sc, placed)
		}
		sc.Dir = filepath.Join(cfg.DataDir, "shards", fmt.Sprintf("%03d", i))
		sc.Forwarder = n.router
		sc.Conns = n.router
		sc.Codes = cfg.Codes
		if n.push != nil {
			sc.Pusher = n.push
		}
		sc.CodeKey = codeKey
		sc.Logger = log
		sc.OnFatal = cfg.OnStorageFatal
		if n.analytics != nil {
			sc.Events = n.analytics
		}
		s, err := storage.Open(sc)
		if err != nil {
			n.closeShards()
			return nil, err
		}
		n.shards = append(n.shards, s)
		routed[i] = s
	}
	if err := n.router.Attach(routed); err != nil {
		n.closeShards()
		return nil, err
	}
	setters := make([]fullSetter, len(n.shards))
	for i, s := range n.shards {
		setters[i] = s
	}
	n.disk = newDiskGuard(cfg.DataDir, cfg.MinFreeBytes, cfg.FreeSpace, setters, log)
	n.disk.check()
	go n.disk.run()
	for _, s := range n.shards {
		s.Start()
	}

	if cfg.MediaAddr != "off" {
		if err := n.openMedia(tlsConfig); err != nil {
			n.closeShards()
			return nil, err
		}
	}

	rc := cfg.Reports
	if rc.Path == "" {
		rc.Path = filepath.Join(cfg.DataDir, "reports", "reports.ndjson")
	}
	rc.Logger = log
	if n.reports, err = reports.Open(rc); err != nil {
		n.closeMedia(context.Background())
		n.closeShards()
		return nil, fmt.Errorf("node: %w", err)
	}

	sc := cfg.Server
	sc.Addr, sc.TLS, sc.Plaintext, sc.Router, sc.Logger = cfg.Listen, tlsConfig, cfg.Plaintext, n.router, log
	sc.Conns = n.conns
	sc.Reports = n.reports
	sc.FreeCode = freeCode(cfg, sc.FreeCode)
	if sc.TicketSecret == nil {
		sc.TicketSecret = ticketSecret
	}
	if sc.FDReserve == 0 {
		sc.FDReserve = FDReserve(cfg.Shards, cfg.MediaAddr != "off", cfg.Media.MaxTransfers)
	}
	if n.media != nil {
		sc.Media = n.media
	}
	srv, err := server.New(sc)
	if err != nil {
		_ = n.reports.Close()
		n.closeMedia(context.Background())
		n.closeShards()
		return nil, err
	}
	n.srv = srv
	go func() { n.served <- srv.Serve() }()
	if srv.Addr() == nil {
		err := <-n.served
		_ = n.reports.Close()
		n.closeMedia(context.Background())
		n.closeShards()
		return nil, &ListenError{Listener: "client", Addr: cfg.Listen, Err: err}
	}
	n.startMedia()
	if cfg.AdminAddr != "" {
		a, err := admin.Start(admin.Config{Addr: cfg.AdminAddr, Server: srv, Shards: n.shards, Commits: commits, Media: n.media, SMS: n.sms,
			Push: n.push, Reports: n.reports, Analytics: n.analytics, Operator: operator{n}, TempDir: filepath.Join(cfg.DataDir, "backups"), Logger: log})
		if err != nil {
			_ = n.Shutdown(context.Background())
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "listen" {
				err = &ListenError{Listener: "admin", Addr: cfg.AdminAddr, Err: err}
			}
			return nil, err
		}
		n.admin = a
	}
	if n.member != nil {
		n.member.start(n.shards, func(match func(uint64, bool) bool) { srv.CloseUsers(match, closeCode) })
	}
	return n, nil
}

// Addr returns the client address the node listens on.
func (n *Node) Addr() net.Addr { return n.srv.Addr() }

// AdminAddr returns the admin endpoint's address, or nil without one.
func (n *Node) AdminAddr() net.Addr {
	if n.admin == nil {
		return nil
	}
	return n.admin.Addr()
}

// Fingerprint returns the hex SHA-256 of the node's certificate, or "" in
// plaintext mode.
func (n *Node) Fingerprint() string { return n.fingerprint }

// Server returns the node's client server.
func (n *Node) Server() *server.Server { return n.srv }

// Router returns the node's router.
func (n *Node) Router() *router.Router { return n.router }

// Reports returns the node's queue of user reports.
func (n *Node) Reports() *reports.Queue { return n.reports }

// Push returns the node's push dispatcher, or nil when it offers no push.
func (n *Node) Push() *push.Dispatcher { return n.push }

// Shards returns the node's shards.
func (n *Node) Shards() []*storage.Shard { return n.shards }

// Shutdown stops the node gracefully: clients are told to go away and
// reconnect, the server stops, and every shard commits what it has and
// closes.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	if n.admin != nil {
		err = n.admin.Close(ctx)
	}
	err = errors.Join(err, n.srv.Shutdown(ctx))
	if serr := <-n.served; serr != nil {
		err = errors.Join(err, serr)
	}
	n.opMu.Lock() // a backup in progress ends first
	n.stopped = true
	n.opMu.Unlock()
	if n.member != nil {
		n.member.leave(ctx) // the others see the node leave at once
	}
	err = errors.Join(err, n.reports.Close())
	err = errors.Join(err, n.closeMedia(ctx))
	err = errors.Join(err, n.closeShards())
	if n.unlock != nil {
		err = errors.Join(err, n.unlock())
		n.unlock = nil
	}
	return err
}

// closeShards stops the push dispatcher (what it had not sent stays owed
// on the shards, which hand it over again at their next start), closes
// the shards, and then the SMS sender they hand codes to: the requests it
// still works on are answered CODE_DELIVERY_FAILED.
func (n *Node) closeShards() error {
	if n.disk != nil {
		n.disk.stop()
		n.disk = nil
	}
	if n.push != nil {
		n.push.Close()
		n.push = nil
	}
	var errs []error
	for _, s := range n.shards {
		errs = append(errs, s.Close())
	}
	n.shards = nil
	if n.member != nil {
		errs = append(errs, n.member.close(context.Background())) // after the shards' last effects
		n.member = nil
	}
	if n.sms != nil {
		n.sms.Close()
		n.sms = nil
	}
	if n.analytics != nil {
		errs = append(errs, n.analytics.Close()) // after the shards, so their last events are written
		n.analytics = nil
	}
	return errors.Join(errs...)
}

// Run starts a node, runs it until ctx ends, then shuts it down within
// grace.
func Run(ctx context.Context, cfg Config, grace time.Duration) error {
	n, err := Start(cfg)
	if err != nil {
		return err
	}
	log := n.cfg.Logger
	attrs := []any{"addr", n.Addr().String(), "data", n.cfg.DataDir, "shards", n.cfg.Shards}
	if n.fingerprint != "" {
		attrs = append(attrs, "fingerprint", n.fingerprint)
	}
	if a := n.AdminAddr(); a != nil {
		attrs = append(attrs, "admin", a.String())
	}
	if n.media != nil {
		attrs = append(attrs, "media", n.mediaLn.Addr().String(), "media_url", n.cfg.MediaURL)
	}
	if n.sms != nil {
		attrs = append(attrs, "sms", n.cfg.SMS.Gateway.Name())
	}
	if n.push != nil {
		attrs = append(attrs, "push", strings.Join(n.push.Providers(), ","))
	}
	log.Info("parleyd ready", attrs...)
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-n.drain:
		log.Info("draining: every client is told to go away, then parleyd stops")
	case err := <-n.served:
		n.served <- err
		log.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return n.Shutdown(sctx)
}
