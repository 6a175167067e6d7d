package node

import "runtime/debug"

// DefaultGCPercent is the garbage collector's percent (GOGC) a node's
// process runs with unless the GOGC environment variable sets one. Go's
// default of 100 lets the heap grow to twice what is live before a
// collection, and the runtime keeps that much resident until it returns
// pages to the OS: a node of mostly idle connections, measured as the
// peers are (RSS after a 60 s hold, no collection forced), held about a
// quarter less per idle TLS connection at 19,000 with 50 than with 100,
// for up to about 15 % more server CPU per message flat out
// (docs/benchmarks.md, "GOGC=50 by default", has the figures and their
// commands).
const DefaultGCPercent = 50

// ApplyGCDefault sets the process's garbage collector percent to
// DefaultGCPercent unless GOGC, read with getenv, is set, and reports
// whether it did. It changes the whole process: only a main calls it,
// before it starts a node.
func ApplyGCDefault(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(DefaultGCPercent)
	return true
}
