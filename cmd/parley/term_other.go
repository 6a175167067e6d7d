//go:build !linux

package main

import "errors"

// isTerminal reports whether fd is a terminal; this build does not tell,
// so the command reads whole lines.
func isTerminal(uintptr) bool { return false }

// makeRaw is not supported on this platform: typing is seen line by line.
func makeRaw(uintptr) (func(), error) { return nil, errors.New("raw terminal mode not supported") }
