package tls13

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// handshake is one connection's crypto/tls server handshake, run in its own
// goroutine over this blocking in-memory net.Conn. crypto/tls asks for input
// through Read; when it has consumed everything it was given, Read wakes the
// connection and Feed hands over the next complete record, exactly one. Read
// never returns bytes past the end of the current record. So crypto/tls never
// sees a byte past the record that ends the handshake, and application data
// the client pipelined behind its Finished stays in gnet's buffer for the
// record layer. Writes go out through gnet's concurrency-safe AsyncWrite.
//
// Ownership: srv, gc, local, remote, source and deadline are immutable.
// The queue fields belong to srv.mu. The fields under mu belong to mu. recLeft, the
// secrets and suite belong to the goroutine until it sets done, and to the
// event loop afterwards. Lock order: never hold mu and srv.mu together.
type handshake struct {
	srv      *Server
	gc       gnet.Conn
	local    net.Addr
	remote   net.Addr
	source   netip.Addr // counted against Config.MaxHandshakesPerSource unless zero
	deadline time.Time

	// Guarded by srv.mu.
	prev, next *handshake
	queued     bool // in srv's wait list
	granted    bool // holds a slot
	started    bool // the goroutine was spawned and owns the slot
	counted    bool // counted in srv.sources

	mu       sync.Mutex
	cond     sync.Cond // L is &mu; signaled when in grows or the handshake ends
	in       []byte    // the record handed over by Feed
	off      int       // bytes of in already read by crypto/tls
	want     bool      // crypto/tls has read all of in and waits for a record
	finished bool      // the server sent its Finished; only the client's last flight is due
	detached bool      // Conn.Close or a Feed failure: make no more gnet calls
	aborted  bool      // crypto/tls closed us: deadline or Server.Close
	done     bool      // the goroutine has finished; err is its result
	err      error

	recLeft      int // bytes of the current record not yet returned by Read
	suite        uint16
	clientSecret []byte // CLIENT_TRAFFIC_SECRET_0
	serverSecret []byte // SERVER_TRAFFIC_SECRET_0
	written      []byte // everything crypto/tls wrote; dropped when the handshake ends
	serverSeq    uint64 // records crypto/tls wrote under SERVER_TRAFFIC_SECRET_0
}

func newHandshake(s *Server, c gnet.Conn, now time.Time) *handshake {
	h := &handshake{
		srv:      s,
		gc:       c,
		local:    c.LocalAddr(),
		remote:   c.RemoteAddr(),
		deadline: now.Add(s.timeout),
		want:     true, // the ClientHello
	}
	if s.source != nil {
		h.source = s.source(h.remote)
	}
	h.cond.L = &h.mu
	return h
}

// run is the handshake goroutine. It always gives back its slot, and wakes
// the connection (unless detached) so that Feed collects the result.
func (h *handshake) run(cfg *tls.Config) {
	defer h.srv.wg.Done()
	ctx, cancel := context.WithDeadline(h.srv.ctx, h.deadline)
	err := h.handshake(ctx, cfg)
	cancel()

	h.mu.Lock()
	h.done, h.err = true, err
	h.cond.Broadcast()
	if !h.detached {
		// Under mu, so Conn.Close (which takes mu) cannot return between
		// the check and the call: no gnet call after OnClose.
		_ = h.gc.Wake(nil)
	}
	h.mu.Unlock()
	// From here the event loop owns h, except for the fields srv.mu
	// guards, which release takes.
	h.srv.release(h)
}

func (h *handshake) handshake(ctx context.Context, cfg *tls.Config) error {
	tc := tls.Server(h, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("timed out after %v: %w", h.srv.timeout, err)
		}
		if errors.Is(err, context.Canceled) {
			return errServerClosed
		}
		return err
	}
	state := tc.ConnectionState()
	if state.Version != tls.VersionTLS13 {
		return fmt.Errorf("negotiated version %#x, not TLS 1.3", state.Version)
	}
	s := suiteByID(state.CipherSuite)
	if s == suiteNone {
		return fmt.Errorf("negotiated unsupported cipher suite %#x", state.CipherSuite)
	}
	hashLen := suites[s].hashLen
	if len(h.clientSecret) != hashLen || len(h.serverSecret) != hashLen {
		return errors.New("KeyLogWriter did not deliver both application traffic secrets")
	}
	// With session tickets, crypto/tls has written its NewSessionTicket
	// under the server application key: the record layer goes on from the
	// sequence number after the last record it wrote.
	n, err := appRecords(&suites[s], h.serverSecret, h.written)
	h.written = nil
	if err != nil {
		return err
	}
	h.suite, h.serverSeq = state.CipherSuite, n
	// tc is dropped here: nothing of it outlives the handshake.
	return nil
}

// appRecords counts the records in out, everything crypto/tls wrote during
// one server handshake, that are protected under the server application
// traffic secret (its NewSessionTicket messages): the encrypted records
// that open under that key with sequence numbers 0, 1, and so on. They must
// be the last records written; every encrypted record before them is under
// the handshake key, which the AEAD check tells apart. It costs one failed
// AEAD open per handshake-key record (the server's flight, a few KiB).
func appRecords(s *suite, secret []byte, out []byte) (uint64, error) {
	var hc halfConn
	hc.setSecret(s, secret)
	defer hc.wipe()
	var nonce [ivLen]byte
	var scratch []byte
	for len(out) > 0 {
		if len(out) < recordHeaderLen {
			return 0, errors.New("crypto/tls wrote a partial record header")
		}
		n := recordHeaderLen + (int(out[3])<<8 | int(out[4]))
		if n > len(out) {
			return 0, errors.New("crypto/tls wrote a partial record")
		}
		rec := out[:n]
		out = out[n:]
		if rec[0] != typeApplicationData {
			if hc.seq > 0 {
				return 0, fmt.Errorf("crypto/tls wrote a record of type %d after one under its application key", rec[0])
			}
			continue // ServerHello, change_cipher_spec
		}
		var err error
		scratch, err = hc.cipher(s).Open(scratch[:0], hc.nonce(&nonce), rec[recordHeaderLen:], rec[:recordHeaderLen])
		if err != nil {
			if hc.seq > 0 {
				return 0, fmt.Errorf("crypto/tls wrote record %d under an unknown key after its application key", hc.seq)
			}
			continue // under the handshake key
		}
		hc.seq++
	}
	return hc.seq, nil
}

// push hands the next complete record in c's inbound buffer to the
// goroutine if it is waiting for one, and enforces the input caps: until
// the server has sent its Finished, everything buffered counts against
// MaxHandshakeInput; after it, the client's last flight and whatever it
// pipelined behind it count against MaxPipelinedInput. It reports whether
// the handshake has already finished, in which case it moves nothing.
// Loop only.
func (h *handshake) push(c gnet.Conn) (done bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return true, nil
	}
	limit, name := h.srv.maxInput, "MaxHandshakeInput"
	if h.finished {
		limit, name = h.srv.maxPipelined, "MaxPipelinedInput"
	}
	if pending := len(h.in) - h.off + c.InboundBuffered(); pending > limit {
		return false, fmt.Errorf("%d bytes of input buffered during the handshake exceed %s (%d)", pending, name, limit)
	}
	if !h.want {
		return false, nil
	}
	n, err := nextRecord(c)
	if err != nil || n == 0 {
		return false, err
	}
	rec, _ := c.Peek(n)
	h.in = append(h.in[:0], rec...)
	h.off = 0
	_, _ = c.Discard(n)
	h.want = false
	h.cond.Signal()
	return false, nil
}

// nextRecord returns the length of the complete record at the start of c's
// inbound buffer, or 0 when the buffer holds only part of one.
func nextRecord(c gnet.Conn) (int, error) {
	buffered := c.InboundBuffered()
	if buffered < recordHeaderLen {
		return 0, nil
	}
	hdr, err := c.Peek(recordHeaderLen)
	if err != nil {
		return 0, nil
	}
	length := int(hdr[3])<<8 | int(hdr[4])
	if length > maxCiphertext {
		return 0, recordErr(alertRecordOverflow, "record of %d bytes exceeds 2^14+256", length)
	}
	if buffered < recordHeaderLen+length {
		return 0, nil
	}
	return recordHeaderLen + length, nil
}

// detach stops the handshake on behalf of the connection: crypto/tls's next
// Read or Write fails and the goroutine will not call gnet again.
func (h *handshake) detach() {
	h.mu.Lock()
	h.detached = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

// result returns what the goroutine left once done is set: the error, and
// any bytes of the last record it was handed that it did not read (none,
// unless crypto/tls changes). Loop only, after push reported done.
func (h *handshake) result() (rest []byte, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, h.err
	}
	if h.recLeft != 0 {
		return nil, errors.New("crypto/tls stopped reading inside a record")
	}
	return h.in[h.off:], nil
}

// Read implements net.Conn for crypto/tls. When everything handed over has
// been read, it asks the event loop for the next record (c.Wake; Feed then
// pushes it) and blocks. It never returns bytes past the end of the current
// record.
func (h *handshake) Read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.off == len(h.in) && !h.detached && !h.aborted {
		if !h.want {
			h.want = true
			_ = h.gc.Wake(nil) // under mu: never after Conn.Close
		}
		h.cond.Wait()
	}
	if h.detached || h.aborted {
		return 0, net.ErrClosed
	}
	if h.recLeft == 0 {
		// Feed hands over whole records only, so a header is here.
		hdr := h.in[h.off : h.off+recordHeaderLen]
		h.recLeft = recordHeaderLen + (int(hdr[3])<<8 | int(hdr[4]))
	}
	n := copy(p[:min(len(p), h.recLeft)], h.in[h.off:])
	h.off += n
	h.recLeft -= n
	return n, nil
}

// Write implements net.Conn for crypto/tls: a copy goes to gnet's
// AsyncWrite, which keeps the slice it is given.
func (h *handshake) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.detached || h.aborted {
		return 0, net.ErrClosed
	}
	if err := h.gc.AsyncWrite(bytes.Clone(p), nil); err != nil {
		return 0, err
	}
	// Kept to count the records under the application key (appRecords);
	// only the handshake goroutine touches written.
	h.written = append(h.written, p...)
	return len(p), nil
}

// Close implements net.Conn. crypto/tls calls it when the handshake's
// context ends (deadline or Server.Close); it unblocks Read.
func (h *handshake) Close() error {
	h.mu.Lock()
	h.aborted = true
	h.cond.Broadcast()
	h.mu.Unlock()
	return nil
}

// LocalAddr implements net.Conn with the address captured on the loop.
func (h *handshake) LocalAddr() net.Addr { return h.local }

// RemoteAddr implements net.Conn with the address captured on the loop.
func (h *handshake) RemoteAddr() net.Addr { return h.remote }

// SetDeadline implements net.Conn; the context bounds the handshake instead.
func (h *handshake) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn; see SetDeadline.
func (h *handshake) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn; see SetDeadline.
func (h *handshake) SetWriteDeadline(time.Time) error { return nil }

// keyLogWriter receives crypto/tls's NSS key log lines for one handshake
// (on the handshake goroutine) and keeps the two application traffic
// secrets. Nothing is written anywhere.
type keyLogWriter handshake

// Write parses one "LABEL <client_random hex> <secret hex>\n" line.
func (w *keyLogWriter) Write(line []byte) (int, error) {
	label, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return 0, errors.New("malformed key log line")
	}
	var dst *[]byte
	switch string(label) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &w.clientSecret
	case "SERVER_TRAFFIC_SECRET_0":
		// Logged as the server Finished is written: from now on the client
		// may send its last flight and pipeline application data.
		dst = &w.serverSecret
		w.mu.Lock()
		w.finished = true
		w.mu.Unlock()
	default:
		return len(line), nil // handshake secrets are of no use to us
	}
	_, secretHex, ok := bytes.Cut(rest, []byte(" "))
	secretHex = bytes.TrimSuffix(secretHex, []byte("\n"))
	if !ok || len(secretHex) == 0 || len(secretHex)/2 > maxSecretLen {
		return 0, errors.New("malformed key log line")
	}
	secret := make([]byte, hex.DecodedLen(len(secretHex)))
	if _, err := hex.Decode(secret, secretHex); err != nil {
		return 0, fmt.Errorf("malformed key log line: %w", err)
	}
	*dst = secret
	return len(line), nil
}
