package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol/pb"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(memWorkerEnv); spec != "" {
		runMemWorker(spec)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// gnet's package-level goroutine pool (ants) lives for the process.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// codes captures verification codes.
type codes struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *codes) SendCode(phone, code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[phone] = code
}

func (c *codes) get(phone string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[phone]
}

// testNode is a node started for one test.
type testNode struct {
	*node.Node
	codes *codes
	cfg   node.Config
}

func startNode(t testing.TB, tweak func(*node.Config)) *testNode {
	t.Helper()
	cs := &codes{}
	cfg := node.Config{
		DataDir: t.TempDir(),
		Listen:  "127.0.0.1:0",
		Shards:  2,
		Codes:   cs,
		Logger:  testLogger(t),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, codes: cs, cfg: cfg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return tn
}

func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// dial connects to n.
func dial(t testing.TB, n *testNode) *wiretest.Client {
	t.Helper()
	return wiretest.Dial(t, n.Addr().String(), n.Fingerprint())
}

// register registers phone on a fresh connection.
func register(t testing.TB, n *testNode, phone string) wiretest.User {
	t.Helper()
	c := dial(t, n)
	defer c.Conn.Close()
	return c.Register(phone, n.codes.get)
}

// login opens a logged-in connection for u resuming after cursor.
func login(t testing.TB, n *testNode, u wiretest.User, cursor uint64) (*wiretest.Client, *pb.LoginOk) {
	t.Helper()
	c := dial(t, n)
	return c, c.Login(u, cursor)
}

func phone(i int) string { return fmt.Sprintf("+1555%07d", i) }
