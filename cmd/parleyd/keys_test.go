package main

import (
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

// TestKeyFlags: the key directory's budgets ([S-17-15]) are flags with
// PARLEY_* variables, shown in -help, that reach the server's and the
// shards' configs; bad values are refused together, each named.
func TestKeyFlags(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-help")
	cmd.Env = append(os.Environ(), "PARLEYD_TEST_AS_MAIN=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"-key-fetches-per-minute requests", "-prekeys-per-requester-per-day prekeys"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("-help does not show %s:\n%s", f, out)
		}
	}

	parse := func(args []string) (server.Config, storage.Config, error) {
		t.Helper()
		fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
		f, err := addKeyFlags(fs)
		if err != nil {
			return server.Config{}, storage.Config{}, err
		}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		var sc server.Config
		var st storage.Config
		err = f.apply(&sc, &st)
		return sc, st, err
	}
	sc, st, err := parse(nil)
	if err != nil || sc.KeyFetchesPerMinute != 1200 || st.PreKeysPerRequester != 20 {
		t.Errorf("defaults: %d fetches a minute, %d prekeys a day, %v; want 1200, 20", sc.KeyFetchesPerMinute, st.PreKeysPerRequester, err)
	}
	sc, st, err = parse([]string{"--key-fetches-per-minute", "60", "--prekeys-per-requester-per-day", "3"})
	if err != nil || sc.KeyFetchesPerMinute != 60 || st.PreKeysPerRequester != 3 {
		t.Errorf("set: %d fetches a minute, %d prekeys a day, %v; want 60, 3", sc.KeyFetchesPerMinute, st.PreKeysPerRequester, err)
	}
	_, _, err = parse([]string{"--key-fetches-per-minute", "0", "--prekeys-per-requester-per-day", "-1"})
	for _, want := range []string{"--key-fetches-per-minute 0: want 1 or more", "--prekeys-per-requester-per-day -1: want 1 or more"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad values: %v; want %q", err, want)
		}
	}
	// parleyd itself applies them: the bad value stops it before the log
	// level, checked after the flags are applied (so a parleyd that
	// ignored them stops there, and never starts a node in this test).
	if err := run([]string{"--prekeys-per-requester-per-day", "0", "--log-level", "bogus"}); err == nil ||
		!strings.Contains(err.Error(), "--prekeys-per-requester-per-day 0") {
		t.Errorf("parleyd --prekeys-per-requester-per-day 0: %v", err)
	}
	t.Setenv("PARLEY_PREKEYS_PER_REQUESTER_PER_DAY", "7")
	t.Setenv("PARLEY_KEY_FETCHES_PER_MINUTE", "90")
	if sc, st, err = parse(nil); err != nil || sc.KeyFetchesPerMinute != 90 || st.PreKeysPerRequester != 7 {
		t.Errorf("from the environment: %d fetches a minute, %d prekeys a day, %v; want 90, 7", sc.KeyFetchesPerMinute, st.PreKeysPerRequester, err)
	}
	t.Setenv("PARLEY_KEY_FETCHES_PER_MINUTE", "lots")
	if err := run([]string{"--log-level", "bogus"}); err == nil || !strings.Contains(err.Error(), "PARLEY_KEY_FETCHES_PER_MINUTE") {
		t.Errorf("PARLEY_KEY_FETCHES_PER_MINUTE=lots: %v", err)
	}
}
