package node

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestConnectionCapFromFileLimit: the node keeps FDReserve descriptors
// of the process's open-file limit for its shards, media and the rest,
// and caps client connections at what is left.
func TestConnectionCapFromFileLimit(t *testing.T) {
	for _, tt := range []struct {
		shards       int
		media        bool
		maxTransfers int
		want         int
	}{
		{1, false, 0, 256},
		{2, true, 0, 128 + 256 + 512},
		{4, true, 10, 128 + 512 + 20},
	} {
		if got := FDReserve(tt.shards, tt.media, tt.maxTransfers); got != tt.want {
			t.Errorf("FDReserve(%d, %v, %d) = %d, want %d", tt.shards, tt.media, tt.maxTransfers, got, tt.want)
		}
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	n, err := start(t, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, n)
	want := max(int(lim.Cur)-FDReserve(2, false, 0), int(lim.Cur)/2)
	if got := n.Server().MaxConns(); got != want {
		t.Errorf("MaxConns = %d under a limit of %d with 2 shards and no media, want %d", got, lim.Cur, want)
	}
}
