// Command parleyd runs a Parley node. With no flags it is a complete
// single node on embedded defaults: data in ./parley-data, a self-signed
// certificate created on first start (its fingerprint is printed), all
// shards local, listening on 127.0.0.1:5222.
//
// Every flag has an environment variable that sets its default:
// PARLEY_LISTEN, PARLEY_DATA, PARLEY_SHARDS, PARLEY_SYNC_WAIT,
// PARLEY_CERT, PARLEY_KEY, PARLEY_PLAINTEXT, PARLEY_HEARTBEAT,
// PARLEY_HEARTBEAT_MIN, PARLEY_HEARTBEAT_MAX, PARLEY_TLS_TICKET_KEY,
// PARLEY_TEST_PHONE_PREFIX, PARLEY_TEST_CODE, PARLEY_ADMIN,
// PARLEY_LOG_LEVEL, PARLEY_MEDIA_LISTEN,
// PARLEY_MEDIA_URL, PARLEY_MEDIA_EXPIRY, PARLEY_MEDIA_S3_ENDPOINT,
// PARLEY_MEDIA_S3_BUCKET, PARLEY_MEDIA_S3_PREFIX, PARLEY_MEDIA_S3_REGION,
// PARLEY_MEDIA_S3_ACCESS_KEY, PARLEY_MEDIA_S3_INSECURE,
// PARLEY_MEDIA_MAX_TRANSFERS, PARLEY_MEDIA_USER_TRANSFERS,
// PARLEY_MEDIA_RESERVED_TRANSFERS, PARLEY_MEDIA_MIN_RATE,
// PARLEY_MEDIA_STAGING_QUOTA_MIB, PARLEY_MEDIA_MIN_FREE_MIB,
// PARLEY_MIN_FREE_MIB, PARLEY_INBOX_MAX_ENTRIES, PARLEY_INBOX_MAX_MIB,
// PARLEY_MAX_CONNS, PARLEY_MAX_CONNS_PER_IP, PARLEY_MAX_HANDSHAKES_PER_IP,
// PARLEY_FD_RESERVE, PARLEY_SENDS_PER_SECOND, PARLEY_SENDS_BURST,
// PARLEY_GROUP_SENDS_PER_SECOND, PARLEY_GROUP_SENDS_BURST,
// PARLEY_CONN_CODES_PER_MINUTE, PARLEY_CONN_CODES_BURST,
// PARLEY_IP_CODES_PER_HOUR, PARLEY_IP_CODES_BURST,
// PARLEY_PREFIX_CODES_PER_HOUR, PARLEY_PREFIX_CODES_BURST,
// PARLEY_NODE_CODES_PER_SECOND, PARLEY_NODE_CODES_BURST,
// PARLEY_IP_LINK_REQUESTS_PER_MINUTE, PARLEY_IP_LINK_REQUESTS_BURST,
// PARLEY_COUNT_LOG_CODES, PARLEY_LIMIT_LOOPBACK,
// PARLEY_SMS, PARLEY_SMS_URL, PARLEY_TWILIO_ACCOUNT_SID,
// PARLEY_TWILIO_AUTH_TOKEN_FILE, PARLEY_SMS_FROM,
// PARLEY_TWILIO_MESSAGING_SERVICE_SID, PARLEY_WEBHOOK_SECRET_FILE,
// PARLEY_SMS_TEXT, PARLEY_SMS_WORKERS, PARLEY_SMS_QUEUE,
// PARLEY_SMS_ATTEMPTS, PARLEY_SMS_ATTEMPT_TIMEOUT, PARLEY_SMS_DEADLINE. The
// S3 secret key is read only from PARLEY_MEDIA_S3_SECRET_KEY, never from a
// flag, so it does not show in the process list; so are the SMS gateway's
// credentials, from a file (--twilio-auth-token-file,
// --webhook-secret-file) or from PARLEY_TWILIO_AUTH_TOKEN and
// PARLEY_WEBHOOK_SECRET.
//
// Verification codes go to the log by default (--sms log, for development
// and tests). --sms twilio sends them through a Twilio-compatible Messages
// API, --sms webhook as a signed POST to an endpoint of the operator's;
// docs/operations.md ("SMS gateway") says how to set either up and what a
// client sees when a code cannot be sent.
//
// Push notifications (spec.md section 19) are off until a provider is
// configured: --apns-key-id with --apns-key-file (or PARLEY_APNS_KEY),
// --apns-team-id and --apns-topic for APNs; --fcm-service-account-file
// (or PARLEY_FCM_SERVICE_ACCOUNT) for FCM; --push-webhook with
// --push-webhook-secret-file (or PARLEY_PUSH_WEBHOOK_SECRET) for
// UnifiedPush-compatible endpoints. --push-interval (default 30s) is the
// least time between two pushes to one device. Each flag has its
// PARLEY_ variable (PARLEY_APNS_KEY_ID, PARLEY_APNS_KEY_FILE,
// PARLEY_APNS_TEAM_ID, PARLEY_APNS_TOPIC, PARLEY_APNS_PRODUCTION,
// PARLEY_FCM_SERVICE_ACCOUNT_FILE, PARLEY_PUSH_WEBHOOK,
// PARLEY_PUSH_WEBHOOK_ALLOW_PRIVATE, PARLEY_PUSH_WEBHOOK_SECRET_FILE, PARLEY_PUSH_INTERVAL,
// PARLEY_PUSH_WORKERS, PARLEY_PUSH_QUEUE, PARLEY_PUSH_ATTEMPTS); the keys
// are never taken from a flag. docs/operations.md ("Push notifications")
// says how to set each up.
//
// The media endpoint (--media-listen, default 127.0.0.1:5443; "" turns
// media off) serves uploads and downloads over HTTPS with the chat
// certificate (spec.md section 14). Blobs live in the data directory
// unless --media-s3-endpoint names an S3-compatible store. Its limits
// (spec.md section 14.5, docs/security.md) have the flags --media-max-
// transfers, --media-user-transfers, --media-reserved-transfers,
// --media-min-rate, --media-staging-quota-mib and --media-min-free-mib;
// 0 turns the last four off.
//
// --sync-wait (default 50µs, 0 turns it off) is adaptive group commit: a
// shard waits up to that long for more commits to share the next fsync
// when more than one promise waits for it or ops are in hand; otherwise
// it syncs at once (docs/architecture.md, "What waits for an fsync").
//
// Storage limits (docs/security.md): --min-free-mib is the free space the
// node keeps on the data directory's file system (below it nothing new is
// stored: STORAGE_FULL); --inbox-max-entries and --inbox-max-mib are the
// quota of one user's queue of undelivered messages (INBOX_FULL).
//
// Files are created readable by parleyd's user only (umask 077, the data
// directory 0700): the shards, the certificate's key and the key that
// protects verification codes live there, and the secret of the TLS
// session ticket keys (--tls-ticket-key, default DataDir/tls/ticket.key).
//
// Connection limits (docs/security.md, "Connections and TLS"): at most
// --max-conns client connections (default: the open-file limit less
// --fd-reserve, which defaults to what the shards, media and admin
// endpoint need), --max-conns-per-ip from one address and
// --max-handshakes-per-ip TLS handshakes at once from one address
// (loopback clients are exempt from the per-address limits). A connection
// over a limit is closed at once; running out of file descriptors never
// stops the node.
//
// Rate limits (docs/security.md, spec.md [S-8-23], [S-9-12], [S-9-17]):
// each is a sustained rate and a burst, --NAME-per-UNIT and --NAME-burst,
// refused with RATE_LIMITED beyond: the SENDs of one account (--sends-,
// --group-sends-), and the verification codes that cost an SMS per
// connection (--conn-codes-), per address (--ip-codes-), per number
// prefix (--prefix-codes-) and for the node (--node-codes-), and
// LINK_REQUESTs per address (--ip-link-requests-). Codes for the test
// numbers, and the codes of --sms log unless --count-log-codes, are
// outside the code limits. --limit-loopback applies the per-address
// limits to loopback clients, which are otherwise exempt.
//
// While it runs, parleyd holds a lock on parleyd.pid in the data
// directory, which names its process: a second parleyd on the same
// directory stops at once and says which process holds it. An address it
// cannot listen on is named, with the flag that chooses another.
//
// The admin endpoint (--admin, default 127.0.0.1:9222; "" turns it off)
// serves Prometheus metrics at /metrics, /healthz and /readyz, the
// profiler at /debug/pprof/, and what parleyctl asks for: the node's
// status, an account's devices and queue, revoking a device, draining the
// node (every client gets GOAWAY, then parleyd exits 0) and online
// backups. It has no authentication: keep it on loopback or a private
// network.
//
// parleyd restore --from BACKUP --data DIR copies a backup (parleyctl
// backup --to BACKUP) into a new data directory, with parleyd stopped;
// docs/operations.md has the whole procedure.
//
// parleyd cluster-cert init|issue creates the certificates of the links
// between the nodes of a cluster (docs/cluster.md, "Node links"); run it
// with no further arguments for its usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/reports"
	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

func main() {
	syscall.Umask(0o077)
	node.ApplyGCDefault(os.Getenv)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "cluster-cert" {
		err = runClusterCert(os.Args[2:], os.Stdout, time.Now())
	} else {
		err = run(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parleyd:", oneLine(explain(err)))
		os.Exit(1)
	}
}

// explain adds to a start-up error the flag that changes what failed.
func explain(err error) error {
	var inUse *node.DataDirInUseError
	var le *node.ListenError
	switch {
	case errors.As(err, &inUse):
		return fmt.Errorf("%w; stop it first, or choose another directory with --data", err)
	case errors.As(err, &le):
		flag := map[string]string{"client": "--listen", "media": "--media-listen", "admin": "--admin"}[le.Listener]
		return fmt.Errorf("%w; choose another address with %s", err, flag)
	}
	return err
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "restore" {
		return restore(args[1:], os.Stdout)
	}
	fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
	shardsDefault, err := envInt("PARLEY_SHARDS", 0)
	if err != nil {
		return err
	}
	heartbeatDefault, err := envDuration("PARLEY_HEARTBEAT", 60*time.Second)
	if err != nil {
		return err
	}
	heartbeatMinDefault, err := envDuration("PARLEY_HEARTBEAT_MIN", 0)
	if err != nil {
		return err
	}
	heartbeatMaxDefault, err := envDuration("PARLEY_HEARTBEAT_MAX", 0)
	if err != nil {
		return err
	}
	mediaExpiryDefault, err := envDuration("PARLEY_MEDIA_EXPIRY", 30*24*time.Hour)
	if err != nil {
		return err
	}
	syncWaitDefault, err := envDuration("PARLEY_SYNC_WAIT", storage.DefaultSyncWait)
	if err != nil {
		return err
	}
	listen := fs.String("listen", env("PARLEY_LISTEN", "127.0.0.1:5222"), "client `address` (host:port)")
	data := fs.String("data", env("PARLEY_DATA", "parley-data"), "data `directory`")
	shards := fs.Int("shards", shardsDefault, "number of shards; fixed when the data directory is created (0: as created, or one per CPU for a new directory)")
	syncWaitFlag := fs.Duration("sync-wait", syncWaitDefault, "adaptive group commit: the longest a shard waits for more commits before an fsync, when more than one promise waits for it or ops are in hand (0: never wait)")
	cert := fs.String("cert", env("PARLEY_CERT", ""), "TLS certificate `file` (PEM); default: self-signed in the data directory")
	key := fs.String("key", env("PARLEY_KEY", ""), "TLS key `file` (PEM)")
	ticketKey := fs.String("tls-ticket-key", env("PARLEY_TLS_TICKET_KEY", ""), "`file` holding the 32-byte secret of the TLS session ticket keys, so clients resume across restarts (share it between the nodes behind one name); default: created in the data directory; \"none\": random per start")
	plaintext := fs.Bool("plaintext", env("PARLEY_PLAINTEXT", "") == "1", "serve without TLS (only behind a TLS-terminating proxy)")
	heartbeat := fs.Duration("heartbeat", heartbeatDefault, "client heartbeat interval for clients that ask for none")
	heartbeatMin := fs.Duration("heartbeat-min", heartbeatMinDefault, "shortest heartbeat a client may ask for in LOGIN (0: 10s, or --heartbeat if shorter)")
	heartbeatMax := fs.Duration("heartbeat-max", heartbeatMaxDefault, "longest heartbeat a client may ask for in LOGIN (0: 30m, or --heartbeat if longer)")
	testPrefix := fs.String("test-phone-prefix", env("PARLEY_TEST_PHONE_PREFIX", ""), "phone numbers starting with this `prefix` get no SMS and verify with --test-code (load tests, staging)")
	testCode := fs.String("test-code", env("PARLEY_TEST_CODE", ""), "verification `code` for the test numbers")
	adminAddr := fs.String("admin", env("PARLEY_ADMIN", "127.0.0.1:9222"), "admin `address`: /metrics, /healthz, /readyz, /debug/pprof/ and parleyctl (\"\" turns it off; no authentication: keep it on loopback)")
	mediaListen := fs.String("media-listen", env("PARLEY_MEDIA_LISTEN", "127.0.0.1:5443"), "media HTTPS `address` (\"\" turns media off)")
	mediaURL := fs.String("media-url", env("PARLEY_MEDIA_URL", ""), "public base `URL` of the media endpoint (default https://<media-listen>)")
	mediaExpiry := fs.Duration("media-expiry", mediaExpiryDefault, "delete media not referenced for this long")
	s3Endpoint := fs.String("media-s3-endpoint", env("PARLEY_MEDIA_S3_ENDPOINT", ""), "S3-compatible `host:port` for media blobs (default: the data directory)")
	s3Bucket := fs.String("media-s3-bucket", env("PARLEY_MEDIA_S3_BUCKET", ""), "S3 `bucket` for media blobs (must exist)")
	s3Prefix := fs.String("media-s3-prefix", env("PARLEY_MEDIA_S3_PREFIX", ""), "object name `prefix` in the bucket")
	s3Region := fs.String("media-s3-region", env("PARLEY_MEDIA_S3_REGION", ""), "S3 `region`")
	s3Access := fs.String("media-s3-access-key", env("PARLEY_MEDIA_S3_ACCESS_KEY", ""), "S3 access `key` (the secret comes from PARLEY_MEDIA_S3_SECRET_KEY)")
	s3Insecure := fs.Bool("media-s3-insecure", env("PARLEY_MEDIA_S3_INSECURE", "") == "1", "speak plain HTTP to the S3 endpoint (loopback or a private network only)")
	limits, err := addMediaFlags(fs)
	if err != nil {
		return err
	}
	smsF, err := addSMSFlags(fs)
	if err != nil {
		return err
	}
	analyticsF := addAnalyticsFlags(fs)
	clusterF, err := addClusterFlags(fs)
	if err != nil {
		return err
	}
	rates, err := addRateFlags(fs)
	if err != nil {
		return err
	}
	pushF, err := addPushFlags(fs)
	if err != nil {
		return err
	}
	keysF, err := addKeyFlags(fs)
	if err != nil {
		return err
	}
	var minFree, inboxEntries, inboxMiB, reportsPerHour *int
	var maxConns, maxConnsPerIP, maxHandshakesPerIP, fdReserve *int
	for _, d := range []struct {
		v         **int
		name, env string
		def       int
		usage     string
	}{
		{&minFree, "min-free-mib", "PARLEY_MIN_FREE_MIB", 512, "`MiB` the data directory's file system keeps free: below it nothing new is stored (STORAGE_FULL)"},
		{&inboxEntries, "inbox-max-entries", "PARLEY_INBOX_MAX_ENTRIES", 50_000, "undelivered `entries` one user's queue may hold before 1:1 sends to it are refused (INBOX_FULL)"},
		{&inboxMiB, "inbox-max-mib", "PARLEY_INBOX_MAX_MIB", 256, "`MiB` one user's queue of undelivered entries may hold before 1:1 sends to it are refused"},
		{&maxConns, "max-conns", "PARLEY_MAX_CONNS", 0, "most client `connections` open at once; more are closed at once (0: the open-file limit less --fd-reserve)"},
		{&maxConnsPerIP, "max-conns-per-ip", "PARLEY_MAX_CONNS_PER_IP", 512, "most client `connections` from one IPv4 address or IPv6 /64 (loopback exempt)"},
		{&maxHandshakesPerIP, "max-handshakes-per-ip", "PARLEY_MAX_HANDSHAKES_PER_IP", 16, "most TLS `handshakes` at once from one IPv4 address or IPv6 /64 (loopback exempt)"},
		{&reportsPerHour, "reports-per-hour", "PARLEY_REPORTS_PER_HOUR", 10, "user `reports` one account may make per hour, its devices together (RATE_LIMITED beyond; they go to DATA/reports/reports.ndjson and the admin /reports)"},
		{&fdReserve, "fd-reserve", "PARLEY_FD_RESERVE", 0, "file `descriptors` kept from the open-file limit for all but client connections (0: 128 + 128 per shard + 2 per media transfer)"},
	} {
		def, err := envInt(d.env, d.def)
		if err != nil {
			return err
		}
		*d.v = fs.Int(d.name, def, d.usage)
	}
	level := fs.String("log-level", env("PARLEY_LOG_LEVEL", "info"), "log `level`: debug, info, warn, error")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if (*testPrefix == "") != (*testCode == "") {
		return fmt.Errorf("--test-phone-prefix and --test-code go together")
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"--min-free-mib", *minFree}, {"--inbox-max-entries", *inboxEntries}, {"--inbox-max-mib", *inboxMiB}, {"--reports-per-hour", *reportsPerHour}} {
		if c.v < 1 {
			return fmt.Errorf("%s %d: want 1 or more", c.name, c.v)
		}
	}
	if *shards < 0 {
		return fmt.Errorf("--shards %d: want 0 (the default) or more", *shards)
	}
	syncWait, err := storageSyncWait(*syncWaitFlag)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max-conns", *maxConns}, {"max-conns-per-ip", *maxConnsPerIP}, {"max-handshakes-per-ip", *maxHandshakesPerIP}, {"fd-reserve", *fdReserve}} {
		if f.v < 0 {
			return fmt.Errorf("--%s %d: want 0 (the default) or more", f.name, f.v)
		}
	}
	if *s3Endpoint != "" && *s3Bucket == "" {
		return fmt.Errorf("--media-s3-endpoint needs --media-s3-bucket")
	}
	if *mediaListen == "" {
		*mediaListen = "off"
	}
	mediaConfig, err := limits.config()
	if err != nil {
		return err
	}
	mediaConfig.Expiry = *mediaExpiry
	smsConfig, err := smsF.config(os.Getenv, os.ReadFile)
	if err != nil {
		return err
	}
	analyticsConfig, err := analyticsF.config()
	if err != nil {
		return err
	}
	clusterConfig, err := clusterF.config(fs)
	if err != nil {
		return err
	}
	serverConfig := server.Config{
		Heartbeat: *heartbeat, MinHeartbeat: *heartbeatMin, MaxHeartbeat: *heartbeatMax,
		MaxConns: *maxConns, MaxConnsPerIP: *maxConnsPerIP,
		MaxHandshakesPerIP: *maxHandshakesPerIP, FDReserve: *fdReserve,
	}
	if err := rates.apply(&serverConfig); err != nil {
		return err
	}
	storageConfig := storage.Config{
		TestPrefix: *testPrefix, TestCode: *testCode,
		InboxEntries: *inboxEntries, InboxBytes: int64(*inboxMiB) << 20,
		SyncWait: syncWait,
	}
	if err := keysF.apply(&serverConfig, &storageConfig); err != nil {
		return err
	}
	pushConfig, err := pushF.config(os.Getenv, os.ReadFile)
	if err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("bad --log-level %q", *level)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return node.Run(ctx, node.Config{
		DataDir:       *data,
		Listen:        *listen,
		Shards:        *shards,
		CertFile:      *cert,
		KeyFile:       *key,
		TicketKeyFile: *ticketKey,
		Plaintext:     *plaintext,
		AdminAddr:     *adminAddr,
		MediaAddr:     *mediaListen,
		MediaURL:      *mediaURL,
		MediaS3: media.S3Config{
			Endpoint: *s3Endpoint, Bucket: *s3Bucket, Prefix: *s3Prefix, Region: *s3Region,
			AccessKey: *s3Access, SecretKey: os.Getenv("PARLEY_MEDIA_S3_SECRET_KEY"), Insecure: *s3Insecure,
		},
		Media:         mediaConfig,
		SMS:           smsConfig,
		Reports:       reports.Config{PerHour: *reportsPerHour},
		Analytics:     analyticsConfig,
		Cluster:       clusterConfig,
		Push:          pushConfig,
		Logger:        logger,
		Server:        serverConfig,
		CountLogCodes: *rates.countLogCodes,
		Storage:       storageConfig,
		MinFreeBytes:  uint64(*minFree) << 20,
		OnStorageFatal: func(msg string) {
			// Pebble cannot go on; the shards recover from their logs when
			// a supervisor starts parleyd again.
			logger.Error("storage failed; exiting", "err", msg)
			os.Exit(70)
		},
	}, 10*time.Second)
}

// restore runs "parleyd restore --from DIR --data DIR": it copies a
// backup (parleyctl backup) into a new data directory.
func restore(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("parleyd restore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "backup `directory` (parleyctl backup --to)")
	data := fs.String("data", env("PARLEY_DATA", "parley-data"), "data `directory` to create; must not exist or be empty")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: parleyd restore --from BACKUP --data DATADIR (with parleyd stopped)")
			fs.PrintDefaults()
			return nil
		}
		return fmt.Errorf("restore: %w", err)
	}
	if *from == "" || fs.NArg() > 0 {
		return fmt.Errorf("restore: usage: parleyd restore --from BACKUP --data DATADIR")
	}
	m, err := node.Restore(*from, *data)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored the backup of %s (%d shards) into %s; start parleyd with --data %s\n",
		m.Created.Format(time.RFC3339), m.Shards, *data, *data)
	return nil
}

// mediaFlags are the media service's limits (spec.md section 14.5).
type mediaFlags struct {
	maxTransfers, userTransfers, reservedTransfers, minRate, stagingQuotaMiB, minFreeMiB *int
}

// addMediaFlags defines the media limit flags on fs, with their defaults
// from the environment.
func addMediaFlags(fs *flag.FlagSet) (*mediaFlags, error) {
	var f mediaFlags
	for _, d := range []struct {
		v         **int
		name, env string
		def       int
		usage     string
	}{
		{&f.maxTransfers, "media-max-transfers", "PARLEY_MEDIA_MAX_TRANSFERS", 256, "concurrent media transfers (HTTP requests)"},
		{&f.userTransfers, "media-user-transfers", "PARLEY_MEDIA_USER_TRANSFERS", 8, "concurrent media transfers of one user"},
		{&f.reservedTransfers, "media-reserved-transfers", "PARLEY_MEDIA_RESERVED_TRANSFERS", -1, "media transfer slots kept for users with none in progress (-1: an eighth of --media-max-transfers; 0: none)"},
		{&f.minRate, "media-min-rate", "PARLEY_MEDIA_MIN_RATE", 1024, "slowest media transfer, `bytes` per second over 30 s, before it is cut (0: no minimum)"},
		{&f.stagingQuotaMiB, "media-staging-quota-mib", "PARLEY_MEDIA_STAGING_QUOTA_MIB", 4096, "`MiB` of unfinished uploads one user may hold (0: no quota)"},
		{&f.minFreeMiB, "media-min-free-mib", "PARLEY_MEDIA_MIN_FREE_MIB", 1024, "`MiB` the media directory's file system keeps free: new uploads are refused below it (0: no reserve)"},
	} {
		def, err := envInt(d.env, d.def)
		if err != nil {
			return nil, err
		}
		*d.v = fs.Int(d.name, def, d.usage)
	}
	return &f, nil
}

// config turns the flags into media.Config's limits (0 there means the
// default, negative none).
func (f *mediaFlags) config() (media.Config, error) {
	for _, c := range []struct {
		name string
		v    int
		min  int
	}{
		{"--media-max-transfers", *f.maxTransfers, 1}, {"--media-user-transfers", *f.userTransfers, 1},
		{"--media-reserved-transfers", *f.reservedTransfers, -1}, {"--media-min-rate", *f.minRate, 0},
		{"--media-staging-quota-mib", *f.stagingQuotaMiB, 0}, {"--media-min-free-mib", *f.minFreeMiB, 0},
	} {
		if c.v < c.min {
			return media.Config{}, fmt.Errorf("%s %d: want %d or more", c.name, c.v, c.min)
		}
	}
	if *f.userTransfers > *f.maxTransfers {
		return media.Config{}, fmt.Errorf("--media-user-transfers %d: above --media-max-transfers %d", *f.userTransfers, *f.maxTransfers)
	}
	if *f.reservedTransfers >= *f.maxTransfers {
		return media.Config{}, fmt.Errorf("--media-reserved-transfers %d: leaves none of --media-max-transfers %d", *f.reservedTransfers, *f.maxTransfers)
	}
	none := func(v, unit int) int64 { // the flag's 0 is the Config's "none", -1 its default
		switch v {
		case 0:
			return -1
		case -1:
			return 0
		}
		return int64(v) * int64(unit)
	}
	return media.Config{
		MaxTransfers:      *f.maxTransfers,
		MaxUserTransfers:  *f.userTransfers,
		ReservedTransfers: int(none(*f.reservedTransfers, 1)),
		MinTransferRate:   int(none(*f.minRate, 1)),
		StagingQuota:      none(*f.stagingQuotaMiB, 1<<20),
		MinFreeBytes:      none(*f.minFreeMiB, 1<<20),
	}, nil
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envInt(name string, def int) (int, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a number", name, v)
	}
	return n, nil
}

// storageSyncWait turns --sync-wait into storage.Config.SyncWait, where
// zero means the default and a negative wait never waits.
func storageSyncWait(d time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("--sync-wait %v: want 0 (never wait) or more", d)
	case d == 0:
		return -1, nil
	}
	return d, nil
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a duration (like 60s)", name, v)
	}
	return d, nil
}
