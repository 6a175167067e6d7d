package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/storage"
)

func TestMain(m *testing.M) {
	// net/http's idle client connections close on their own.
	nodetest.VerifyMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// ctl runs parleyctl against n's admin endpoint and returns its exit
// code, standard output and standard error.
func ctl(n *nodetest.Node, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(append([]string{"--admin", n.AdminAddr().String()}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func startNode(t *testing.T, shards int) *nodetest.Node {
	return nodetest.Start(t, func(c *node.Config) { c.Shards, c.AdminAddr = shards, "127.0.0.1:0" })
}

// TestBackupRestore: messages queued for offline devices on every shard,
// sent from every shard, are backed up by parleyctl while other traffic
// crosses the shards; the data directory is wiped and restored; every
// queued message then arrives exactly once, in order.
func TestBackupRestore(t *testing.T) {
	const shards, perPair = 4, 3
	n := startNode(t, shards)
	rec := nodetest.NewRecorder(t, n)
	var senders []*nodetest.Device
	var recipients []wiretest.User
	for i := range shards {
		recipients = append(recipients, n.RegisterOn(t, i))
		d := rec.Connected(n.RegisterOn(t, i))
		d.WaitSynced()
		senders = append(senders, d)
	}
	for _, d := range senders {
		for _, to := range recipients {
			for k := range perPair {
				cmid, ok := d.Send(to.ID, fmt.Appendf(nil, "%s to %d #%d", d, to.ID, k))
				if !ok {
					t.Fatalf("%s: send failed", d)
				}
				if _, err := d.WaitSent(cmid); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, to := range recipients {
		code, out, errs := ctl(n, "--json", "user", fmt.Sprint(to.ID))
		var info storage.UserInfo
		if code != 0 || json.Unmarshal([]byte(out), &info) != nil || len(info.Devices) != 1 || info.Devices[0].Queued != shards*perPair {
			t.Fatalf("parleyctl user %d: exit %d, %s %s; want one device with %d queued", to.ID, code, out, errs, shards*perPair)
		}
	}

	// Traffic between online devices on every shard while the backup is
	// taken: forwards, deliveries, acks and receipts cross the shards
	// during the pause. Its books (no duplicate, no gap) are kept apart;
	// it is not expected after the restore.
	noise := nodetest.NewRecorder(t, n)
	var talkers []*nodetest.Device
	for i := range shards {
		d := noise.Connected(n.RegisterOn(t, i))
		d.WaitSynced()
		talkers = append(talkers, d)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range talkers {
		wg.Go(func() {
			to := talkers[(i+1)%shards].User.ID
			for k := 0; k < 2000; k++ {
				select {
				case <-stop:
					return
				default:
				}
				cmid, ok := d.Send(to, []byte("noise"))
				if !ok {
					return
				}
				if _, err := d.WaitSent(cmid); err != nil {
					return
				}
			}
		})
	}

	backup := filepath.Join(t.TempDir(), "backup")
	code, out, errs := ctl(n, "backup", "--to", backup)
	close(stop)
	wg.Wait()
	if code != 0 || !strings.HasPrefix(out, fmt.Sprintf("backup of %d shards written to %s", shards, backup)) {
		t.Fatalf("parleyctl backup: exit %d, %q %q", code, out, errs)
	}
	noise.Check()
	for _, d := range talkers {
		d.Disconnect()
	}
	if _, err := os.Stat(filepath.Join(n.DataDir(), "backups")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(n.DataDir(), "backups"))
		if len(entries) > 0 {
			t.Errorf("the node kept %d temporary backups", len(entries))
		}
	}

	for _, d := range senders {
		d.Disconnect()
	}
	n.RestartWith(t, func(dir string) {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := node.Restore(backup, dir); err != nil {
			t.Fatal(err)
		}
	})
	for _, to := range recipients {
		d := rec.Device(to)
		d.Connect()
		d.WaitSynced()
	}
	rec.Settle()
}
