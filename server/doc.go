// Package server owns client connections: TLS 1.3 (internal/tls13) or
// plaintext behind a proxy, framing, the per-connection state machine
// (spec.md section 6), heartbeats and idle timeouts, backpressure, and
// graceful shutdown. It runs on gnet event loops with no goroutine per
// connection; nothing in an event-loop callback blocks.
//
// Connections arrive through the server's own accept goroutine (accept.go),
// not gnet's listener: gnet v2.10.0 shuts its whole engine down on an
// accept error such as EMFILE. The acceptor applies the connection caps
// (in all, per client address) before gnet sees a connection, resets what
// is over them, survives running out of file descriptors, and hands the
// rest to an event loop with gnet's Engine.Register. Before OPEN, a TLS
// connection must deliver its whole ClientHello and then complete its
// handshake, each within its deadline from the accept; it takes a
// handshake slot only with a whole ClientHello. A connection that closes
// with an ERROR or GOAWAY drains first: it reads and queues nothing more
// and closes once the client has everything, or after CloseLinger.
// docs/security.md lists every limit with its test.
//
// Threading: a connection's fields are owned by its event loop, except
// those marked "guarded by mu", which shards (through the
// storage.Endpoint methods) and the timer goroutine also touch, and the
// atomics the timer and the acceptor read. Shards never write to a socket:
// they queue frames under mu and wake the loop, which encrypts and writes
// them. The acceptor's counts are guarded by acceptor.mu, which the accept
// goroutine and every loop's OnClose take, never with another lock. Lock
// order: wheel.mu before conn.mu; none is held across I/O or while calling
// into another package. The rate limits kept across connections
// (ratelimit.go: per account, per client address, per number prefix, per
// node) are shared by every loop; each bucket map has its own locks,
// taken alone and never while another lock is held.
package server
