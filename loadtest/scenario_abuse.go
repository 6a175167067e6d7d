package loadtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// abuseScenario runs paired traffic (the bystanders) while one client of
// worker 0 attacks the node for the traffic's duration: it asks for
// verification codes that cost an SMS and for link codes over fresh
// connections from a few source addresses, and floods SENDs from one
// account. The report shows what the attack got and what was refused,
// by error code and, with an admin endpoint, by the server's limit; the
// bystanders' messages are verified as in pairs.
//
// With --spawn the node counts the log sender's codes as SMS and applies
// the per-address limits to loopback (parleyd --count-log-codes
// --limit-loopback), as a production node does to its clients.
var abuseScenario = Scenario{
	Name:    "abuse",
	Summary: "one client floods REQUEST_CODE, LINK_REQUEST and SEND beside paired traffic; refusals by code and by limit",
	Steps: func(cfg *Config) []Step {
		var traffic trafficRun
		return []Step{
			stepRegister(true),
			stepConnect("connect", nil, 0),
			{
				Name: "attack",
				Worker: func(ctx context.Context, w *Worker) error {
					cfg := &w.spec.Config
					traffic.start(ctx, w, planTraffic(cfg, cfg.Connections, cfg.Duration), cfg.Warmup)
					if w.spec.Index == 0 {
						if err := w.attack(ctx, cfg.Duration); err != nil {
							return err
						}
					}
					traffic.wait()
					return nil
				},
				Timed:       true,
				MeasureFrom: true,
			},
			stepDrain(),
			stepClose(),
		}
	},
}

// The attack's shape: source addresses (127.0.1.x for codes, 127.0.2.x
// for link requests, none of them a worker's), requests per connection
// (one over the server's 3 per connection), new connections per second,
// and the most SENDs per second and in flight. The pacing keeps the
// attacker's own CPU (a TLS handshake per connection) from being what
// the bystanders feel on a shared machine.
const (
	attackCodeAddrs   = 16
	attackLinkAddrs   = 4
	attackPerConn     = 4
	attackConnsPerSec = 20
	attackSendRate    = 5000
	attackInFlight    = 100
	attackAnswerWait  = 5 * time.Second
	// abuseConnsPerIP is the per-address connection and handshake cap of
	// a node spawned for an abuse run: its per-address limits apply to
	// loopback, and a worker's devices all come from one address.
	abuseConnsPerIP = 1 << 20
)

// attack floods the node for d from one client, as abuseScenario says,
// and counts every request and its answer in w.stats.attack.
func (w *Worker) attack(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	attacker := newDevice(w, w.spec.Config.Connections+w.spec.Index) // an account of its own
	if err := w.registerOn(ctx, []*device{attacker}); err != nil {
		return fmt.Errorf("abuse: register the attacker: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		w.attackRequests(ctx, "REQUEST_CODE", "127.0.1.", attackCodeAddrs, func(i int) ([]byte, error) {
			return codec.AppendProto(nil, protocol.KindRequestCode, &pb.RequestCode{Rid: uint32(i%attackPerConn + 1), Phone: attackPhone(w.spec.RunID, i), Version: protocol.Version})
		})
	})
	wg.Go(func() {
		w.attackRequests(ctx, "LINK_REQUEST", "127.0.2.", attackLinkAddrs, func(i int) ([]byte, error) {
			return codec.AppendProto(nil, protocol.KindLinkRequest, &pb.LinkRequest{Rid: uint32(i%attackPerConn + 1), Version: protocol.Version, DeviceName: "attack"})
		})
	})
	wg.Go(func() { w.attackSends(ctx, attacker) })
	wg.Wait()
	return nil
}

// attackPhone is the i-th number the attack asks a code for: every other
// one in a single 5-digit prefix (+19000, as SMS pumping works a premium
// range), the rest spread over 8,000 prefixes. None is a test number
// (+1999 by default), so each would cost an SMS.
func attackPhone(runID string, i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("+19000%s%04d", runID, i/2%10_000)
	}
	return fmt.Sprintf("+1%04d%s%04d", 1000+i/2%8000, runID, i/2/8000%10_000)
}

// attackRequests opens attackConnsPerSec connections a second, each from
// the next of addrs source addresses prefix+1 …, and pipelines
// attackPerConn requests of kind (frame(i) for the i-th) on each, until
// ctx ends; it counts each answer by outcome.
func (w *Worker) attackRequests(ctx context.Context, kind, prefix string, addrs int, frame func(i int) ([]byte, error)) {
	tick := time.NewTicker(time.Second / attackConnsPerSec)
	defer tick.Stop()
	for i := 0; ; i += attackPerConn {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var buf []byte
		for k := range attackPerConn {
			b, err := frame(i + k)
			if err != nil {
				return
			}
			buf = append(buf, b...)
		}
		src := fmt.Sprintf("%s%d", prefix, 1+i/attackPerConn%addrs)
		w.attackConn(ctx, kind, src, buf, attackPerConn)
	}
}

// attackConn sends buf (n requests) on a new connection from src and
// counts the n requests and their answers.
func (w *Worker) attackConn(ctx context.Context, kind, src string, buf []byte, n int) {
	tc := w.attackDial(ctx, kind, src, buf)
	if tc == nil {
		return
	}
	for range n {
		w.stats.countAttack(kind, "sent")
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(attackAnswerWait))
	r := codec.NewReader(tc, protocol.MaxFrameBody, nil)
	for left := n; left > 0; {
		f, err := r.ReadFrame()
		if err != nil {
			for range left {
				w.stats.countAttack(kind, "unanswered")
			}
			return
		}
		switch f.Kind {
		case protocol.KindCodeSent, protocol.KindLinkCode:
			w.stats.countAttack(kind, f.Kind.String())
			left--
		case protocol.KindError:
			var e pb.Error
			_ = codec.ParseProto(f.Body, &e)
			w.stats.countAttack(kind, codeName(e.Code))
			left--
		}
	}
}

// attackDial opens a TLS connection from the source address src (""
// the worker's) and writes first on it; it returns nil, counted as a
// failed connection of kind unless the attack is over, if it cannot.
func (w *Worker) attackDial(ctx context.Context, kind, src string, first []byte) *tls.Conn {
	d := *w.dialer
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	d.Timeout = attackAnswerWait
	nc, err := d.DialContext(ctx, "tcp", w.spec.Addr)
	if err == nil {
		tc := tls.Client(nc, w.tlsConfig)
		stop := context.AfterFunc(ctx, func() { _ = tc.SetDeadline(time.Now()) })
		_, err = tc.Write(first)
		if stop() && err == nil {
			return tc
		}
		tc.Close()
	}
	if ctx.Err() == nil {
		w.stats.countAttack(kind, "connection failed")
	}
	return nil
}

// attackSends logs the attacker in and sends 20-byte messages to itself
// at up to attackSendRate a second with up to attackInFlight unanswered,
// until ctx ends; then it waits a little for the last answers.
func (w *Worker) attackSends(ctx context.Context, a *device) {
	const kind = "SEND"
	login, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: a.user, Device: a.id, Credential: a.cred})
	tc := w.attackDial(ctx, kind, "", login)
	if tc == nil {
		return
	}
	defer tc.Close()
	slots := make(chan struct{}, attackInFlight)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		r := codec.NewReader(tc, protocol.MaxFrameBody, w.dec)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			switch f.Kind {
			case protocol.KindSent:
				w.stats.countAttack(kind, "SENT")
			case protocol.KindError:
				var e pb.Error
				_ = codec.ParseProto(f.Body, &e)
				w.stats.countAttack(kind, codeName(e.Code))
				if e.Cmid == 0 {
					return // the connection closes
				}
			default:
				continue // LOGIN_OK, the attacker's own messages …
			}
			select {
			case <-slots:
			default:
			}
		}
	}()
	const perTick = attackSendRate / 100
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	body := make([]byte, bodyHeader)
	var buf []byte
	cmid := uint64(0)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-answered:
			break loop
		case <-tick.C:
		}
		buf = buf[:0]
		for range perTick {
			select {
			case slots <- struct{}{}:
			default:
				continue
			}
			cmid++
			buf = codec.AppendSend(buf, codec.Send{To: a.user, CMID: cmid, Body: body})
			w.stats.countAttack(kind, "sent")
		}
		if len(buf) > 0 {
			if _, err := tc.Write(buf); err != nil {
				break
			}
		}
	}
	for end := time.Now().Add(attackAnswerWait); len(slots) > 0 && time.Now().Before(end); {
		select {
		case <-answered:
			end = time.Now()
		case <-time.After(10 * time.Millisecond):
		}
	}
	for range len(slots) {
		w.stats.countAttack(kind, "unanswered")
	}
}

// AbuseResult is what an abuse run's attack did and met.
type AbuseResult struct {
	// Requests counts the attack's requests by kind (REQUEST_CODE,
	// LINK_REQUEST, SEND) and outcome: "sent", the answer's frame kind
	// (CODE_SENT, LINK_CODE, SENT) or error code (RATE_LIMITED …),
	// "unanswered" or "connection failed".
	Requests map[string]map[string]int64 `json:"requests"`
	// ServerRefusals counts what the server's rate limits refused during
	// the attack step, by limit (parley_rate_limited_total); empty
	// without an admin endpoint.
	ServerRefusals map[string]int64 `json:"server_refusals,omitempty"`
}

// assembleAbuse fills in r.Abuse for an abuse run.
func (c *coordinator) assembleAbuse() {
	if c.cfg.Scenario != abuseScenario.Name {
		return
	}
	a := &AbuseResult{Requests: map[string]map[string]int64{}}
	for k, v := range c.res.Counters.Attack {
		kind, outcome, _ := strings.Cut(k, " ")
		if a.Requests[kind] == nil {
			a.Requests[kind] = map[string]int64{}
		}
		a.Requests[kind][outcome] += v
	}
	const metric = `parley_rate_limited_total{limit="`
	for k, v := range c.toSrv {
		if limit, ok := strings.CutPrefix(k, metric); ok {
			if n := int64(v - c.fromSrv[k]); n > 0 {
				if a.ServerRefusals == nil {
					a.ServerRefusals = map[string]int64{}
				}
				a.ServerRefusals[strings.TrimSuffix(limit, `"}`)] = n
			}
		}
	}
	c.res.Abuse = a
}

// writeText writes an abuse run's part of the report.
func (a *AbuseResult) writeText(w io.Writer) {
	fmt.Fprintf(w, "attack from one client (codes from %d addresses, link requests from %d, %d per connection, %d connections/s; SENDs from one account at up to %d/s):\n",
		attackCodeAddrs, attackLinkAddrs, attackPerConn, attackConnsPerSec, attackSendRate)
	for _, kind := range []string{"REQUEST_CODE", "LINK_REQUEST", "SEND"} {
		out := a.Requests[kind]
		if out == nil {
			continue
		}
		fmt.Fprintf(w, "  %-12s %d sent: %s\n", kind, out["sent"], countsText(out, "sent"))
	}
	if len(a.ServerRefusals) > 0 {
		fmt.Fprintf(w, "  refused by the server's limits: %s\n", countsText(a.ServerRefusals, ""))
	}
}

// countsText lists counts as "NAME n, …", largest first, leaving out skip.
func countsText(m map[string]int64, skip string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != skip {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
