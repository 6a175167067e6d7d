package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

func TestMain(m *testing.M) {
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

func startNode(t *testing.T, tweak func(*node.Config)) *testNode {
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

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// rawClient speaks frames over TLS with no SDK in between, so tests can
// send anything.
type rawClient struct {
	t       *testing.T
	conn    net.Conn
	r       *codec.Reader
	pending []codec.Frame // frames unpacked from a Batch
	dec     *codec.Decompressor
	rid     uint32
}

func dial(t *testing.T, n *testNode) *rawClient {
	t.Helper()
	var conn net.Conn
	var err error
	if n.cfg.Plaintext {
		conn, err = net.Dial("tcp", n.Addr().String())
	} else {
		conn, err = tls.Dial("tcp", n.Addr().String(), &tls.Config{
			InsecureSkipVerify: true, // the test checks the fingerprint below
			MinVersion:         tls.VersionTLS13,
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		got := node.Fingerprint(tc.ConnectionState().PeerCertificates[0].Raw)
		if got != n.Fingerprint() {
			t.Fatalf("server certificate %s, want %s", got, n.Fingerprint())
		}
	}
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, conn: conn, dec: dec, r: codec.NewReader(conn, protocol.MaxFrameBody, dec)}
	t.Cleanup(func() { conn.Close(); dec.Close() })
	return c
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) send(k protocol.Kind, m proto.Message) {
	c.t.Helper()
	b, err := codec.AppendProto(nil, k, m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(b)
}

func (c *rawClient) nextRID() uint32 { c.rid++; return c.rid }

// next returns the next frame (unpacking batches), or an error at close.
func (c *rawClient) next(timeout time.Duration) (codec.Frame, error) {
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f, nil
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	f, err := c.r.ReadFrame()
	if err != nil {
		return f, err
	}
	body := append([]byte(nil), f.Body...)
	if f.Kind == protocol.KindBatch {
		for rest := body; len(rest) > 0; {
			inner, r, err := codec.NextFrame(rest, protocol.MaxFrameBody)
			if err != nil {
				c.t.Fatalf("bad batch: %v", err)
			}
			c.pending = append(c.pending, inner)
			rest = r
		}
		return c.next(timeout)
	}
	f.Body = body
	return f, nil
}

// expect reads frames until one of kind k, failing on anything else but
// the kinds in skip.
func (c *rawClient) expect(k protocol.Kind, skip ...protocol.Kind) codec.Frame {
	c.t.Helper()
	for {
		f, err := c.next(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %v: %v", k, err)
		}
		if f.Kind == k {
			return f
		}
		ok := false
		for _, s := range skip {
			ok = ok || s == f.Kind
		}
		if !ok {
			c.t.Fatalf("waiting for %v, got %v: % x", k, f.Kind, f.Body)
		}
	}
}

func (c *rawClient) expectProto(k protocol.Kind, m proto.Message, skip ...protocol.Kind) {
	c.t.Helper()
	if err := codec.ParseProto(c.expect(k, skip...).Body, m); err != nil {
		c.t.Fatal(err)
	}
}

// expectError reads an Error frame and checks its code.
func (c *rawClient) expectError(code protocol.Code) *pb.Error {
	c.t.Helper()
	var e pb.Error
	c.expectProto(protocol.KindError, &e)
	if e.Code != code {
		c.t.Fatalf("error %v, want %v", e.Code, code)
	}
	return &e
}

// expectClosed checks the server closes the connection next.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	f, err := c.next(10 * time.Second)
	if err == nil {
		c.t.Fatalf("connection still open; got %v", f.Kind)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after 10s")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
		c.t.Logf("closed with %v", err)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// user is a registered device.
type user struct {
	phone  string
	id     uint64
	device uint32
	cred   []byte
}

// register registers phone on a fresh connection.
func register(t *testing.T, n *testNode, phone string) user {
	t.Helper()
	c := dial(t, n)
	rid := c.nextRID()
	c.send(protocol.KindRequestCode, &pb.RequestCode{Rid: rid, Phone: phone, Version: protocol.Version})
	var sent pb.CodeSent
	c.expectProto(protocol.KindCodeSent, &sent)
	if sent.Rid != rid || sent.CodeLength != 6 {
		t.Fatalf("CodeSent = %v", &sent)
	}
	c.send(protocol.KindVerify, &pb.Verify{Rid: c.nextRID(), Phone: phone, Code: n.codes.get(phone), DeviceName: "test"})
	var reg pb.Registered
	c.expectProto(protocol.KindRegistered, &reg)
	c.conn.Close()
	return user{phone: phone, id: reg.User, device: reg.Device, cred: reg.Credential}
}

// login opens a logged-in connection for u resuming after cursor.
func login(t *testing.T, n *testNode, u user, cursor uint64) (*rawClient, *pb.LoginOk) {
	t.Helper()
	c := dial(t, n)
	c.send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: u.id, Device: u.device, Credential: u.cred, Cursor: cursor})
	var ok pb.LoginOk
	c.expectProto(protocol.KindLoginOK, &ok)
	return c, &ok
}

// sendText sends a text and waits for Sent, returning the message id.
func (c *rawClient) sendText(to uint64, cmid uint64, text string) uint64 {
	c.t.Helper()
	c.write(codec.AppendSend(nil, codec.Send{To: to, CMID: cmid, Body: []byte(text)}))
	var s pb.Sent
	c.expectProto(protocol.KindSent, &s, protocol.KindMessage, protocol.KindReceipt, protocol.KindSynced)
	if s.Cmid != cmid {
		c.t.Fatalf("Sent cmid %d, want %d", s.Cmid, cmid)
	}
	return s.Id
}

// message reads the next Message entry, skipping Synced.
func (c *rawClient) message() codec.Message {
	c.t.Helper()
	m, err := codec.ParseMessage(c.expect(protocol.KindMessage, protocol.KindSynced).Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *rawClient) receipt() codec.Receipt {
	c.t.Helper()
	r, err := codec.ParseReceipt(c.expect(protocol.KindReceipt, protocol.KindSynced).Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

func (c *rawClient) ack(seq uint64) { c.write(codec.AppendAck(nil, seq)) }

func phone(i int) string { return fmt.Sprintf("+1555%07d", i) }
