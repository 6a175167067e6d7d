package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PIDFile is the file in the data directory that names the parleyd
// using it: its process id, one line. While a node runs it holds a lock
// on the file (flock, where the system has it), so a second node on the
// same directory stops at once with ErrDataDirInUse, naming the first.
// A file left by a node that has exited is taken over.
const PIDFile = "parleyd.pid"

// ErrDataDirInUse is returned (wrapped in a *DataDirInUseError) by Start
// when another node holds the data directory.
var ErrDataDirInUse = errors.New("node: data directory in use")

// DataDirInUseError says which data directory another node holds, and
// that node's process id if known (0 if not).
type DataDirInUseError struct {
	Dir string
	PID int
}

func (e *DataDirInUseError) Error() string {
	who := "another parleyd"
	if e.PID > 0 {
		who += " (pid " + strconv.Itoa(e.PID) + ")"
	}
	return fmt.Sprintf("node: the data directory %s is in use by %s", e.Dir, who)
}

func (e *DataDirInUseError) Unwrap() error { return ErrDataDirInUse }

// lockDataDir creates dir if needed (privateDir), locks its PIDFile and writes this
// process's id in it. unlock releases the lock (the file stays).
func lockDataDir(dir string) (unlock func() error, err error) {
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	name := filepath.Join(dir, PIDFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b, _ := os.ReadFile(name)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return nil, &DataDirInUseError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("node: lock %s: %w", name, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: %s: %w", name, err)
	}
	return f.Close, nil // closing the descriptor releases the lock
}
