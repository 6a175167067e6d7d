// Package router decides where a user's state lives and moves ops there:
// user or phone number → slot → shard. A local shard gets the op by a
// function call (Shard.Submit); the cross-node link that carries ops to
// shards of other nodes plugs in at the same place.
//
// Threading: a Router is immutable after New and safe for concurrent use;
// Submit and Forward never block.
package router
