// Package pebblelog sends Pebble's logs to log/slog.
//
// Threading: a Logger is immutable and safe for concurrent use.
package pebblelog

import (
	"fmt"
	"log/slog"
)

// Logger implements pebble.Logger on an slog.Logger: Pebble's info lines
// are debug lines here, its errors errors.
type Logger struct {
	L *slog.Logger
	// Fatal is called, after the message is logged, when Pebble reports an
	// error it cannot continue from (a failed write to its log, a broken
	// invariant); it must not return. nil panics, as Pebble expects.
	Fatal func(msg string)
}

// Infof implements pebble.Logger.
func (p Logger) Infof(format string, args ...any) {
	p.L.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

// Errorf implements pebble.Logger.
func (p Logger) Errorf(format string, args ...any) {
	p.L.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf implements pebble.Logger: it logs, then calls Fatal (or panics).
func (p Logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.L.Error(msg, "component", "pebble", "fatal", true)
	if p.Fatal != nil {
		p.Fatal(msg)
	}
	panic(msg)
}
