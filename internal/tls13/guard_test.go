package tls13

// Guard tests for the crypto/tls behaviour this package relies on. They
// run on every Go upgrade; if one fails, the design's assumptions about
// crypto/tls no longer hold and the package must change before the
// toolchain does.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// loopConn is a gnet.Conn stand-in for driving a handshake without gnet:
// bytes read from the TCP connection sock land in in; AsyncWrite writes to
// sock; Wake and new input signal events. Only the methods the handshake
// uses are implemented.
type loopConn struct {
	gnet.Conn
	sock   net.Conn
	events chan struct{}

	mu     sync.Mutex
	in     []byte
	writes int // AsyncWrite calls
}

func newLoopConn(sock net.Conn) *loopConn {
	c := &loopConn{sock: sock, events: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := sock.Read(buf)
			c.mu.Lock()
			c.in = append(c.in, buf[:n]...)
			c.mu.Unlock()
			c.signal()
			if err != nil {
				return
			}
		}
	}()
	return c
}

func (c *loopConn) signal() {
	select {
	case c.events <- struct{}{}:
	default:
	}
}

func (c *loopConn) InboundBuffered() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.in) }
func (c *loopConn) Peek(n int) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > len(c.in) {
		return nil, io.ErrShortBuffer
	}
	return c.in[:n:n], nil
}
func (c *loopConn) Discard(n int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in = c.in[n:]
	return n, nil
}
func (c *loopConn) AsyncWrite(b []byte, _ gnet.AsyncCallback) error {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	_, err := c.sock.Write(b)
	return err
}
func (c *loopConn) Wake(gnet.AsyncCallback) error { c.signal(); return nil }
func (c *loopConn) LocalAddr() net.Addr           { return c.sock.LocalAddr() }
func (c *loopConn) RemoteAddr() net.Addr          { return c.sock.RemoteAddr() }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// recordingConn keeps a copy of every write.
type recordingConn struct {
	holdConn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.holdConn.Write(p)
}

// Guard (a): crypto/tls, fed through the one-record-per-Read adapter,
// finishes the server handshake on the record holding the client's
// Finished without asking for more, so an application-data record the
// client pipelined behind it is left untouched in gnet's buffer.
func TestGuardPipelinedRecordUntouched(t *testing.T) {
	clientSock, serverSock := tcpPair(t)
	lc := newLoopConn(serverSock)
	srv, err := NewServer(Config{TLS: serverTLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	rc := &recordingConn{holdConn: holdConn{Conn: clientSock}}
	client := tls.Client(rc, clientTLSConfig())
	clientDone := make(chan error, 1)
	msg := []byte("pipelined right behind the Finished")
	go func() {
		if err := client.Handshake(); err != nil {
			clientDone <- err
			return
		}
		if _, err := client.Write(msg); err != nil {
			clientDone <- err
			return
		}
		clientDone <- rc.flush() // Finished and the data record, one segment
	}()

	h := newHandshake(srv, lc, time.Now())
	if ok, err := srv.claim(h); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if err := srv.start(h); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		select {
		case <-lc.events:
		case <-time.After(10 * time.Second):
			t.Fatal("handshake stalled")
		}
		if done, err = h.push(lc); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-clientDone; err != nil {
		t.Fatal(err)
	}
	rest, err := h.result()
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	h.mu.Lock()
	want := h.want
	h.mu.Unlock()
	if len(rest) != 0 || h.recLeft != 0 || want {
		t.Fatalf("crypto/tls left %d bytes, stopped %d bytes into a record, asked for more: %v", len(rest), h.recLeft, want)
	}
	appRecord := rc.writes[len(rc.writes)-1]
	if appRecord[0] != typeApplicationData {
		t.Fatalf("last client write is not an application data record: % x", appRecord[:5])
	}
	waitFor(t, "the pipelined record", func() bool { return lc.InboundBuffered() >= len(appRecord) })
	if got, _ := lc.Peek(lc.InboundBuffered()); !bytes.Equal(got, appRecord) {
		t.Fatalf("buffer holds % x...\nwant the pipelined record % x...", got[:min(16, len(got))], appRecord[:16])
	}
	// And it is the first record under the client's application key.
	tc := srv.NewConn()
	tc.hs = h
	tc.install()
	plain, err := tc.openRecord(nil, appRecord)
	if err != nil || !bytes.Equal(plain, msg) {
		t.Fatalf("pipelined record: %q, %v", plain, err)
	}
}

// keyLogLines returns the NSS key log lines written to w, by label.
func keyLogLines(t *testing.T, log string) map[string][]byte {
	t.Helper()
	secrets := map[string][]byte{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || len(f[1]) != 64 {
			t.Fatalf("key log line %q is not LABEL <client_random> <secret>", sc.Text())
		}
		secret, err := hex.DecodeString(f[2])
		if err != nil {
			t.Fatal(err)
		}
		secrets[f[0]] = secret
	}
	return secrets
}

// writeCounter counts Write calls and keeps what was written.
type writeCounter struct {
	mu    sync.Mutex
	calls int
	buf   bytes.Buffer
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	return w.buf.Write(p)
}

// stdHandshake runs a crypto/tls handshake between a client and a server
// over net.Pipe, with the server config finished by configure. It returns
// the client's key log and every byte the server wrote until its
// HandshakeContext returned, and how many it wrote in the 50 ms after.
func stdHandshake(t *testing.T, configure func(*tls.Config)) (clientLog string, suite uint8, serverOut []byte, after int) {
	t.Helper()
	cs, ss := net.Pipe()
	defer cs.Close()
	defer ss.Close()
	clientKeys := &writeCounter{}
	ccfg := clientTLSConfig()
	ccfg.KeyLogWriter = clientKeys
	// A client that would resume: without a cache it does not offer
	// psk_dhe_ke, and a server sends no tickets whatever its setting.
	ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	scfg := serverTLSConfig()
	configure(scfg)
	out := &countingConn{Conn: ss}
	server := tls.Server(out, scfg)

	errc := make(chan error, 1)
	client := tls.Client(cs, ccfg)
	go func() {
		err := client.Handshake()
		// Keep reading so that server writes (tickets, if any) never block.
		go io.Copy(io.Discard, client)
		errc <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := server.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	serverOut = out.snapshot()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	suite = suiteByID(server.ConnectionState().CipherSuite)
	return clientKeys.buf.String(), suite, serverOut, len(out.snapshot()) - len(serverOut)
}

// countingConn keeps a copy of what is written.
type countingConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, p...)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) snapshot() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out)
}

// Guard (b): crypto/tls's KeyLogWriter delivers CLIENT_TRAFFIC_SECRET_0
// and SERVER_TRAFFIC_SECRET_0 as NSS key log lines, one line per Write,
// which keyLogWriter parses into secrets of the suite's hash length.
func TestGuardKeyLogFormat(t *testing.T) {
	h := &handshake{}
	serverKeys := &writeCounter{}
	clientLog, _, _, _ := stdHandshake(t, func(c *tls.Config) {
		c.MinVersion, c.SessionTicketsDisabled = tls.VersionTLS13, true
		c.KeyLogWriter = io.MultiWriter(serverKeys, (*keyLogWriter)(h))
	})
	secrets := keyLogLines(t, clientLog)
	for _, label := range []string{"CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} {
		if len(secrets[label]) != 32 {
			t.Errorf("%s: %d-byte secret, want 32 (SHA-256 suites)", label, len(secrets[label]))
		}
	}
	if !bytes.Equal(h.clientSecret, secrets["CLIENT_TRAFFIC_SECRET_0"]) || !bytes.Equal(h.serverSecret, secrets["SERVER_TRAFFIC_SECRET_0"]) {
		t.Errorf("keyLogWriter parsed %x / %x, client logged %x / %x",
			h.clientSecret, h.serverSecret, secrets["CLIENT_TRAFFIC_SECRET_0"], secrets["SERVER_TRAFFIC_SECRET_0"])
	}
	if lines := strings.Count(serverKeys.buf.String(), "\n"); serverKeys.calls != lines || lines < 4 {
		t.Errorf("server key log: %d lines in %d writes, want one line per write", lines, serverKeys.calls)
	}
	if !h.finished {
		t.Error("SERVER_TRAFFIC_SECRET_0 did not mark the server Finished")
	}
	for _, bad := range []string{"CLIENT_TRAFFIC_SECRET_0\n", "CLIENT_TRAFFIC_SECRET_0 00 zz\n", "SERVER_TRAFFIC_SECRET_0 00 " + strings.Repeat("ab", 49) + "\n"} {
		if _, err := (*keyLogWriter)(&handshake{}).Write([]byte(bad)); err == nil {
			t.Errorf("keyLogWriter accepted %q", bad)
		}
	}
}

// serverAppKeyUsed reports whether any record in out was protected with
// something other than the server handshake key: it decrypts every
// encrypted record under SERVER_HANDSHAKE_TRAFFIC_SECRET and checks that
// each holds handshake messages, the last of them a Finished.
func serverAppKeyUsed(t *testing.T, suite uint8, out []byte, clientLog string) error {
	t.Helper()
	secret := keyLogLines(t, clientLog)["SERVER_HANDSHAKE_TRAFFIC_SECRET"]
	s := &suites[suite]
	if len(secret) != s.hashLen {
		return fmt.Errorf("no %d-byte server handshake secret in the key log", s.hashLen)
	}
	tc := readyConn(testServer(), suite, secret, secret)
	var lastType byte
	for len(out) > 0 {
		n := recordHeaderLen + (int(out[3])<<8 | int(out[4]))
		rec := out[:n]
		out = out[n:]
		if rec[0] != typeApplicationData {
			continue // ServerHello, change_cipher_spec
		}
		// Decrypt by hand: openRecord only accepts application data and
		// KeyUpdate.
		plain, err := tc.in.cipher(s).Open(nil, tc.in.nonce(&tc.nonceBuf), rec[recordHeaderLen:], rec[:recordHeaderLen])
		if err != nil {
			return fmt.Errorf("record %d is not under the server handshake key", tc.in.seq)
		}
		tc.in.seq++
		plain = bytes.TrimRight(plain, "\x00")
		if plain[len(plain)-1] != typeHandshake {
			return fmt.Errorf("record %d holds content type %d", tc.in.seq, plain[len(plain)-1])
		}
		for msgs := plain[:len(plain)-1]; len(msgs) >= 4; {
			lastType = msgs[0]
			msgs = msgs[4+(int(msgs[1])<<16|int(msgs[2])<<8|int(msgs[3])):]
		}
	}
	if lastType != 20 {
		return fmt.Errorf("the server's last handshake message is type %d, not Finished", lastType)
	}
	return nil
}

// Guard (c): the server's writes under its application key during the
// handshake, which the record layer's sequence numbers must follow. With
// SessionTicketsDisabled everything the server writes up to the return of
// HandshakeContext is under its handshake key (its application key, and
// so our sequence number 0, is unused). With tickets, as NewServer
// configures it, it writes exactly one record under the application key,
// holding one NewSessionTicket, last in its first flight, and appRecords
// counts it. In both cases it writes nothing after HandshakeContext
// returns.
func TestGuardServerWritesUnderAppKey(t *testing.T) {
	clientLog, suite, out, after := stdHandshake(t, func(c *tls.Config) {
		forceSettings(c)
		c.SessionTicketsDisabled = true
	})
	if err := serverAppKeyUsed(t, suite, out, clientLog); err != nil {
		t.Error(err)
	}
	if n, err := appRecords(&suites[suite], keyLogLines(t, clientLog)["SERVER_TRAFFIC_SECRET_0"], out); n != 0 || err != nil {
		t.Errorf("tickets off: appRecords = %d, %v; want 0", n, err)
	}
	if after != 0 {
		t.Errorf("tickets off: the server wrote %d bytes after HandshakeContext returned", after)
	}

	srv, err := NewServer(Config{TLS: serverTLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	clientLog, suite, out, after = stdHandshake(t, func(c *tls.Config) {
		*c = *srv.configFor(&handshake{}) // our keys, tickets on
		c.KeyLogWriter = nil
	})
	// The check above sees the NewSessionTicket under the application key.
	if err := serverAppKeyUsed(t, suite, out, clientLog); err == nil {
		t.Error("tickets on: no record under the application key")
	}
	secret := keyLogLines(t, clientLog)["SERVER_TRAFFIC_SECRET_0"]
	n, err := appRecords(&suites[suite], secret, out)
	if n != 1 || err != nil {
		t.Fatalf("tickets on: appRecords = %d, %v; want 1 record under the application key", n, err)
	}
	var last []byte
	for rest := out; len(rest) > 0; {
		m := recordHeaderLen + (int(rest[3])<<8 | int(rest[4]))
		last, rest = rest[:m], rest[m:]
	}
	tc := readyConn(testServer(), suite, secret, secret)
	plain, err := tc.in.cipher(&suites[suite]).Open(nil, tc.in.nonce(&tc.nonceBuf), last[recordHeaderLen:], last[:recordHeaderLen])
	if err != nil {
		t.Fatalf("the last record is not the one under the application key: %v", err)
	}
	plain = bytes.TrimRight(plain, "\x00")
	if plain[len(plain)-1] != typeHandshake || plain[0] != 4 || 4+(int(plain[1])<<16|int(plain[2])<<8|int(plain[3])) != len(plain)-1 {
		t.Errorf("the record under the application key is not one NewSessionTicket: % x", plain[:min(8, len(plain))])
	}
	if after != 0 {
		t.Errorf("tickets on: the server wrote %d bytes after HandshakeContext returned", after)
	}
}

// TestAppRecordsRejectsStrayRecords: a record after the first one under
// the application key that does not open at the next sequence number, or
// that is not encrypted, is an error, not a miscount.
func TestAppRecordsRejectsStrayRecords(t *testing.T) {
	s := &suites[suiteAES128GCM]
	secret := bytes.Repeat([]byte{7}, s.hashLen)
	app := readyConn(testServer(), suiteAES128GCM, secret, secret)
	other := readyConn(testServer(), suiteAES128GCM, secret, bytes.Repeat([]byte{8}, s.hashLen))
	hs := other.Seal(nil, []byte("handshake-key record"))
	a0 := app.Seal(nil, []byte("ticket 0"))
	a1 := app.Seal(nil, []byte("ticket 1"))
	plain := []byte{20, 3, 3, 0, 1, 1} // change_cipher_spec
	for _, tt := range []struct {
		name string
		out  []byte
		want uint64
		ok   bool
	}{
		{"none", slices.Concat(plain, hs), 0, true},
		{"two", slices.Concat(plain, hs, a0, a1), 2, true},
		{"gap", slices.Concat(hs, a1), 0, true}, // seq 1 alone does not open at 0
		{"out of order", slices.Concat(hs, a0, hs), 0, false},
		{"plaintext after", slices.Concat(a0, plain), 0, false},
		{"partial", a0[:len(a0)-1], 0, false},
	} {
		n, err := appRecords(s, secret, tt.out)
		if n != tt.want || (err == nil) != tt.ok {
			t.Errorf("%s: appRecords = %d, %v; want %d, ok %v", tt.name, n, err, tt.want, tt.ok)
		}
	}
}

// Guard (d): crypto/tls clients accept our KeyUpdate(update_requested),
// answer with their own KeyUpdate (which Feed processes) and keep
// decrypting; and Seal's automatic rekeying after rekeyAfter records.
func TestGuardClientFollowsServerKeyUpdate(t *testing.T) {
	t.Run("requested", func(t *testing.T) {
		e := startEcho(t, Config{}, func(e *echoServer) { e.keyUpdate = true })
		conn := e.dial(t, nil, nil)
		for _, n := range []int{1, 100, maxPlaintext + 1, 5, 70000} {
			if err := echo(conn, randomBytes(n)); err != nil {
				t.Fatalf("%d bytes: %v", n, err)
			}
		}
	})
	t.Run("rekeyAfter", func(t *testing.T) {
		e := startEcho(t, Config{}, func(e *echoServer) { e.srv.rekeyAfter = 2 })
		conn := e.dial(t, nil, nil)
		for i := range 10 {
			if err := echo(conn, randomBytes(3*maxPlaintext+i)); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	})
}

// TestClientKeyUpdateRequested sends KeyUpdate(update_requested) from a
// client: crypto/tls cannot, so the client finishes its handshake with
// crypto/tls and then speaks through this package's record layer.
func TestClientKeyUpdateRequested(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	h := &handshake{}
	cfg := clientTLSConfig()
	cfg.KeyLogWriter = (*keyLogWriter)(h)
	// No cache: no ticket, whose record our client side would have to skip.
	cfg.ClientSessionCache = nil
	raw, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tconn := tls.Client(raw, cfg)
	if err := tconn.Handshake(); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	suite := suiteByID(tconn.ConnectionState().CipherSuite)
	client := readyConn(testServer(), suite, h.serverSecret, h.clientSecret)
	for round := range 3 {
		out := client.sendKeyUpdate(nil, true)
		want := fmt.Appendf(nil, "round %d", round)
		out = client.Seal(out, want)
		if _, err := raw.Write(out); err != nil {
			t.Fatal(err)
		}
		inSecret := client.in.secret
		c := &fakeConn{}
		var got []byte
		for len(got) < len(want) {
			buf := make([]byte, 4096)
			n, err := raw.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			c.in = append(c.in, buf[:n]...)
			if got, err = client.Feed(c, got); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("echo %q, want %q", got, want)
		}
		if client.in.secret == inSecret {
			t.Fatal("the server did not answer with a KeyUpdate")
		}
	}
}
