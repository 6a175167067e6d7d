package client

import (
	"testing"

	signallogger "go.mau.fi/libsignal/logger"

	"github.com/parley-im/parley/internal/nodetest"
)

// TestMain fails the run if a test leaves a goroutine behind. libsignal
// logs a failed decryption to standard output unless given a logger: the
// tests that decrypt on purpose what they must not give it one that
// drops everything.
func TestMain(m *testing.M) {
	var quiet signallogger.Loggable = quietSignal{}
	signallogger.Setup(&quiet)
	nodetest.VerifyMain(m)
}

// quietSignal is a libsignal logger that drops everything.
type quietSignal struct{}

func (quietSignal) Debug(string, string)   {}
func (quietSignal) Info(string, string)    {}
func (quietSignal) Warning(string, string) {}
func (quietSignal) Error(string, string)   {}
func (quietSignal) Configure(string)       {}
