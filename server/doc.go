// Package server owns client connections: TLS 1.3 (internal/tls13) or
// plaintext behind a proxy, framing, the per-connection state machine
// (spec.md section 6), heartbeats and idle timeouts, backpressure, and
// graceful shutdown. It runs on gnet event loops with no goroutine per
// connection; nothing in an event-loop callback blocks.
//
// Threading: a connection's fields are owned by its event loop, except
// those marked "guarded by mu", which shards (through the
// storage.Endpoint methods) and the timer goroutine also touch. Shards
// never write to a socket: they queue frames under mu and wake the loop,
// which encrypts and writes them. Lock order: wheel.mu before conn.mu;
// neither is held across I/O or while calling into another package.
package server
