package tls13

import (
	"errors"
	"fmt"
	"slices"

	"github.com/panjf2000/gnet/v2"
)

// Conn states. Transitions happen on the event loop only.
const (
	stateNew       uint8 = iota // the ClientHello has not arrived in full yet
	stateQueued                 // whole ClientHello buffered, waiting for a handshake slot
	stateHandshake              // handshake goroutine running
	stateReady                  // record layer installed
	stateFailed                 // Feed returned an error; Seal and CloseNotify still work
	stateClosed                 // Close was called; keys wiped
)

// Conn is one connection's TLS state. It is owned by the connection's event
// loop: every method is called on that loop only (from gnet's OnOpen,
// OnTraffic and OnClose, or a task run on the loop), never concurrently.
// Before the handshake completes, a Conn holds a pointer to its handshake
// state; afterwards it is a fixed few hundred bytes plus, while active, the
// two AEADs (≈1.5 KiB for AES-GCM) that Idle drops.
type Conn struct {
	srv *Server
	hs  *handshake // non-nil in stateQueued and stateHandshake
	err error      // sticky Feed error in stateFailed

	in, out  halfConn
	nonceBuf [ivLen]byte // scratch for the per-record nonce, so it does not escape

	state        uint8
	suite        uint8 // index into suites; suiteNone before Ready
	useless      uint8 // consecutive records without application data
	keyUpdateDue bool  // the peer asked for a KeyUpdate; Feed sends it before returning
}

// Ready reports whether the handshake has completed and Feed has installed
// the record layer: from then on Seal and CloseNotify may be called. It
// stays true after Feed returns io.EOF or ErrRecord, until Close.
func (tc *Conn) Ready() bool {
	return tc.suite != suiteNone
}

// HelloReceived reports whether the client's whole ClientHello has
// arrived: from then on the connection holds or waits for a handshake
// slot, and Config.HandshakeTimeout runs. Before it, the Conn holds no
// slot, goroutine or timer, so bounding the time a client may take to send
// its ClientHello is the caller's job. It stays true once Ready.
func (tc *Conn) HelloReceived() bool {
	switch tc.state {
	case stateQueued, stateHandshake, stateReady:
		return true
	}
	return false
}

// CipherSuite returns the negotiated TLS 1.3 cipher suite (a
// crypto/tls.TLS_* constant), or 0 before Ready.
func (tc *Conn) CipherSuite() uint16 {
	return suites[tc.suite].id
}

// Feed consumes ciphertext from c's inbound buffer and appends application
// plaintext to dst, returning the extended slice. c must be the gnet
// connection tc was made for, and Feed must be called from its OnTraffic
// (c.Peek and c.Discard are valid only there). A partial record is left in
// gnet's buffer for the next call.
//
// Before the handshake completes, Feed waits, leaving the bytes in c, until
// they hold the whole ClientHello, then starts the handshake goroutine (or
// queues the connection while MaxHandshakes are running, leaving the bytes
// in c; it is woken with c.Wake when a slot frees) and hands it complete records, one each time crypto/tls asks (the
// goroutine asks with c.Wake); it returns dst unchanged. When the
// handshake finishes, the goroutine wakes c, and the next Feed installs the
// keys and decrypts any records the client pipelined behind its Finished.
//
// Once Ready, Feed decrypts every complete record. A KeyUpdate the peer
// requested is answered by Feed itself with c.Write before it returns, and
// the sending key changes then: write every record sealed before a Feed
// call before making it, never hold sealed bytes across Feed.
//
// A non-nil error means: close the connection (after handling the
// plaintext returned with it). It is io.EOF after the peer's close_notify,
// or wraps ErrNotTLS, ErrHandshake or ErrRecord. Feed keeps returning it.
func (tc *Conn) Feed(c gnet.Conn, dst []byte) ([]byte, error) {
	switch tc.state {
	case stateReady:
		return tc.readRecords(c, dst)
	case stateNew, stateQueued, stateHandshake:
		return tc.feedHandshake(c, dst)
	case stateFailed:
		return dst, tc.err
	default:
		return dst, errClosed
	}
}

func (tc *Conn) feedHandshake(c gnet.Conn, dst []byte) ([]byte, error) {
	if tc.state == stateNew {
		n := c.InboundBuffered()
		if n == 0 {
			return dst, nil // a wake-up or an empty read; the idle timer's business
		}
		if first, err := c.Peek(1); err != nil || first[0] != typeHandshake {
			return dst, tc.fail(ErrNotTLS)
		}
		// No slot, goroutine or timer until the whole ClientHello is here:
		// a client that trickles one costs its buffered bytes only.
		b, _ := c.Peek(-1)
		complete, err := helloComplete(b, tc.srv.maxInput)
		if err != nil {
			return dst, tc.failHandshake(err)
		}
		if !complete {
			if n > tc.srv.maxInput {
				return dst, tc.failHandshake(fmt.Errorf("%d bytes of handshake input exceed MaxHandshakeInput (%d)", n, tc.srv.maxInput))
			}
			return dst, nil
		}
		tc.hs = newHandshake(tc.srv, c, tc.srv.now())
		tc.state = stateQueued
	}
	if tc.state == stateQueued {
		started, err := tc.startHandshake(c)
		if err != nil || !started {
			return dst, err
		}
	}

	done, err := tc.hs.push(c)
	if err != nil {
		return dst, tc.failHandshake(err)
	}
	if !done {
		return dst, nil
	}
	rest, err := tc.hs.result()
	if err != nil {
		return dst, tc.failHandshake(err)
	}
	tc.install()
	// Whole records crypto/tls was handed but did not read: none today (the
	// guard tests check that), decrypted here should that change.
	for len(rest) > 0 {
		n := recordHeaderLen + (int(rest[3])<<8 | int(rest[4]))
		if dst, err = tc.openRecord(dst, rest[:n]); err != nil {
			return dst, tc.failRecord(c, err)
		}
		rest = rest[n:]
	}
	tc.hs = nil
	return tc.readRecords(c, dst)
}

// startHandshake claims a handshake slot (or a place in the queue) and,
// once it holds one, starts the goroutine. While the connection waits, its
// bytes stay in c, capped by MaxHandshakeInput and bounded in time by the
// handshake deadline.
func (tc *Conn) startHandshake(c gnet.Conn) (started bool, err error) {
	s, h := tc.srv, tc.hs
	ok, err := s.claim(h)
	if err != nil {
		return false, tc.failHandshake(err)
	}
	if s.now().After(h.deadline) {
		return false, tc.failHandshake(fmt.Errorf("timed out after %v waiting for a handshake slot", s.timeout))
	}
	if !ok {
		if n := c.InboundBuffered(); n > s.maxInput {
			return false, tc.failHandshake(fmt.Errorf("%d bytes of handshake input exceed MaxHandshakeInput (%d)", n, s.maxInput))
		}
		return false, nil
	}
	if err := s.start(h); err != nil {
		return false, tc.failHandshake(err)
	}
	tc.state = stateHandshake
	return true, nil
}

// install sets up the record layer from the finished handshake.
func (tc *Conn) install() {
	h := tc.hs
	tc.suite = suiteByID(h.suite)
	s := &suites[tc.suite]
	tc.in.setSecret(s, h.clientSecret)
	tc.out.setSecret(s, h.serverSecret)
	tc.out.seq = h.serverSeq // after crypto/tls's NewSessionTicket records
	clear(h.clientSecret)
	clear(h.serverSecret)
	tc.state = stateReady
}

// readRecords decrypts the complete records in c's inbound buffer.
func (tc *Conn) readRecords(c gnet.Conn, dst []byte) ([]byte, error) {
	for {
		n, err := nextRecord(c)
		if err != nil {
			return dst, tc.failRecord(c, err)
		}
		if n == 0 {
			break
		}
		record, _ := c.Peek(n)
		dst, err = tc.openRecord(dst, record)
		_, _ = c.Discard(n)
		if err != nil {
			return dst, tc.failRecord(c, err)
		}
	}
	if tc.keyUpdateDue {
		tc.keyUpdateDue = false
		_, _ = c.Write(tc.sendKeyUpdate(nil, false))
	}
	return dst, nil
}

// fail moves to stateFailed with err, stopping any handshake. A Close that
// already happened (gnet closes a connection, and runs OnClose, from inside
// c.Write when the socket write fails) stays in force.
func (tc *Conn) fail(err error) error {
	tc.stopHandshake()
	if tc.state != stateClosed {
		tc.state = stateFailed
		tc.err = err
	}
	return err
}

func (tc *Conn) failHandshake(cause error) error {
	if errors.Is(cause, ErrHandshake) {
		return tc.fail(cause)
	}
	return tc.fail(fmt.Errorf("%w: %w", ErrHandshake, cause))
}

// failRecord fails the connection for a record error, first writing the
// matching fatal alert to the peer under our sending key.
func (tc *Conn) failRecord(c gnet.Conn, err error) error {
	var re *recordError
	if errors.As(err, &re) && tc.suite != suiteNone {
		_, _ = c.Write(tc.sealRecord(nil, typeAlert, []byte{2, byte(re.alert)}))
	}
	return tc.fail(err)
}

// stopHandshake detaches a running or waiting handshake and frees its slot
// or queue place.
func (tc *Conn) stopHandshake() {
	if h := tc.hs; h != nil {
		tc.srv.forget(h)
		h.detach()
		tc.hs = nil
	}
}

// Seal appends to dst the records that carry plaintext, as few as possible
// (each holds up to 16 KiB), and returns the extended slice; SealedSize
// tells how much it appends. It allocates nothing when dst has the
// capacity and the AEAD is built (it is rebuilt once after Idle). The
// caller writes the result with c.Write, in the order sealed, before its
// next Feed. Empty plaintext appends nothing.
//
// Seal panics if the handshake has not completed (a caller bug). After
// Close it appends nothing: gnet may close a connection, running OnClose,
// inside any c.Write, so a Close can precede a Seal in the same callback.
func (tc *Conn) Seal(dst, plaintext []byte) []byte {
	if tc.closedFor("Seal") || len(plaintext) == 0 {
		return dst
	}
	dst = slices.Grow(dst, SealedSize(len(plaintext)))
	for len(plaintext) > 0 {
		n := min(len(plaintext), maxPlaintext)
		dst = tc.sealRecord(dst, typeApplicationData, plaintext[:n])
		plaintext = plaintext[n:]
	}
	return dst
}

// CloseNotify appends an encrypted close_notify alert to dst. Write it
// after any data and then close the connection. Like Seal, it panics
// before the handshake completes and appends nothing after Close.
func (tc *Conn) CloseNotify(dst []byte) []byte {
	if tc.closedFor("CloseNotify") {
		return dst
	}
	return tc.sealRecord(dst, typeAlert, []byte{1, byte(alertCloseNotify)})
}

// closedFor reports whether op must append nothing because the Conn is
// closed, and panics if the handshake has not completed.
func (tc *Conn) closedFor(op string) bool {
	if tc.state == stateClosed {
		return true
	}
	if !tc.Ready() {
		panic("tls13: " + op + " before the handshake completed")
	}
	return false
}

// Idle drops the state that can be rebuilt: the two AEADs (≈1.5 KiB with
// AES-GCM), rebuilt from the stored keys on the next record in either
// direction. Call it from the server's idle timer for connections that have
// gone quiet; calling it on a busy connection only costs a rebuild. It does
// nothing before the handshake completes.
func (tc *Conn) Idle() {
	tc.in.aead = nil
	tc.out.aead = nil
}

// Close releases the connection's TLS state; call it from OnClose. It stops
// a running handshake (its goroutine makes no further gnet call once Close
// returns, and exits at its next read) and frees its handshake slot or
// place in the queue. It wipes the keys. Close is idempotent; after it,
// Feed returns an error, Ready is false, and Seal and CloseNotify append
// nothing.
func (tc *Conn) Close() {
	tc.stopHandshake()
	tc.in.wipe()
	tc.out.wipe()
	tc.err = nil
	tc.suite = suiteNone
	tc.state = stateClosed
}

// rekeyAfter is the number of records sealed under one key before Seal
// rotates it.
func (tc *Conn) rekeyAfter() uint64 { return tc.srv.rekeyAfter }
