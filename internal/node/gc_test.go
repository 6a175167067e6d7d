package node

import (
	"runtime/debug"
	"testing"
)

// TestApplyGCDefault: without GOGC the process runs with DefaultGCPercent;
// an operator's GOGC is left alone.
func TestApplyGCDefault(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	if !ApplyGCDefault(func(string) string { return "" }) {
		t.Fatal("GOGC unset: not applied")
	}
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Fatalf("GOGC unset: GC percent %d, want %d", got, DefaultGCPercent)
	}
	if ApplyGCDefault(func(k string) string {
		if k == "GOGC" {
			return "200"
		}
		return ""
	}) {
		t.Fatal("GOGC=200: applied over it")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC=200: GC percent changed to %d", got)
	}
}
