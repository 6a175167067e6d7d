package node

import (
	"errors"
	"fmt"
	"syscall"
)

// ListenError says that a node could not listen on one of its
// addresses.
type ListenError struct {
	// Listener names it: "client", "media" or "admin".
	Listener string
	// Addr is the address asked for (Config.Listen, MediaAddr, AdminAddr).
	Addr string
	// Err is the cause; errors.Is finds syscall.EADDRINUSE when another
	// program listens there.
	Err error
}

func (e *ListenError) Error() string {
	if errors.Is(e.Err, syscall.EADDRINUSE) {
		return fmt.Sprintf("node: the %s address %s is in use by another program (another parleyd?)", e.Listener, e.Addr)
	}
	return fmt.Sprintf("node: the %s listener cannot listen on %s: %v", e.Listener, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }
