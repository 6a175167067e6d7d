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
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
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

// TestCommands: status, user (by id and by phone), revoke and drain
// through a real node's admin endpoint.
func TestCommands(t *testing.T) {
	n := startNode(t, 2)
	alice := n.RegisterOn(t, 1)
	primary, _ := n.Login(t, alice, 0)
	laptop := n.Link(t, primary, "laptop")

	code, out, errs := ctl(n, "status")
	if code != 0 || !strings.Contains(out, ", ready\n") || !strings.Contains(out, "clients    "+n.Addr().String()) ||
		!strings.Contains(out, n.Fingerprint()) || strings.Count(out, "\n") < 6 {
		t.Errorf("status: exit %d, %q %q", code, out, errs)
	}
	code, out, errs = ctl(n, "user", alice.Phone)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("user %d, %s", alice.ID, alice.Phone)) ||
		!strings.Contains(out, "primary") || !strings.Contains(out, "laptop") {
		t.Errorf("user %s: exit %d, %q %q", alice.Phone, code, out, errs)
	}

	// Revoking the laptop closes its connection with DEVICE_REVOKED.
	lc, _ := n.Login(t, laptop, 0)
	code, out, errs = ctl(n, "revoke", fmt.Sprint(alice.ID), fmt.Sprint(laptop.Device))
	if code != 0 || out != fmt.Sprintf("revoked device %d of user %d\n", laptop.Device, alice.ID) {
		t.Errorf("revoke: exit %d, %q %q", code, out, errs)
	}
	var e pb.Error
	lc.ExpectProto(protocol.KindError, &e, protocol.KindSynced, protocol.KindMessage, protocol.KindGroupEvent, protocol.KindPresence)
	if e.Code != protocol.CodeDeviceRevoked {
		t.Errorf("the revoked laptop got %v, want DEVICE_REVOKED", e.Code)
	}
	code, out, _ = ctl(n, "--json", "user", fmt.Sprint(alice.ID))
	var info storage.UserInfo
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || len(info.Devices) != 2 || !info.Devices[1].Revoked {
		t.Errorf("user after revoke: exit %d, %s", code, out)
	}

	code, out, errs = ctl(n, "drain")
	if code != 0 || !strings.HasPrefix(out, "draining") {
		t.Errorf("drain: exit %d, %q %q", code, out, errs)
	}
	select {
	case <-n.Draining():
	default:
		t.Error("the node was not told to drain")
	}
	code, out, _ = ctl(n, "status")
	if code != 0 || !strings.Contains(out, "NOT READY: draining") {
		t.Errorf("status while draining: exit %d, %q", code, out)
	}
}

// TestBadInput: bad usage exits 2, a refusal or an unreachable node 1,
// each with one readable line.
func TestBadInput(t *testing.T) {
	n := startNode(t, 1)
	alice := n.Register(t, n.Phone())
	taken := t.TempDir()
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "parleyctl: no command (parleyctl -help)"},
		{[]string{"launch"}, 2, `parleyctl: unknown command "launch" (parleyctl -help)`},
		{[]string{"user"}, 2, "parleyctl: user takes one argument: a user id or a phone number (+…) (parleyctl -help)"},
		{[]string{"revoke", "x", "1"}, 2, "parleyctl: revoke x 1: want a user id and a device id (numbers; parleyctl user lists them) (parleyctl -help)"},
		{[]string{"backup"}, 2, "parleyctl: backup takes --to DIR (parleyctl -help)"},
		{[]string{"--nope", "status"}, 2, "parleyctl: flag provided but not defined: -nope (parleyctl -help)"},
		{[]string{"user", "12ab"}, 1, `parleyctl: admin: "12ab": want a user id or a phone number in E.164 (+ and 3 to 15 digits) (HTTP 400)`},
		{[]string{"user", "+15559999999"}, 1, "parleyctl: storage: no such user: +15559999999 (HTTP 404)"},
		{[]string{"revoke", fmt.Sprint(alice.ID), "1"}, 1, fmt.Sprintf("parleyctl: node: device 1 is user %d's primary: it cannot be revoked (the user registers again): admin: refused (HTTP 422)", alice.ID)},
		{[]string{"revoke", fmt.Sprint(alice.ID), "7"}, 1, fmt.Sprintf("parleyctl: node: user %d has no active device 7: admin: refused (HTTP 422)", alice.ID)},
		{[]string{"backup", "--to", taken}, 1, "parleyctl: " + taken + " exists: back up into a new directory"},
	} {
		code, out, errs := ctl(n, tt.args...)
		if code != tt.code || out != "" || errs != tt.want+"\n" {
			t.Errorf("%v: exit %d, %q %q; want %d, %q", tt.args, code, out, errs, tt.code, tt.want)
		}
	}
	var out, errs bytes.Buffer
	code := run([]string{"--admin", "127.0.0.1:1", "status"}, &out, &errs)
	if want := "parleyctl: cannot reach the admin endpoint at 127.0.0.1:1 (is parleyd running with --admin there? --admin or PARLEY_ADMIN names another): dial tcp 127.0.0.1:1: connect: connection refused\n"; code != 1 || errs.String() != want {
		t.Errorf("unreachable: exit %d, %q, want %q", code, errs.String(), want)
	}
}
