package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/clock"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// This file holds the test harness: a scripted fake server that speaks
// frames over TLS on loopback, a manual clock, and helpers to drive a
// Client. The fake does what a test tells it, frame by frame; it has no
// logic of its own beyond answering Ping.

// waitLong bounds every wait for something that should happen: generous,
// since the machine may be loaded; a passing test never waits for it.
const waitLong = 20 * time.Second

// testSecret is the credential of testCreds.
var testCreds = Credentials{User: 42, Device: 3, Secret: bytes.Repeat([]byte{7}, protocol.CredentialLen)}

// fakeServer accepts connections and hands them to the test in order.
type fakeServer struct {
	ln          net.Listener
	addr        string
	fingerprint string
	pool        *x509.CertPool // trusts the server's certificate
	conns       chan *fakeConn
	wg          sync.WaitGroup
	mu          sync.Mutex
	all         []*fakeConn
}

// newFakeServer starts a TLS 1.3 listener on 127.0.0.1 with a fresh
// self-signed certificate, or a plain TCP one if plaintext.
func newFakeServer(t *testing.T, plaintext bool) *fakeServer {
	t.Helper()
	cert, der := selfSigned(t)
	var ln net.Listener
	var err error
	if plaintext {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS13,
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	s := &fakeServer{
		ln:          ln,
		addr:        ln.Addr().String(),
		fingerprint: Fingerprint(der),
		pool:        pool,
		conns:       make(chan *fakeConn, 64),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fc := newFakeConn(c, &s.wg)
			s.mu.Lock()
			s.all = append(s.all, fc)
			s.mu.Unlock()
			s.conns <- fc
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, fc := range s.all {
			_ = fc.c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// accept returns the next connection the client made.
func (s *fakeServer) accept(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-s.conns:
		fc.t = t
		return fc
	case <-time.After(waitLong):
		t.Fatal("fake server: no connection")
		return nil
	}
}

// selfSigned returns a certificate for 127.0.0.1 and localhost, signed by
// its own key, and its DER encoding.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "parley test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, der
}

// fakeConn is the server side of one client connection. A goroutine reads
// frames into a channel, answering Ping itself while autoPong is set.
type fakeConn struct {
	t        *testing.T
	c        net.Conn
	frames   chan codec.Frame // closed when the connection ends
	pings    atomic.Int32
	autoPong atomic.Bool
	wmu      sync.Mutex
}

func newFakeConn(c net.Conn, wg *sync.WaitGroup) *fakeConn {
	fc := &fakeConn{c: c, frames: make(chan codec.Frame, 1024)}
	fc.autoPong.Store(true)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(fc.frames)
		r := codec.NewReader(c, protocol.MaxClientFrameBody, nil)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			f.Body = bytes.Clone(f.Body)
			if f.Kind == protocol.KindPing {
				fc.pings.Add(1)
				if fc.autoPong.Load() {
					fc.writeRaw(codec.AppendFrame(nil, protocol.KindPong, nil))
					continue
				}
			}
			select {
			case fc.frames <- f:
			default: // a test that stopped reading; drop
			}
		}
	}()
	return fc
}

// next returns the next frame from the client.
func (fc *fakeConn) next() codec.Frame {
	fc.t.Helper()
	select {
	case f, ok := <-fc.frames:
		if !ok {
			fc.t.Fatal("fake conn: closed while waiting for a frame")
		}
		return f
	case <-time.After(waitLong):
		fc.t.Fatal("fake conn: no frame")
	}
	return codec.Frame{}
}

// expect returns the next frame, failing the test unless it is of kind k.
func (fc *fakeConn) expect(k protocol.Kind) codec.Frame {
	fc.t.Helper()
	f := fc.next()
	if f.Kind != k {
		fc.t.Fatalf("fake conn: got %v frame, want %v", f.Kind, k)
	}
	return f
}

// expectProto reads a frame of kind k into m.
func (fc *fakeConn) expectProto(k protocol.Kind, m proto.Message) {
	fc.t.Helper()
	if err := codec.ParseProto(fc.expect(k).Body, m); err != nil {
		fc.t.Fatal(err)
	}
}

// expectAck returns the seq of the next frame, which must be an Ack.
func (fc *fakeConn) expectAck() uint64 {
	fc.t.Helper()
	seq, err := codec.ParseAck(fc.expect(protocol.KindAck).Body)
	if err != nil {
		fc.t.Fatal(err)
	}
	return seq
}

// expectClosed waits until the client has closed the connection,
// returning the frames it sent meanwhile.
func (fc *fakeConn) expectClosed() []codec.Frame {
	fc.t.Helper()
	var got []codec.Frame
	deadline := time.After(waitLong)
	for {
		select {
		case f, ok := <-fc.frames:
			if !ok {
				return got
			}
			got = append(got, f)
		case <-deadline:
			fc.t.Fatal("fake conn: client did not close")
		}
	}
}

func (fc *fakeConn) writeRaw(b []byte) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_, err := fc.c.Write(b)
	return err
}

// write sends raw frame bytes to the client.
func (fc *fakeConn) write(b []byte) {
	fc.t.Helper()
	if err := fc.writeRaw(b); err != nil {
		fc.t.Fatalf("fake conn: write: %v", err)
	}
}

// writeProto sends a frame of kind k with body m.
func (fc *fakeConn) writeProto(k protocol.Kind, m proto.Message) {
	fc.t.Helper()
	b, err := codec.AppendProto(nil, k, m)
	if err != nil {
		fc.t.Fatal(err)
	}
	fc.write(b)
}

// login reads the client's Login and answers LoginOk with the given
// window, heartbeat and resume cursor. It returns the Login.
func (fc *fakeConn) login(window, heartbeatS uint32, cursor uint64) *pb.Login {
	fc.t.Helper()
	var m pb.Login
	fc.expectProto(protocol.KindLogin, &m)
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{ServerTimeMs: 1_750_000_000_000, HeartbeatS: heartbeatS, Window: window, Cursor: cursor})
	return &m
}

// message returns a Message entry frame.
func message(seq, id, from uint64, body string) []byte {
	return codec.AppendEntry(nil, protocol.KindMessage, seq,
		codec.AppendMessageEntry(nil, codec.Message{ID: id, From: from, Body: []byte(body), FromDevice: 1}))
}

// receipt returns a Receipt entry frame.
func receipt(seq, peer uint64, typ pb.ReceiptType, upTo uint64) []byte {
	return codec.AppendEntry(nil, protocol.KindReceipt, seq,
		codec.AppendReceiptEntry(nil, codec.Receipt{Peer: peer, Type: typ, UpTo: upTo}))
}

// msgID returns a message id for offset ms after the id epoch.
func msgID(ms, n uint64) uint64 { return ms<<protocol.MessageIDTimeShift | n }

// testConfig returns a Config for srv with fast backoff and no logging.
func testConfig(srv *fakeServer) Config {
	return Config{
		Addr:        srv.addr,
		Fingerprint: srv.fingerprint,
		DialTimeout: waitLong,
		BackoffMin:  time.Millisecond,
		BackoffMax:  10 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// testClient is a Client started with Run, closed at cleanup.
type testClient struct {
	*Client
	t    *testing.T
	errc chan error // Run's result
}

// startClient creates a client for testCreds on store (nil: a new
// MemoryStore) and runs it.
func startClient(t *testing.T, cfg Config, store Store) *testClient {
	t.Helper()
	return startClientAs(t, cfg, testCreds, store)
}

// startClientAs is startClient for other credentials.
func startClientAs(t *testing.T, cfg Config, creds Credentials, store Store) *testClient {
	t.Helper()
	c, err := New(cfg, creds, store)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testClient{Client: c, t: t, errc: make(chan error, 1)}
	go func() { tc.errc <- c.Run(context.Background()) }()
	t.Cleanup(func() { _ = c.Close() })
	return tc
}

// next returns the next event.
func (tc *testClient) next() Event {
	tc.t.Helper()
	select {
	case ev, ok := <-tc.Events():
		if !ok {
			tc.t.Fatal("events closed")
		}
		return ev
	case <-time.After(waitLong):
		tc.t.Fatal("no event")
	}
	return nil
}

// waitFor returns the next event of type T, skipping others.
func waitFor[T Event](tc *testClient) T {
	tc.t.Helper()
	for {
		if ev, ok := tc.next().(T); ok {
			return ev
		}
	}
}

// runErr returns Run's result.
func (tc *testClient) runErr() error {
	tc.t.Helper()
	select {
	case err := <-tc.errc:
		return err
	case <-time.After(waitLong):
		tc.t.Fatal("Run did not return")
	}
	return nil
}

// manualClock is a Clock that moves only when Advance is called.
type manualClock = clock.Manual

func newManualClock() *manualClock {
	return clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// appendProtoFrame returns a frame of kind k with body m.
func appendProtoFrame(k protocol.Kind, m proto.Message) ([]byte, error) {
	return codec.AppendProto(nil, k, m)
}
