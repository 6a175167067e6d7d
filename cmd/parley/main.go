package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	signallogger "go.mau.fi/libsignal/logger"
)

func main() {
	// libsignal prints a failed decryption to standard output unless it
	// has a logger; the client reports those itself.
	var quiet signallogger.Loggable = quietSignal{}
	signallogger.Setup(&quiet)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], osEnv())
	stop()
	os.Exit(code)
}

// quietSignal is a libsignal logger that drops everything.
type quietSignal struct{}

func (quietSignal) Debug(string, string)   {}
func (quietSignal) Info(string, string)    {}
func (quietSignal) Warning(string, string) {}
func (quietSignal) Error(string, string)   {}
func (quietSignal) Configure(string)       {}
