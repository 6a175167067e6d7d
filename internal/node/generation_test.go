package node

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNextGeneration: every start gets a new boot generation, kept across
// starts in the data directory; a damaged file is an error, not a reset
// (which would hand out generations again).
func TestNextGeneration(t *testing.T) {
	dir := t.TempDir()
	for want := uint32(1); want <= 3; want++ {
		got, err := nextGeneration(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("generation %d, want %d", got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, generationFile), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nextGeneration(dir); err == nil {
		t.Fatal("a damaged generation file was accepted")
	}
}
