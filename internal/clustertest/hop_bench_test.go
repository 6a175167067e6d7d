package clustertest_test

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/clustertest"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/wiretest"
)

// BenchmarkHop measures what a node link adds to a 1:1 text: one message
// at a time, the whole round — SEND, SENT, the MESSAGE at the recipient,
// its ACK, the delivered RECEIPT at the sender and its ACK — on a
// three-node cluster in this process, over TLS on loopback:
//
//   - home: sender and recipient homed on node 1, both connected to it
//     (no link crossed; what one node does);
//   - gateway: the same two homes, both clients connected to node 2 (every
//     frame crosses a link to node 1 and back: the extra hop);
//   - cross: sender homed on node 1 and connected to it, recipient homed
//     on node 2 and connected to it (the send is forwarded once, node to
//     node, and the receipt once back).
//
// Each runs twice: "fsync" as a node runs (every promise synced before
// its answer), and "nosync" with the storage's syncs off, where what is
// left is the work of the nodes and links themselves. ns/op is the
// round's mean wall time; p50-µs and p99-µs its quantiles;
// cpu-µs/op is the process's CPU time (user and system: the three nodes,
// etcd and both clients) per round.
func BenchmarkHop(b *testing.B) {
	for _, sync := range []bool{true, false} {
		name := "fsync"
		if !sync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			c := clustertest.Start(b, 3, func(_ uint32, cfg *node.Config) { cfg.Storage.NoSync = !sync })
			hops(b, c)
		})
	}
}

// hops runs BenchmarkHop's three cases on c.
func hops(b *testing.B, c *clustertest.Cluster) {
	cases := []struct {
		name             string
		fromHome, toHome uint32
		fromVia, toVia   uint32
	}{
		{"home", 1, 1, 1, 1},
		{"gateway", 1, 1, 2, 2},
		{"cross", 1, 2, 1, 2},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			from := login(b, c, c.Register(b, tc.fromHome, tc.fromVia), tc.fromVia)
			to := login(b, c, c.Register(b, tc.toHome, tc.toVia), tc.toVia)
			cred := to.user
			text := "twenty bytes of text"
			// One round before the clock starts: both sessions are synced
			// and the links are warm.
			round(from.cl, to.cl, cred.ID, 1, text)
			var rounds []time.Duration
			cmid := uint64(1)
			cpu0 := cpuTime(b)
			for b.Loop() {
				cmid++
				start := time.Now()
				round(from.cl, to.cl, cred.ID, cmid, text)
				rounds = append(rounds, time.Since(start))
			}
			cpu := cpuTime(b) - cpu0
			slices.Sort(rounds)
			q := func(p float64) float64 { return float64(rounds[int(p*float64(len(rounds)-1))]) / 1e3 }
			b.ReportMetric(q(0.50), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(float64(cpu)/1e3/float64(len(rounds)), "cpu-µs/op")
		})
	}
}

// session is a logged-in raw client.
type session struct {
	cl   *wiretest.Client
	user wiretest.User
}

// login connects u through node via and logs it in.
func login(b testing.TB, c *clustertest.Cluster, u wiretest.User, via uint32) session {
	b.Helper()
	n := c.Node(via)
	cl := wiretest.Dial(b, n.Addr().String(), n.Fingerprint())
	b.Cleanup(func() { cl.Conn.Close() })
	cl.Login(u, 0)
	return session{cl: cl, user: u}
}

// round sends one text from from to user to and waits for every leg:
// SENT, the MESSAGE (acknowledged), the delivered RECEIPT (acknowledged).
func round(from, to *wiretest.Client, toID, cmid uint64, text string) {
	from.SendText(toID, cmid, text)
	m := to.Message()
	to.Ack(m.Seq)
	r := from.Receipt()
	from.Ack(r.Seq)
}

// cpuTime returns the process's user and system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
