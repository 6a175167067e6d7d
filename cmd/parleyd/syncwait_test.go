package main

import (
	"testing"
	"time"

	"github.com/parley-im/parley/storage"
)

// TestSyncWaitFlag: --sync-wait 0 turns adaptive group commit off (a
// negative storage.Config.SyncWait; zero there would mean the default),
// a positive wait is passed on as it is, and the flag's default is the
// storage default.
func TestSyncWaitFlag(t *testing.T) {
	for _, tc := range []struct {
		flag, want time.Duration
	}{{0, -1}, {storage.DefaultSyncWait, storage.DefaultSyncWait}, {200 * time.Microsecond, 200 * time.Microsecond}} {
		got, err := storageSyncWait(tc.flag)
		if err != nil || got != tc.want {
			t.Errorf("--sync-wait %v: storage SyncWait %v (%v), want %v", tc.flag, got, err, tc.want)
		}
	}
	if _, err := storageSyncWait(-time.Microsecond); err == nil {
		t.Error("--sync-wait -1µs accepted")
	}
}
