package server_test

import (
	"os"
	"testing"

	"github.com/parley-im/parley/internal/nodetest"
)

// TestMain runs the memory benchmark's client workers when asked, and
// otherwise the tests, failing the run if one leaves a goroutine behind.
func TestMain(m *testing.M) {
	if spec := os.Getenv(memWorkerEnv); spec != "" {
		runMemWorker(spec)
		os.Exit(0)
	}
	nodetest.VerifyMain(m)
}
