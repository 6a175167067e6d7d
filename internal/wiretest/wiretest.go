// Package wiretest is a raw Parley wire client for tests: it speaks frames
// over TLS (or plaintext) with no SDK logic in between, so a test can send
// anything, including what a real client never would, and check exactly
// what comes back.
//
// Threading: a Client belongs to one test goroutine; only Conn may be
// used from another (to write or close).
package wiretest

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Timeout is how long a Client waits for an expected frame.
const Timeout = 10 * time.Second

// Client is a raw connection to a server.
type Client struct {
	t       testing.TB
	Conn    net.Conn
	r       *codec.Reader
	pending []codec.Frame // frames unpacked from a Batch
	dec     *codec.Decompressor
	rid     uint32
}

// TLSConfig returns a TLS 1.3 client configuration that trusts exactly
// the certificate whose SHA-256 is fingerprint (hex), as a client pins a
// server ([S-5-4]).
func TLSConfig(fingerprint string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // checked against the fingerprint below
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != fingerprint {
				return fmt.Errorf("wiretest: server certificate %s, want %s", got, fingerprint)
			}
			return nil
		},
	}
}

// Dial connects to addr. With a fingerprint it speaks TLS 1.3 and checks
// the server certificate's SHA-256 against it; with "" it speaks
// plaintext.
func Dial(t testing.TB, addr, fingerprint string) *Client {
	t.Helper()
	return DialFrom(t, "", addr, fingerprint)
}

// DialFrom is Dial from the source address src, an IP address of this
// host such as 127.0.0.2 (any 127.0.0.x is local on Linux): the server
// sees the connection come from there. "" lets the system choose.
func DialFrom(t testing.TB, src, addr, fingerprint string) *Client {
	t.Helper()
	c, _ := dial(t, src, addr, tlsFor(fingerprint))
	return c
}

// DialConfig connects to addr speaking TLS with cfg (for example
// TLSConfig with a ClientSessionCache, to resume sessions), or plaintext
// when cfg is nil. With TLS the handshake is complete when it returns.
func DialConfig(t testing.TB, addr string, cfg *tls.Config) *Client {
	t.Helper()
	c, _ := dial(t, "", addr, cfg)
	return c
}

// DialConfigFrom is DialConfig from the source address src (see
// DialFrom): a device that moved to another network.
func DialConfigFrom(t testing.TB, src, addr string, cfg *tls.Config) *Client {
	t.Helper()
	c, _ := dial(t, src, addr, cfg)
	return c
}

// Counter counts the bytes a connection moved on the wire (TLS records
// whole, handshake included). Read it from the Client's goroutine, between
// reads and writes.
type Counter struct {
	net.Conn
	In, Out int // bytes read and written
}

// Read implements net.Conn, counting.
func (c *Counter) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.In += n
	return n, err
}

// Write implements net.Conn, counting.
func (c *Counter) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.Out += n
	return n, err
}

// DialCounting is Dial that also returns the counter of the bytes the
// connection moves on the wire.
func DialCounting(t testing.TB, addr, fingerprint string) (*Client, *Counter) {
	t.Helper()
	return dial(t, "", addr, tlsFor(fingerprint))
}

// tlsFor is TLSConfig(fingerprint), or nil (plaintext) for "".
func tlsFor(fingerprint string) *tls.Config {
	if fingerprint == "" {
		return nil
	}
	return TLSConfig(fingerprint)
}

// dial connects from src ("": any) to addr, speaking TLS with cfg or
// plaintext when cfg is nil, counting the bytes on the wire.
func dial(t testing.TB, src, addr string, cfg *tls.Config) (*Client, *Counter) {
	t.Helper()
	d := &net.Dialer{Timeout: Timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cnt := &Counter{Conn: raw}
	var conn net.Conn = cnt
	if cfg != nil {
		tc := tls.Client(cnt, cfg)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			t.Fatal(err)
		}
		conn = tc
	}
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{t: t, Conn: conn, dec: dec, r: codec.NewReader(conn, protocol.MaxFrameBody, dec)}
	t.Cleanup(func() { conn.Close(); dec.Close() })
	return c, cnt
}

// Write writes raw bytes.
func (c *Client) Write(b []byte) {
	c.t.Helper()
	if _, err := c.Conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Send writes a frame of kind k holding m.
func (c *Client) Send(k protocol.Kind, m proto.Message) {
	c.t.Helper()
	b, err := codec.AppendProto(nil, k, m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.Write(b)
}

// ExpectOffline reads frames until a PRESENCE saying user is offline
// (spec.md [S-15-3]): user's shard has then ended its last session. With
// subscribed it also takes the OK of a PRESENCE_SUBSCRIBE just sent,
// which may come before or after. Other frames are skipped.
func (c *Client) ExpectOffline(user uint64, subscribed bool) {
	c.t.Helper()
	ok, off := !subscribed, false
	for !ok || !off {
		f, err := c.Next(Timeout)
		if err != nil {
			c.t.Fatalf("waiting for %d to go offline: %v", user, err)
		}
		switch f.Kind {
		case protocol.KindOK:
			ok = true
		case protocol.KindPresence:
			var p pb.Presence
			if err := codec.ParseProto(f.Body, &p); err != nil {
				c.t.Fatal(err)
			}
			off = off || p.User == user && !p.Online
		}
	}
}

// NextRID returns a fresh request id.
func (c *Client) NextRID() uint32 { c.rid++; return c.rid }

// Next returns the next frame, unpacking batches, or the read error.
func (c *Client) Next(timeout time.Duration) (codec.Frame, error) {
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f, nil
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
	f, err := c.r.ReadFrame()
	if err != nil {
		return f, err
	}
	body := append([]byte(nil), f.Body...)
	if f.Kind == protocol.KindBatch {
		for rest := body; len(rest) > 0; {
			inner, r, err := codec.NextFrame(rest, protocol.MaxFrameBody)
			if err != nil {
				return codec.Frame{}, err
			}
			c.pending = append(c.pending, inner)
			rest = r
		}
		return c.Next(timeout)
	}
	f.Body = body
	return f, nil
}

// Expect reads frames until one of kind k, failing on any other kind not
// in skip.
func (c *Client) Expect(k protocol.Kind, skip ...protocol.Kind) codec.Frame {
	c.t.Helper()
	for {
		f, err := c.Next(Timeout)
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

// ExpectProto reads a frame of kind k into m.
func (c *Client) ExpectProto(k protocol.Kind, m proto.Message, skip ...protocol.Kind) {
	c.t.Helper()
	if err := codec.ParseProto(c.Expect(k, skip...).Body, m); err != nil {
		c.t.Fatal(err)
	}
}

// ExpectError reads an Error frame and checks its code.
func (c *Client) ExpectError(code protocol.Code) *pb.Error {
	c.t.Helper()
	var e pb.Error
	c.ExpectProto(protocol.KindError, &e)
	if e.Code != code {
		c.t.Fatalf("error %v, want %v", e.Code, code)
	}
	return &e
}

// ExpectClosed checks that the server closes the connection next.
func (c *Client) ExpectClosed() {
	c.t.Helper()
	f, err := c.Next(Timeout)
	if err == nil {
		c.t.Fatalf("connection still open; got %v", f.Kind)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %v", Timeout)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		var oe *net.OpError
		if !errors.As(err, &oe) {
			c.t.Fatalf("read after close: %v", err)
		}
	}
}

// User is a registered device.
type User struct {
	Phone  string
	ID     uint64
	Device uint32
	Cred   []byte
}

// Register verifies phone on c, asking code for the code the server sent.
func (c *Client) Register(phone string, code func(phone string) string) User {
	c.t.Helper()
	rid := c.NextRID()
	c.Send(protocol.KindRequestCode, &pb.RequestCode{Rid: rid, Phone: phone, Version: protocol.Version})
	var sent pb.CodeSent
	c.ExpectProto(protocol.KindCodeSent, &sent)
	if sent.Rid != rid {
		c.t.Fatalf("CodeSent rid %d, want %d", sent.Rid, rid)
	}
	c.Send(protocol.KindVerify, &pb.Verify{Rid: c.NextRID(), Phone: phone, Code: code(phone), DeviceName: "test"})
	var reg pb.Registered
	c.ExpectProto(protocol.KindRegistered, &reg)
	return User{Phone: phone, ID: reg.User, Device: reg.Device, Cred: reg.Credential}
}

// Login logs c in as u resuming after cursor.
func (c *Client) Login(u User, cursor uint64) *pb.LoginOk {
	c.t.Helper()
	c.Send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: u.ID, Device: u.Device, Credential: u.Cred, Cursor: cursor})
	var ok pb.LoginOk
	c.ExpectProto(protocol.KindLoginOK, &ok)
	return &ok
}

// SendText sends a text and waits for its Sent, returning the message id.
// Entries that arrive meanwhile are skipped.
func (c *Client) SendText(to, cmid uint64, text string) uint64 {
	c.t.Helper()
	c.Write(codec.AppendSend(nil, codec.Send{To: to, CMID: cmid, Body: []byte(text)}))
	var s pb.Sent
	c.ExpectProto(protocol.KindSent, &s, protocol.KindMessage, protocol.KindReceipt, protocol.KindSynced)
	if s.Cmid != cmid {
		c.t.Fatalf("Sent cmid %d, want %d", s.Cmid, cmid)
	}
	return s.Id
}

// Message reads the next Message entry, skipping Synced.
func (c *Client) Message() codec.Message {
	c.t.Helper()
	m, err := codec.ParseMessage(c.Expect(protocol.KindMessage, protocol.KindSynced).Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// Receipt reads the next Receipt entry, skipping Synced.
func (c *Client) Receipt() codec.Receipt {
	c.t.Helper()
	r, err := codec.ParseReceipt(c.Expect(protocol.KindReceipt, protocol.KindSynced).Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// Ack acknowledges every entry up to seq.
func (c *Client) Ack(seq uint64) { c.Write(codec.AppendAck(nil, seq)) }

// Ping writes a Ping.
func (c *Client) Ping() { c.Write(codec.AppendFrame(nil, protocol.KindPing, nil)) }

// Link links a new companion device to the account logged in on primary:
// it dials addr, asks for a link code, has primary approve it, and returns
// the companion's credentials.
func Link(t testing.TB, addr, fingerprint string, primary *Client, name string) User {
	t.Helper()
	c := Dial(t, addr, fingerprint)
	defer c.Conn.Close()
	rid := c.NextRID()
	c.Send(protocol.KindLinkRequest, &pb.LinkRequest{Rid: rid, Version: protocol.Version, DeviceName: name})
	var code pb.LinkCode
	c.ExpectProto(protocol.KindLinkCode, &code)
	prid := primary.NextRID()
	primary.Send(protocol.KindLinkApprove, &pb.LinkApprove{Rid: prid, Code: code.Code})
	var linked pb.Linked
	c.ExpectProto(protocol.KindLinked, &linked)
	if linked.Rid != rid {
		t.Fatalf("Linked rid %d, want %d", linked.Rid, rid)
	}
	var ok pb.Ok
	primary.ExpectProto(protocol.KindOK, &ok, protocol.KindMessage, protocol.KindReceipt, protocol.KindSynced, protocol.KindGroupEvent, protocol.KindReceipts)
	return User{ID: linked.User, Device: linked.Device, Cred: linked.Credential}
}
