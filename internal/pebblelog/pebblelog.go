// Package pebblelog sends Pebble's logs to log/slog.
//
// Threading: a Logger is immutable and safe for concurrent use.
package pebblelog

import (
	"fmt"
	"log/slog"
)

// Logger implements pebble.Logger on an slog.Logger: Pebble's info lines
// are debug lines here, its errors errors; a fatal one is logged, then
// panics as Pebble expects.
type Logger struct{ L *slog.Logger }

// Infof implements pebble.Logger.
func (p Logger) Infof(format string, args ...any) {
	p.L.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

// Errorf implements pebble.Logger.
func (p Logger) Errorf(format string, args ...any) {
	p.L.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf implements pebble.Logger.
func (p Logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.L.Error(msg, "component", "pebble")
	panic(msg)
}
