//go:build unix

package node

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f without waiting: EWOULDBLOCK if
// another open file description holds it (another process, or another
// node in this one).
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
