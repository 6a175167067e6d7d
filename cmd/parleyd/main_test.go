package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router"
)

// TestMain runs the test binary as parleyd itself when asked, so tests
// can start, kill -9 and restart real parleyd processes without building
// a separate binary.
func TestMain(m *testing.M) {
	if os.Getenv("PARLEYD_TEST_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// daemon is a parleyd child process.
type daemon struct {
	cmd     *exec.Cmd
	addr    string
	dir     string
	mu      sync.Mutex
	codes   map[string]string // guarded by mu
	output  strings.Builder   // guarded by mu: everything the child printed
	changed chan struct{}     // guarded by mu: closed and replaced on every line
	ready   chan struct{}
	exit    chan struct{}
}

var (
	codeLine  = regexp.MustCompile(`phone=(\+\d+) code=(\d+)`)
	readyAddr = regexp.MustCompile(` addr=(\S+)`)
)

// startDaemon starts parleyd on addr ("": a port the kernel picks, read
// from the ready line; a restart passes the first start's d.addr) with its
// data in dir, its media and admin endpoints on free ports, and waits
// until it is ready. A child that exits or hangs fails the test with
// everything it printed.
func startDaemon(t *testing.T, dir, addr string) *daemon {
	t.Helper()
	d := launchDaemon(t, dir, addr, "--shards", "2")
	d.waitReady(t)
	return d
}

// launchDaemon starts parleyd as startDaemon does, with the extra
// arguments, without waiting for it to be ready (waitReady does; d.addr
// is set only then); the test's end kills it.
func launchDaemon(t *testing.T, dir, addr string, extra ...string) *daemon {
	t.Helper()
	listen := addr
	if listen == "" {
		listen = "127.0.0.1:0" // never a port picked here and freed: another process may take it first
	}
	d := &daemon{dir: dir, codes: map[string]string{}, changed: make(chan struct{}), ready: make(chan struct{}), exit: make(chan struct{})}
	args := append([]string{"--listen", listen, "--data", dir,
		"--test-phone-prefix", "+1555000", "--test-code", testCode, "--admin", "127.0.0.1:0", "--media-listen", "127.0.0.1:0"}, extra...)
	d.cmd = exec.Command(os.Args[0], args...)
	d.cmd.Env = append(os.Environ(), "PARLEYD_TEST_AS_MAIN=1")
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.cmd.Stdout // one stream, in the order printed
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(d.exit)
		s := bufio.NewScanner(out)
		once := sync.Once{}
		for s.Scan() {
			line := s.Text()
			d.mu.Lock()
			d.output.WriteString(line + "\n")
			if m := codeLine.FindStringSubmatch(line); m != nil {
				d.codes[m[1]] = m[2]
			}
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
			if strings.Contains(line, "parleyd ready") {
				once.Do(func() {
					if m := readyAddr.FindStringSubmatch(line); m != nil {
						d.addr = m[1] // before close(d.ready), which publishes it
					}
					close(d.ready)
				})
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = d.cmd.Wait()
	}()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("parleyd %s printed:\n%s", listen, d.printed())
		}
	})
	return d
}

// waitReady waits until d printed its ready line (naming its address),
// failing the test if it exits or is not ready within 30 s.
func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-d.ready:
		if d.addr == "" {
			d.kill()
			t.Fatalf("parleyd's ready line names no addr; it printed:\n%s", d.printed())
		}
	case <-d.exit:
		t.Fatalf("parleyd exited before it was ready (%v); it printed:\n%s", d.cmd.ProcessState, d.printed())
	case <-time.After(30 * time.Second):
		d.kill()
		t.Fatalf("parleyd not ready after 30 s; it printed:\n%s", d.printed())
	}
}

// printed returns everything the child printed so far.
func (d *daemon) printed() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.output.String()
}

// testCode verifies the daemon's test numbers (+1555000…).
const testCode = "314159"

// code returns the code sent to phone: the test code for a test number,
// else the one the log sender logged, waiting up to 5 s for the log line.
func (d *daemon) code(phone string) string {
	if strings.HasPrefix(phone, "+1555000") {
		return testCode
	}
	deadline := time.After(5 * time.Second)
	for {
		d.mu.Lock()
		c, changed := d.codes[phone], d.changed
		d.mu.Unlock()
		if c != "" {
			return c
		}
		select {
		case <-changed:
		case <-d.exit:
			return ""
		case <-deadline:
			return ""
		}
	}
}

// kill sends SIGKILL and waits for the process to go.
func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exit
}

func (d *daemon) fingerprint(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

// registerPair registers alice on shard 0 and bob on shard 1 of d, whose
// certificate has fingerprint fp, on a connection it then closes.
func registerPair(t *testing.T, d *daemon, fp string) (alice, bob wiretest.User) {
	t.Helper()
	reg := wiretest.Dial(t, d.addr, fp)
	defer reg.Conn.Close()
	return reg.Register(phoneOn(t, 0, 0), d.code), reg.Register(phoneOn(t, 1, 0), d.code)
}

// phoneOn returns a test phone number (prefix +1555000, which verifies
// with the test code) served by shard of a two-shard parleyd.
func phoneOn(t *testing.T, shard int, skip int) string {
	t.Helper()
	r, err := router.New(2)
	if err != nil {
		t.Fatal(err)
	}
	for i := skip; i < 10_000; i++ {
		p := fmt.Sprintf("+1555000%04d", i)
		if int(r.ShardOfPhone(p)) == shard {
			return p
		}
	}
	t.Fatalf("no test phone on shard %d", shard)
	return ""
}

// TestKill9LosesNoAcknowledgedMessage is invariant 1 through a real
// process: parleyd is killed with SIGKILL in the middle of a stream of
// pipelined 1:1 and group sends. The users live on different shards and
// the sender has a second device on purpose, so every path through the
// outbox between shards is in flight at the kill: the messages to Bob's
// shard, the copies for Alice's companion coming back, the group's
// fan-out and the delivered receipts. After a restart, every message whose
// Sent the client saw is delivered; the client resends the rest with the
// same cmids; each device gets every message exactly once, in one order.
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	// The client pipelines 2,000 sends with no pause and does not wait out
	// RATE_LIMITED: the account's send rates ([S-8-23]) are lifted.
	t.Setenv("PARLEY_SENDS_PER_SECOND", "0")
	t.Setenv("PARLEY_GROUP_SENDS_PER_SECOND", "0")
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	addr, fp := d.addr, d.fingerprint(t)
	alice, bob := registerPair(t, d, fp)
	if alice.ID&4095 >= 2048 || bob.ID&4095 < 2048 {
		t.Fatalf("alice %d and bob %d are not on shards 0 and 1", alice.ID, bob.ID)
	}
	a := wiretest.Dial(t, addr, fp)
	a.Login(alice, 0)
	laptop := wiretest.Link(t, addr, fp, a, "laptop")
	a.Send(protocol.KindGroupCreate, &pb.GroupCreate{Rid: a.NextRID(), Name: "kill -9", Members: []uint64{bob.ID}})
	var info pb.GroupInfo
	a.ExpectProto(protocol.KindGroupInfo, &info, protocol.KindMessage, protocol.KindGroupEvent, protocol.KindSynced)
	if len(info.Members) != 2 {
		t.Fatalf("group %+v, want alice and bob", info.Members)
	}
	// Odd cmids are 1:1 messages to Bob, even ones group messages.
	const total = 2000
	send := func(buf []byte, cmid uint64) []byte {
		s := codec.Send{To: bob.ID, CMID: cmid, Body: fmt.Appendf(nil, "m%d", cmid)}
		if cmid%2 == 0 {
			s.To, s.Group = 0, info.Group
		}
		return codec.AppendSend(buf, s)
	}

	sentBefore := map[uint64]uint64{} // cmid → id, Sent seen before the kill
	go func() {
		var buf []byte
		for cmid := uint64(1); cmid <= total; cmid++ {
			buf = send(buf[:0], cmid)
			if _, err := a.Conn.Write(buf); err != nil {
				return // the server died
			}
		}
	}()
	for len(sentBefore) < 300 {
		f, err := a.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("before the kill: %v", err)
		}
		if f.Kind == protocol.KindSent {
			var s pb.Sent
			if err := codec.ParseProto(f.Body, &s); err != nil {
				t.Fatal(err)
			}
			sentBefore[s.Cmid] = s.Id
		}
	}
	d.kill()
	t.Logf("killed parleyd after %d Sent acknowledgements", len(sentBefore))

	startDaemon(t, dir, addr)
	a = wiretest.Dial(t, addr, fp)
	a.Login(alice, 0)
	ids := map[uint64]uint64{} // cmid → id after the retry
	for cmid := uint64(1); cmid <= total; cmid++ {
		a.Write(send(nil, cmid))
		if cmid%100 == 0 || cmid == total {
			for uint64(len(ids)) < cmid {
				var s pb.Sent
				a.ExpectProto(protocol.KindSent, &s, protocol.KindSynced, protocol.KindReceipt, protocol.KindReceipts, protocol.KindMessage, protocol.KindGroupEvent)
				ids[s.Cmid] = s.Id
			}
		}
	}
	for cmid, id := range sentBefore {
		if ids[cmid] != id {
			t.Fatalf("cmid %d: id %d before the kill, %d after the retry", cmid, id, ids[cmid])
		}
	}

	// Bob gets all 2,000 messages once, in one order; Alice's companion
	// gets a copy of each, once, then Bob's delivered receipts.
	var oneToOne, group uint64
	for cmid, id := range ids {
		if cmid%2 == 1 {
			oneToOne = max(oneToOne, id)
		} else {
			group = max(group, id)
		}
	}
	b := wiretest.Dial(t, addr, fp)
	b.Login(bob, 0)
	bs := &stream{seen: map[uint64]bool{}}
	for len(bs.seen) < total {
		bs.read(t, b, "bob", ids, alice.ID)
	}
	b.Ack(bs.last)
	l := wiretest.Dial(t, addr, fp)
	l.Login(laptop, 0)
	ls := &stream{seen: map[uint64]bool{}}
	for len(ls.seen) < total || ls.direct < oneToOne || ls.grouped < group {
		ls.read(t, l, "laptop", ids, bob.ID)
	}
}

// stream is what a device has read of its inbox stream.
type stream struct {
	last            uint64          // the last seq
	seen            map[uint64]bool // cmids of the messages read
	direct, grouped uint64          // the highest delivered receipts from the peer: 1:1, group
}

// read reads c's next entry into st, checking that seqs increase and that
// each message is new and has the id Sent gave its cmid.
func (st *stream) read(t *testing.T, c *wiretest.Client, who string, ids map[uint64]uint64, peer uint64) {
	t.Helper()
	f, err := c.Next(wiretest.Timeout)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	var seq uint64
	switch f.Kind {
	case protocol.KindSynced:
		return
	case protocol.KindGroupEvent:
		var ev pb.GroupEvent
		if err := codec.ParseProto(f.Body, &ev); err != nil {
			t.Fatal(err)
		}
		seq = ev.Seq
	case protocol.KindMessage:
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		seq = m.Seq
		var cmid uint64
		fmt.Sscanf(string(m.Body), "m%d", &cmid)
		if st.seen[cmid] {
			t.Fatalf("%s: %s delivered twice", who, m.Body)
		}
		st.seen[cmid] = true
		if ids[cmid] != m.ID {
			t.Fatalf("%s: %s has id %d, Sent said %d", who, m.Body, m.ID, ids[cmid])
		}
	case protocol.KindReceipt:
		r, err := codec.ParseReceipt(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		seq = r.Seq
		if r.Type == pb.ReceiptType_RECEIPT_DELIVERED && r.Peer == peer {
			st.direct = max(st.direct, r.UpTo)
		}
	case protocol.KindReceipts:
		var r pb.Receipts
		if err := codec.ParseProto(f.Body, &r); err != nil {
			t.Fatal(err)
		}
		seq = r.Seq
		for _, it := range r.Items {
			if r.Type == pb.ReceiptType_RECEIPT_DELIVERED && it.Peer == peer {
				st.grouped = max(st.grouped, it.UpTo)
			}
		}
	default:
		t.Fatalf("%s: unexpected %v", who, f.Kind)
	}
	if seq <= st.last {
		t.Fatalf("%s: seq %d after %d", who, seq, st.last)
	}
	st.last = seq
	if st.last%100 == 0 {
		c.Ack(st.last)
	}
}

// TestMediaFlags: the media limit flags and their environment variables
// reach media.Config; a flag's 0 turns its limit off.
func TestMediaFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want media.Config
	}{
		{nil, nil, media.Config{MaxTransfers: 256, MaxUserTransfers: 8, ReservedTransfers: 0, MinTransferRate: 1024, StagingQuota: 4 << 30, MinFreeBytes: 1 << 30}},
		{[]string{"--media-max-transfers", "1000", "--media-user-transfers", "4", "--media-reserved-transfers", "0",
			"--media-min-rate", "0", "--media-staging-quota-mib", "0", "--media-min-free-mib", "0"}, nil,
			media.Config{MaxTransfers: 1000, MaxUserTransfers: 4, ReservedTransfers: -1, MinTransferRate: -1, StagingQuota: -1, MinFreeBytes: -1}},
		{[]string{"--media-min-rate", "2048"}, map[string]string{"PARLEY_MEDIA_MIN_RATE": "1", "PARLEY_MEDIA_STAGING_QUOTA_MIB": "100", "PARLEY_MEDIA_MIN_FREE_MIB": "10240"},
			media.Config{MaxTransfers: 256, MaxUserTransfers: 8, ReservedTransfers: 0, MinTransferRate: 2048, StagingQuota: 100 << 20, MinFreeBytes: 10 << 30}},
		{[]string{"--media-reserved-transfers", "10"}, nil,
			media.Config{MaxTransfers: 256, MaxUserTransfers: 8, ReservedTransfers: 10, MinTransferRate: 1024, StagingQuota: 4 << 30, MinFreeBytes: 1 << 30}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
			f, err := addMediaFlags(fs)
			if err != nil {
				t.Fatal(err)
			}
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := f.config()
			if err != nil || got.MaxTransfers != tt.want.MaxTransfers || got.MaxUserTransfers != tt.want.MaxUserTransfers ||
				got.ReservedTransfers != tt.want.ReservedTransfers || got.MinTransferRate != tt.want.MinTransferRate ||
				got.StagingQuota != tt.want.StagingQuota || got.MinFreeBytes != tt.want.MinFreeBytes {
				t.Errorf("%v %v: %+v %v", tt.args, tt.env, got, err)
			}
		})
	}
}

// TestBadArguments: bad input gets a non-zero exit and one readable line.
func TestBadArguments(t *testing.T) {
	// A cluster start refused later anyway (no etcd given), so that a
	// bad environment value ignored cannot start a node and hang.
	clusterArgs := []string{"--cluster", "--node-id", "1", "--link-listen", "127.0.0.1:0"}
	tests := []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--shards", "x"}, "", `invalid value "x" for flag -shards: parse error`},
		{[]string{"--nope"}, "", "flag provided but not defined: -nope"},
		{[]string{"extra"}, "", `unexpected argument "extra"`},
		{nil, "PARLEY_SHARDS=many", `PARLEY_SHARDS="many" is not a number`},
		{nil, "PARLEY_HEARTBEAT=5", `PARLEY_HEARTBEAT="5" is not a duration (like 60s)`},
		{[]string{"--log-level", "loud"}, "", `bad --log-level "loud"`},
		{[]string{"--shards", "-1"}, "", "--shards -1: want 0 (the default) or more"},
		{[]string{"--sync-wait", "-50us"}, "", "--sync-wait -50µs: want 0 (never wait) or more"},
		{nil, "PARLEY_SYNC_WAIT=soon", `PARLEY_SYNC_WAIT="soon" is not a duration (like 60s)`},
		{[]string{"--test-code", "1"}, "", "--test-phone-prefix and --test-code go together"},
		{[]string{"--shards", "2000", "--data", "DIR"}, "", "node: 2000 shards, want 1 to 1024"},
		{[]string{"--media-user-transfers", "0"}, "", "--media-user-transfers 0: want 1 or more"},
		{nil, "PARLEY_MEDIA_MIN_FREE_MIB=-5", "--media-min-free-mib -5: want 0 or more"},
		{nil, "PARLEY_MEDIA_MIN_RATE=fast", `PARLEY_MEDIA_MIN_RATE="fast" is not a number`},
		{[]string{"--media-user-transfers", "300"}, "", "--media-user-transfers 300: above --media-max-transfers 256"},
		{[]string{"--media-max-transfers", "16", "--media-reserved-transfers", "16"}, "", "--media-reserved-transfers 16: leaves none of --media-max-transfers 16"},
		{[]string{"--media-reserved-transfers", "-2"}, "", "--media-reserved-transfers -2: want -1 or more"},
		{[]string{"--sms", "twilio"}, "", "no Twilio auth token: give --twilio-auth-token-file or set PARLEY_TWILIO_AUTH_TOKEN; sms: twilio: no account SID; want exactly one of a sender (From) and a messaging service SID"},
		{[]string{"--sms-text", "hello"}, "", `--sms-text "hello": no {code} where the code goes`},
		{nil, "PARLEY_SMS_DEADLINE=soon", `PARLEY_SMS_DEADLINE="soon" is not a duration (like 60s)`},
		{clusterArgs, "PARLEY_LEASE_TTL=5", `PARLEY_LEASE_TTL="5" is not a duration (like 60s)`},
		{clusterArgs, "PARLEY_MIN_NODES=two", `PARLEY_MIN_NODES="two" is not a number`},
	}
	for _, tt := range tests {
		args := append([]string(nil), tt.args...)
		for i, a := range args {
			if a == "DIR" {
				args[i] = t.TempDir()
			}
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "PARLEYD_TEST_AS_MAIN=1")
		if tt.env != "" {
			cmd.Env = append(cmd.Env, tt.env)
		}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%v %s: exit 0, want failure", tt.args, tt.env)
			continue
		}
		if got, want := string(out), "parleyd: "+tt.want+"\n"; got != want {
			t.Errorf("%v %s: output %q, want %q", tt.args, tt.env, got, want)
		}
	}
}

// TestDataFilesPrivate: everything parleyd writes under its data
// directory is its user's only (issue 9: shards and media metadata were
// 0644/0755, relying on a parent directory a pre-created data directory
// may not have).
func TestDataFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "")
	c := wiretest.Dial(t, d.addr, d.fingerprint(t))
	c.Register(phoneOn(t, 0, 0), d.code)
	c.Conn.Close()
	d.kill()
	n := 0
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v: readable by others than parleyd's user", path, info.Mode().Perm())
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d files under the data directory", n)
	}
}

// TestDrainThenRestore: POST /drain (parleyctl drain) makes parleyd tell
// its clients to go away and exit 0; parleyd restore refuses what is not
// a complete backup and a data directory in use, each in one line.
func TestDrainThenRestore(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	u := wiretest.Dial(t, d.addr, d.fingerprint(t)).Register("+15550004242", d.code)
	c := wiretest.Dial(t, d.addr, d.fingerprint(t))
	c.Login(u, 0)
	m := regexp.MustCompile(`admin=(\S+)`).FindStringSubmatch(d.printed())
	if m == nil {
		t.Fatalf("no admin address in %q", d.printed())
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+m[1]+"/drain", nil)
	req.Header.Set("Parley-Admin", "test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.ExpectProto(protocol.KindGoAway, &pb.GoAway{}, protocol.KindSynced, protocol.KindPresence)
	select {
	case <-d.exit:
	case <-time.After(30 * time.Second):
		t.Fatalf("parleyd still running 30 s after the drain; it printed:\n%s", d.printed())
	}
	if !d.cmd.ProcessState.Success() || !strings.Contains(d.printed(), "draining") {
		t.Errorf("after the drain: %v; it printed:\n%s", d.cmd.ProcessState, d.printed())
	}

	restore := func(args ...string) string {
		cmd := exec.Command(os.Args[0], append([]string{"restore"}, args...)...)
		cmd.Env = append(os.Environ(), "PARLEYD_TEST_AS_MAIN=1")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("restore %v: exit 0, want failure", args)
		}
		return string(out)
	}
	if got, want := restore("--from", dir, "--data", t.TempDir()), "parleyd: node: "+dir+" is not a complete backup (no BACKUP.json)\n"; got != want {
		t.Errorf("restore from a data directory: %q, want %q", got, want)
	}
	if got, want := restore("--data", t.TempDir()), "parleyd: restore: usage: parleyd restore --from BACKUP --data DATADIR\n"; got != want {
		t.Errorf("restore without --from: %q, want %q", got, want)
	}
}
