// Package tls13 terminates TLS 1.3 in process for gnet v2 event-loop
// connections, with about 300 bytes of TLS state per idle connection.
//
// # Design
//
// The handshake is Go's own crypto/tls server handshake (TLS 1.3 only),
// run in a short-lived goroutine over an
// in-memory blocking net.Conn. A connection takes nothing (no slot, no
// goroutine, no timer) until its whole ClientHello has arrived: Feed reads
// the record and handshake headers in gnet's buffer, bounded by
// Config.MaxHandshakeInput, so a client that trickles or stalls mid-hello
// holds only its buffered bytes (bounding how long it may take is the
// caller's timer's job). Then the goroutine is bounded by a slot taken
// before it is spawned (Config.MaxHandshakes; connections beyond it wait,
// their bytes left in gnet's buffer), by a per-source count
// (Config.MaxHandshakesPerSource, with Config.Source), by a deadline
// counted from the complete ClientHello (Config.HandshakeTimeout) and by
// caps on buffered input (Config.MaxHandshakeInput,
// Config.MaxPipelinedInput). crypto/tls asks
// for input one record at a time: when it has read everything it was
// given, its Read wakes the connection (c.Wake) and Feed hands over the
// next complete record, and Read never returns bytes past the end of a
// record. So crypto/tls reads exactly through the client's Finished, and
// application data the client pipelined behind it stays in gnet's buffer.
// The goroutine writes with c.AsyncWrite (a copy) and learns the
// application traffic secrets through a per-handshake Config.KeyLogWriter;
// with the negotiated suite from ConnectionState, that is all it keeps. It
// stores the result and wakes the connection; the crypto/tls.Conn is
// dropped.
//
// # Session resumption
//
// Unless TLS.SessionTicketsDisabled, crypto/tls sends one session ticket
// per handshake (full or resumed) and accepts it for PSK resumption with
// (EC)DHE, never 0-RTT: a resumed handshake skips the certificate and its
// signature. The ticket keys are derived from Config.TicketSecret per
// rotation period (ticket.go); every handshake's cloned tls.Config gets the
// current and previous period's keys. The NewSessionTicket goes out in the
// server's first flight under the server application traffic key, so the
// record layer must not start that direction at sequence number 0: the
// goroutine keeps a copy of what crypto/tls wrote and counts the records
// that open under the application key (appRecords), and the record layer
// starts after them.
//
// After the handshake, the package's own record layer (RFC 8446 §5, §7.3,
// KeyUpdate §4.6.3) protects the connection: crypto/aes and crypto/cipher
// GCM or x/crypto ChaCha20-Poly1305, a secret, key, IV and 64-bit
// sequence number per direction (nonce = IV XOR sequence number). Feed
// decrypts complete records straight from gnet's buffer into the caller's
// slice and leaves a partial record there; Seal coalesces any amount of
// plaintext into as few records as possible. Neither allocates in steady
// state. The AEAD objects (≈1.5 KiB for AES-GCM, both directions) are a
// cache: Idle drops them and the next record rebuilds them from the stored
// keys (≈0.3 µs per direction for AES-GCM).
//
// # Why not the study's hybrid
//
// reference/tls-on-gnet.md kept a whole crypto/tls.Conn per connection
// after the handshake. Measured here with the same Go and gnet (see
// README.md in this directory for commands and full tables), a
// crypto/tls.Conn keeps 6.6 KB of heap (26 objects) per idle connection,
// and the study measured ≈9 KB RSS per idle connection for that design
// (≈4.5 KB with an unsafe trim of its buffers). This package's Conn is 288
// bytes; the gnet echo server built on it holds 0.70 KB of heap per idle
// connection (0.38 KB of it is gnet's own), 0.8-1.3 KB RSS, against 2.2
// KB of heap when the AEADs are kept. Server CPU per new connection
// (handshake and one echo) is ≈0.3 ms, as with crypto/tls alone. The price
// is a hand-written record layer: it is checked byte for byte against RFC
// 8448's traces, RFC 9001 §A.5 and RFC 8439, run against crypto/tls
// clients (AES-GCM, and ChaCha20 in a child process with AES hidden) and
// OpenSSL's s_client (all three suites, KeyUpdate both ways), and fuzzed.
//
// The design relies on four behaviours of crypto/tls that are not part of
// its API, each pinned by a guard test (guard_test.go) so that a Go upgrade
// that changes one fails CI: (a) the server handshake returns after
// reading the record holding the client's Finished, without asking for
// more; (b) Config.KeyLogWriter delivers CLIENT_TRAFFIC_SECRET_0 and
// SERVER_TRAFFIC_SECRET_0 as NSS key log lines, one per Write; (c) the
// server writes under its application key only during the handshake and
// only its NewSessionTicket (one record with tickets on, none with
// SessionTicketsDisabled), which appRecords counts, and nothing after
// HandshakeContext returns; (d) crypto/tls clients accept a
// server's KeyUpdate and answer update_requested.
//
// Not supported: TLS 1.2 and earlier, 0-RTT, post-handshake client authentication,
// and a KeyUpdate split across records (no known stack sends one).
//
// # Threading
//
// A Server is safe for concurrent use. A Conn is owned by its
// connection's event loop: all its methods are called from that loop's
// callbacks (OnOpen, OnTraffic, OnClose) and never concurrently. The only
// other goroutines are the handshake goroutines; each touches its
// connection only through gnet's concurrency-safe AsyncWrite and Wake, and
// does so under a lock that Conn.Close also takes, so that no gnet call
// reaches a connection after its OnClose. Server.Close cancels running
// handshakes and waits for their goroutines.
//
// # Use from a gnet handler
//
//	OnOpen:    c.SetContext(&session{tls: srv.NewConn()})
//	OnTraffic: plain, err := s.tls.Feed(c, scratch[:0])
//	           handle plain (the first time Ready() turns true, the handshake is done);
//	           reply with c.Write(s.tls.Seal(out[:0], frames));
//	           on err: ErrNotTLS → c.Write(AlertRecord(nil, 10)); io.EOF → c.Write(s.tls.CloseNotify(nil));
//	           then return gnet.Close
//	idle timer (on the loop): s.tls.Idle()
//	OnClose:   s.tls.Close()
//
// Write records in the order they were sealed and before the next Feed:
// Feed itself writes a KeyUpdate reply and switches the sending key.
package tls13
