package tls13

import (
	"fmt"
	"os"
)

// childEnv names the environment variable that turns the test binary into
// a helper process (see runChild).
const childEnv = "TLS13_TEST_CHILD"

// children are the helper programs tests run in a separate process.
var children = map[string]func() error{}

// runChild runs the helper named by childEnv and returns the exit code.
func runChild(name string) int {
	f, ok := children[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown child %q\n", name)
		return 2
	}
	if err := f(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
