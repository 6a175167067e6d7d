// Package storage is a Parley shard: one Pebble database and the one actor
// goroutine that is the only reader and writer of it. A shard owns the
// users and phone numbers of its slots: inboxes, device cursors, sessions,
// accounts and verification codes.
//
// The actor takes every Op that arrived since its last commit, applies
// them to one indexed Pebble batch and commits it (its records in key
// order, batchorder.go) without waiting for the WAL's fsync; a syncer
// goroutine syncs behind it, covering many cycles with one fsync
// (shard_sync.go). A cycle's effects — answers to requests, inbox entries
// pushed to live devices, entries forwarded to other shards — wait until
// a sync covers every promise they depend on (a receipt's may ride on
// the next sync another cycle asks for, Config.LazySync). So a client
// never hears of a write that a crash could undo (DESIGN.md, invariant
// 1), and one device's stream is produced in one place in seq order
// (invariant 2).
//
// Threading: a Shard is owned by its actor goroutine. Other goroutines talk
// to it only through Submit, which never blocks, and Close. Its syncer
// goroutine reads atomics and the queue's length (under the submit lock),
// and emits held effects under the emit lock, never holding both. Endpoint
// methods are called from the actor and must not block. An operator's
// tools (shard_backup.go) may also, from any goroutine, Pause the actor
// between two cycles and Checkpoint the database meanwhile, and read
// Stats, Flow, Serving and Inspect (committed state, read from Pebble,
// never from the actor's memory).
package storage
