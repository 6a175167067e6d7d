package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLimitFlags: the connection limits are flags with PARLEY_* variables,
// shown in -help, and bad values stop parleyd with one readable line.
func TestLimitFlags(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-help")
	cmd.Env = append(os.Environ(), "PARLEYD_TEST_AS_MAIN=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"-max-conns ", "-max-conns-per-ip ", "-max-handshakes-per-ip ", "-fd-reserve "} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("-help does not show %s", flag)
		}
	}
	if err := run([]string{"--max-conns-per-ip", "-1"}); err == nil || !strings.Contains(err.Error(), "--max-conns-per-ip -1") {
		t.Errorf("negative --max-conns-per-ip: %v", err)
	}
	t.Setenv("PARLEY_MAX_HANDSHAKES_PER_IP", "many")
	if err := run(nil); err == nil || !strings.Contains(err.Error(), "PARLEY_MAX_HANDSHAKES_PER_IP") {
		t.Errorf("PARLEY_MAX_HANDSHAKES_PER_IP=many: %v", err)
	}
}
