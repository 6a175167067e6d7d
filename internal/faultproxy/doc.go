// Package faultproxy is a TCP proxy that injects network faults between
// two endpoints, for tests and the load tester's cluster chaos mode: it
// listens on one address, forwards every connection to a target, and
// on command delays bytes, partitions one direction or both, resets every
// connection, or refuses new ones.
//
// TCP cannot lose or reorder bytes inside a connection without breaking
// it, so the faults are the ones a network inflicts on a TCP stream: a
// partition stalls the stream (bytes are held, not forwarded, as a
// network that drops every packet holds TCP's retransmissions) until it
// heals or an end gives up; loss is a reset (both ends see the
// connection aborted, whatever was in flight lost).
//
// Another process controls a Proxy through Handler, a small HTTP API:
//
//	POST /partition?dir=both|forward|backward   stall a direction (forward: towards the target)
//	POST /heal                                  forward everything again
//	POST /delay?d=50ms                          hold each chunk that long (0 turns it off)
//	POST /reset                                 abort every open connection (TCP RST)
//	POST /refuse?on=true|false                  reset new connections at once
//	GET  /status                                the faults and open connections, as JSON
//
// Threading: a Proxy's methods are safe for concurrent use. Each proxied
// connection has two goroutines, one per direction, that end with it.
package faultproxy
