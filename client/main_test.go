package client

import (
	"testing"

	"github.com/parley-im/parley/internal/nodetest"
)

// TestMain fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) { nodetest.VerifyMain(m) }
