//go:build !unix

package node

import "os"

// lockFile does nothing where flock is missing: Pebble's own lock on each
// shard still keeps a second node out, with a plainer message.
func lockFile(*os.File) error { return nil }
