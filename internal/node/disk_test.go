package node

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

type fakeShard struct{ full, calls int }

func (f *fakeShard) SetFull(full bool) {
	f.calls++
	if full {
		f.full = 1
	} else {
		f.full = 0
	}
}

// TestDiskGuard: below the reserve the shards are told to store nothing
// new; they are told to store again only a tenth of the reserve above it,
// so a node near the line does not flap; a failed reading changes nothing.
func TestDiskGuard(t *testing.T) {
	var free uint64
	var readErr error
	shards := []*fakeShard{{}, {}}
	g := newDiskGuard("data", 1000, func(string) (uint64, error) { return free, readErr },
		[]fullSetter{shards[0], shards[1]}, slog.New(slog.DiscardHandler))
	steps := []struct {
		free uint64
		err  error
		want int
	}{
		{5000, nil, 0}, {999, nil, 1}, {1000, nil, 1}, {1099, nil, 1}, {0, errors.New("statfs"), 1},
		{1100, nil, 0}, {1000, nil, 0}, {999, nil, 1},
	}
	for i, s := range steps {
		free, readErr = s.free, s.err
		g.check()
		for j, sh := range shards {
			if sh.full != s.want {
				t.Fatalf("step %d (free %d): shard %d full=%d, want %d", i, s.free, j, sh.full, s.want)
			}
		}
	}
	if shards[0].calls != 3 {
		t.Fatalf("the shards were told %d times, want 3 (only on changes)", shards[0].calls)
	}
}

// TestDataDirectoryPrivate: the node narrows its data directory to its
// owner and keeps the code key there, 0600, the same across restarts.
func TestDataDirectoryPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := start(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, n)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, want 0700", st.Mode().Perm())
	}
	key := filepath.Join(dir, "codes.key")
	st, err = os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Errorf("code key mode %v size %d, want 0600 and 32 bytes", st.Mode().Perm(), st.Size())
	}
	first, _ := os.ReadFile(key)
	n, err = start(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, n)
	if again, _ := os.ReadFile(key); string(again) != string(first) {
		t.Error("the code key changed across a restart")
	}
}
