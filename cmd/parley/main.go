// Command parley is a terminal client for Parley: register a phone number,
// look up contacts, send a message, listen for messages, or chat.
//
//	parley register --server HOST:PORT --fingerprint HEX --phone +15551234567
//	parley lookup +15557654321
//	parley send --to +15557654321 see you at eight
//	parley listen
//	parley chat --to +15557654321
//
// register stores the device's credentials and the server's address in a
// profile (os.UserConfigDir()/parley/<profile>.json, --profile to keep
// several on one machine); later commands need no server flags. The
// environment variables PARLEY_SERVER, PARLEY_FINGERPRINT and
// PARLEY_PROFILE are the defaults of --server, --fingerprint and
// --profile. Bad input exits with status 2 and one line on stderr;
// failures exit with status 1.
//
// The protocol logic lives in package client; this command only turns
// flags into a client.Config and events into lines of text.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], osEnv())
	stop()
	os.Exit(code)
}
