// Package node assembles a complete Parley node from its parts: the shards
// (storage), the router, the client server, the media service, the SMS
// sender of verification codes (package sms, or the log by default), and
// the TLS certificate, generating a self-signed one on first start. cmd/parleyd is a thin main
// around Run.
//
// Threading: Run owns everything it starts and stops it all before it
// returns; a Node's methods are safe for concurrent use.
package node
