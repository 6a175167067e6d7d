package loadtest

import (
	"slices"
	"testing"
	"time"
)

// TestSyncWaitArgs: a spawned parleyd gets --sync-wait only when the run
// sets one, and "never wait" (negative here) is parleyd's 0.
func TestSyncWaitArgs(t *testing.T) {
	for _, tc := range []struct {
		w    time.Duration
		want []string
	}{
		{0, nil},
		{-1, []string{"--sync-wait", "0s"}},
		{200 * time.Microsecond, []string{"--sync-wait", "200µs"}},
	} {
		if got := syncWaitArgs(tc.w); !slices.Equal(got, tc.want) {
			t.Errorf("syncWaitArgs(%v) = %q, want %q", tc.w, got, tc.want)
		}
	}
}
