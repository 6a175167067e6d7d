package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// EtcdConfig configures an embedded etcd member. The zero value of each
// optional field means its default.
type EtcdConfig struct {
	// Dir is the member's data directory. Required. A directory that holds
	// a member's data restarts that member (its cluster settings below are
	// then ignored by etcd).
	Dir string
	// Name is the member's name. Default "parley".
	Name string
	// ClientAddr is the host:port clients connect to. Default a free port
	// on 127.0.0.1, chosen at start (Etcd.ClientAddr tells which; chosen
	// again should another process take it before etcd binds it).
	ClientAddr string
	// PeerAddr is the host:port other members connect to. Default a free
	// port on 127.0.0.1, chosen as ClientAddr's.
	PeerAddr string
	// Peers lists every member of a new multi-member cluster as name →
	// peer host:port, this one included. Empty means a single member.
	Peers map[string]string
	// Token is the initial cluster token, unique per cluster. Default
	// "parley".
	Token string
	// TickMs is etcd's heartbeat interval in milliseconds, ElectionMs its
	// election timeout. Defaults etcd's: 100 and 1000. Tests on loopback
	// may use 10 and 100.
	TickMs, ElectionMs uint
	// StartTimeout bounds how long Start waits for the member to serve.
	// Default 30 s.
	StartTimeout time.Duration
	// Logger receives etcd's logs at LogLevel and above; nil discards them.
	Logger *slog.Logger
	// LogLevel is the least level of etcd's logs passed on. Default (0)
	// slog.LevelInfo; etcd is chatty at info, warn suits tests.
	LogLevel slog.Level

	// freeAddr finds a free loopback port; nil means FreeAddr. Tests
	// inject one that returns a taken port first.
	freeAddr func() (string, error)
}

func (c *EtcdConfig) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("cluster: etcd needs a data directory"))
	}
	if c.StartTimeout < 0 {
		errs = append(errs, fmt.Errorf("cluster: StartTimeout %v below 0", c.StartTimeout))
	}
	if c.ElectionMs != 0 && c.TickMs != 0 && c.ElectionMs < 5*c.TickMs {
		errs = append(errs, fmt.Errorf("cluster: ElectionMs %d below 5 × TickMs %d", c.ElectionMs, c.TickMs))
	}
	if len(c.Peers) > 0 {
		name := c.Name
		if name == "" {
			name = "parley"
		}
		if _, ok := c.Peers[name]; !ok {
			errs = append(errs, fmt.Errorf("cluster: member %q missing from Peers", name))
		}
		if c.PeerAddr == "" {
			errs = append(errs, errors.New("cluster: a multi-member etcd needs PeerAddr"))
		}
	}
	return errors.Join(errs...)
}

// Etcd is an embedded etcd member serving on loopback or the addresses
// configured: for tests and for an all-in-one start.
type Etcd struct {
	e          *embed.Etcd
	clientAddr string
	peerAddr   string
}

// StartEtcd starts an etcd member and waits until it serves.
func StartEtcd(c EtcdConfig) (*Etcd, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.Name == "" {
		c.Name = "parley"
	}
	if c.Token == "" {
		c.Token = "parley"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.freeAddr == nil {
		c.freeAddr = FreeAddr
	}
	// The ports StartEtcd chooses are found free and bound a moment later
	// by etcd: embed.Config takes URLs, not listeners, and a member given
	// port 0 binds a free port but advertises port 0 (its client URLs in
	// the member list, its peer URL in the membership that a restart and
	// any later member read). So when another process takes a chosen port
	// in between, etcd fails to bind it, before it writes anything, and
	// StartEtcd chooses again, up to maxPortChoices times.
	chooseClient, choosePeer := c.ClientAddr == "", c.PeerAddr == ""
	var e *embed.Etcd
	for choice := 1; ; choice++ {
		var err error
		if chooseClient {
			if c.ClientAddr, err = c.freeAddr(); err != nil {
				return nil, err
			}
		}
		if choosePeer {
			if c.PeerAddr, err = c.freeAddr(); err != nil {
				return nil, err
			}
		}
		if e, err = embed.StartEtcd(embedConfig(&c)); err == nil {
			break
		}
		var op *net.OpError
		taken := errors.As(err, &op) && errors.Is(err, syscall.EADDRINUSE) && op.Addr != nil &&
			(chooseClient && op.Addr.String() == c.ClientAddr || choosePeer && op.Addr.String() == c.PeerAddr)
		if !taken || choice == maxPortChoices {
			return nil, fmt.Errorf("cluster: start etcd: %w", err)
		}
		c.Logger.Warn("cluster: an etcd port was taken before etcd bound it; choosing again", "err", err)
	}
	t := time.NewTimer(c.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("cluster: etcd failed to start: %w", err)
	case <-t.C:
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("cluster: etcd not ready after %v", c.StartTimeout)
	}
	return &Etcd{e: e, clientAddr: c.ClientAddr, peerAddr: c.PeerAddr}, nil
}

// maxPortChoices bounds how many times StartEtcd chooses free ports for a
// member whose chosen port another process took before etcd bound it.
const maxPortChoices = 5

// embedConfig returns etcd's configuration of the member c describes, its
// addresses and defaults filled in.
func embedConfig(c *EtcdConfig) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZap(c.Logger, c.LogLevel))
	if c.TickMs != 0 {
		cfg.TickMs = c.TickMs
	}
	if c.ElectionMs != 0 {
		cfg.ElectionMs = c.ElectionMs
	}
	cu, pu := url.URL{Scheme: "http", Host: c.ClientAddr}, url.URL{Scheme: "http", Host: c.PeerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialClusterToken = c.Token
	cfg.InitialCluster = c.Name + "=" + pu.String()
	if len(c.Peers) > 0 {
		var parts []string
		for name, addr := range c.Peers {
			parts = append(parts, name+"=http://"+addr)
		}
		cfg.InitialCluster = strings.Join(parts, ",")
	}
	// Keep the history a controller's watch needs, not forever.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	return cfg
}

// ClientAddr returns the host:port clients connect to.
func (e *Etcd) ClientAddr() string { return e.clientAddr }

// PeerAddr returns the host:port other members connect to.
func (e *Etcd) PeerAddr() string { return e.peerAddr }

// Endpoints returns the client URLs, as clientv3.Config.Endpoints wants
// them.
func (e *Etcd) Endpoints() []string { return []string{"http://" + e.clientAddr} }

// Client returns a new client of this member; the caller closes it.
func (e *Etcd) Client(l *slog.Logger) (*clientv3.Client, error) {
	return NewClient(e.Endpoints(), l)
}

// Err reports the member's fatal errors.
func (e *Etcd) Err() <-chan error { return e.e.Err() }

// Close stops the member and waits for it. While clients hold streams
// open (watches, a node's keepalives) it waits for them up to etcd's
// request timeout (5 s plus twice the election timeout), refusing new
// requests meanwhile: close clients first for a quick stop.
func (e *Etcd) Close() { e.e.Close() }

// NewClient returns an etcd client of endpoints whose logs go to l at warn
// and above (nil discards them). It does not wait for a connection.
func NewClient(endpoints []string, l *slog.Logger) (*clientv3.Client, error) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      newZap(l, slog.LevelWarn),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	return cli, nil
}

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// listener that must keep its port across restarts or whose address must
// be known before it binds (another process's). Anything may take the
// port before that listener binds it: its caller must be ready to fail,
// and choose again (StartEtcd does).
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("cluster: find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("cluster: find a free port: %w", err)
	}
	return addr, nil
}
