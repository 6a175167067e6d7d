// Package node assembles a complete Parley node from its parts: the shards
// (storage), the router, the client server, the media service, the SMS
// sender of verification codes (package sms, or the log by default), and
// the TLS certificate, generating a self-signed one on first start. cmd/parleyd is a thin main
// around Run.
//
// It also serves the operator (ops.go, backup.go): Status, NotReady,
// User, RevokeDevice and Drain for the admin endpoint and parleyctl, and
// online backups (Backup: every shard paused at once and checkpointed)
// and their Restore into a new data directory.
//
// Threading: Run owns everything it starts and stops it all before it
// returns; a Node's methods are safe for concurrent use. opMu serialises
// a backup with the end of Shutdown, so the shards and the media service
// are never closed under a checkpoint.
package node
