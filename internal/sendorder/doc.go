// Package sendorder is the barrier that keeps a sender's order across
// retriable refusals ([S-8-13]), shared by the gateway connection
// (server/session_order.go) and the shard (storage/shard_order.go): once
// a SEND of a connection is refused with a code the client retries, every
// later SEND of that connection to the same conversation (a higher cmid,
// [S-8-11]) is refused with the same code and retry_after_ms until the
// refused cmid is read again, or until TTL has passed since the refusal.
//
// Threading: a Set is not safe for concurrent use; its owner uses it from
// one goroutine at a time (a connection's event loop, a shard's actor).
// Barrier and Conversation are plain values.
package sendorder
