package node

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// generationFile holds the node's boot generation, in decimal, in the
// data directory.
const generationFile = "generation"

// nextGeneration increments the boot generation kept in dir and returns
// the new one (1 on the first start). It is durable before it returns (the
// file and its directory synced), so no two runs of a node share a
// generation: a connection ref (storage.ConnRef) from before a restart
// never names a connection of the new run, even one with the same number.
func nextGeneration(dir string) (uint32, error) {
	name := filepath.Join(dir, generationFile)
	var gen uint64
	b, err := os.ReadFile(name)
	switch {
	case err == nil:
		gen, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("node: %s: %w", name, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("node: %w", err)
	}
	if gen == math.MaxUint32 {
		return 0, fmt.Errorf("node: %s: boot generation exhausted", name)
	}
	gen++
	if err := writeFileAtomic(name, []byte(strconv.FormatUint(gen, 10)+"\n"), 0o600); err != nil {
		return 0, err
	}
	if err := syncDir(dir); err != nil {
		return 0, err
	}
	return uint32(gen), nil
}

// syncDir makes the entries of dir (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("node: sync %s: %w", dir, err)
	}
	return nil
}
