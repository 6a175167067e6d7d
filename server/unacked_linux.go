package server

import "golang.org/x/sys/unix"

// unacked returns the bytes in socket fd's send queue that the peer has
// not acknowledged yet (SIOCOUTQ), or 0 if it cannot tell.
func unacked(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0
	}
	return n
}
