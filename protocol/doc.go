// Package protocol is the single source of truth for Parley's wire
// protocol: parley.proto and its generated code (package pb), frame kinds,
// error codes with their scope, and limits. spec.md describes the same
// things in prose; protocol's tests fail when the two disagree.
//
// Threading: everything here is immutable after package initialisation of
// constants and may be used from any goroutine.
package protocol
