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
	for _, flag := range []string{"-max-conns ", "-max-conns-per-ip ", "-max-handshakes-per-ip ", "-fd-reserve ",
		"-sends-per-second ", "-sends-burst ", "-group-sends-per-second ", "-group-sends-burst ",
		"-conn-codes-per-minute ", "-ip-codes-per-hour ", "-prefix-codes-per-hour ", "-node-codes-per-second ",
		"-ip-link-requests-per-minute ", "-count-log-codes", "-limit-loopback"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("-help does not show %s", flag)
		}
	}
	if err := run([]string{"--max-conns-per-ip", "-1"}); err == nil || !strings.Contains(err.Error(), "--max-conns-per-ip -1") {
		t.Errorf("negative --max-conns-per-ip: %v", err)
	}
	if err := run([]string{"--sends-burst", "0"}); err == nil || !strings.Contains(err.Error(), "--sends-burst 0") {
		t.Errorf("--sends-burst 0: %v", err)
	}
	if err := run([]string{"--ip-codes-per-hour", "-2"}); err == nil || !strings.Contains(err.Error(), "--ip-codes-per-hour -2") {
		t.Errorf("negative --ip-codes-per-hour: %v", err)
	}
	t.Setenv("PARLEY_SENDS_PER_SECOND", "fast")
	if err := run(nil); err == nil || !strings.Contains(err.Error(), "PARLEY_SENDS_PER_SECOND") {
		t.Errorf("PARLEY_SENDS_PER_SECOND=fast: %v", err)
	}
	t.Setenv("PARLEY_SENDS_PER_SECOND", "1000")
	t.Setenv("PARLEY_MAX_HANDSHAKES_PER_IP", "many")
	if err := run(nil); err == nil || !strings.Contains(err.Error(), "PARLEY_MAX_HANDSHAKES_PER_IP") {
		t.Errorf("PARLEY_MAX_HANDSHAKES_PER_IP=many: %v", err)
	}
}
