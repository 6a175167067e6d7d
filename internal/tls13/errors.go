package tls13

import "errors"

// Errors returned by Conn.Feed. Each means the connection must be closed;
// the callers branch on them with errors.Is.
var (
	// ErrNotTLS reports that the first byte from the peer does not start a
	// TLS handshake record (0x16), e.g. a plaintext HTTP request. Nothing
	// has been written to the peer; AlertRecord builds a reply if wanted.
	ErrNotTLS = errors.New("tls13: peer did not start a TLS handshake")

	// ErrHandshake reports that the handshake failed, timed out, exceeded
	// MaxHandshakeInput, was refused (ErrTooManyHandshakes), the first
	// bytes cannot start a ClientHello, or it could not start because the
	// Server is closed.
	// The returned error wraps both ErrHandshake and the cause; crypto/tls
	// has already sent its alert, if any.
	ErrHandshake = errors.New("tls13: handshake failed")

	// ErrTooManyHandshakes reports that the connection's source already
	// had Config.MaxHandshakesPerSource handshakes running or waiting when
	// its ClientHello arrived. Feed returns it wrapped in ErrHandshake;
	// nothing has been written to the peer.
	ErrTooManyHandshakes = errors.New("tls13: too many handshakes from this source")

	// ErrRecord reports a record the peer should not have sent after the
	// handshake: one that fails authentication, is too large, is of an
	// unexpected type, or a fatal alert from the peer. Feed has already
	// written the matching alert to the peer, where there is one to send.
	ErrRecord = errors.New("tls13: bad record")

	// errClosed is returned by Feed after Close.
	errClosed = errors.New("tls13: use of closed connection")
)
