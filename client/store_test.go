package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol/pb"
)

func TestFileStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alice.json")
	f, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Load(); st.Credentials.User != 0 || st.Cursor != 0 || len(st.Outbox) != 0 {
		t.Fatalf("new store not empty: %+v", st)
	}
	steps := []error{
		f.SaveCredentials(testCreds),
		f.SaveCursor(12),
		f.AddOutgoing(Outgoing{CMID: 3, To: 9, Body: []byte("three"), Type: pb.ContentType_CONTENT_VOICE}),
		f.AddOutgoing(Outgoing{CMID: 1, To: 9, Body: []byte("one")}),
		f.AddOutgoing(Outgoing{CMID: 2, To: 8, Body: []byte{0, 255}}),
		f.RemoveOutgoing(1),
		f.SetAttr("server", "chat.example:7443"),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.SaveCursor(13); !errors.Is(err, ErrClosed) {
		t.Errorf("SaveCursor after Close = %v", err)
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", info.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if e.Name() != "alice.json" && e.Name() != "alice.json.lock" {
			t.Errorf("stray file %s", e.Name())
		}
	}

	g, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	st, err := g.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := []Outgoing{
		{CMID: 2, To: 8, Body: []byte{0, 255}},
		{CMID: 3, To: 9, Body: []byte("three"), Type: pb.ContentType_CONTENT_VOICE},
	}
	if st.Credentials.User != testCreds.User || string(st.Credentials.Secret) != string(testCreds.Secret) ||
		st.Cursor != 12 || st.LastCMID != 3 || !slices.EqualFunc(st.Outbox, want, outgoingEqual) {
		t.Errorf("reloaded %+v", st)
	}
	if got := g.Attr("server"); got != "chat.example:7443" {
		t.Errorf("Attr = %q", got)
	}
	if err := g.Reset(); err != nil {
		t.Fatal(err)
	}
	if st, _ := g.Load(); st.Credentials.User != 0 || st.Cursor != 0 || st.LastCMID != 0 || len(st.Outbox) != 0 {
		t.Errorf("after Reset: %+v", st)
	}
	if got := g.Attrs(); len(got) != 1 || got["server"] != "chat.example:7443" {
		t.Errorf("Attrs after Reset = %v", got)
	}
}

func outgoingEqual(a, b Outgoing) bool {
	return a.CMID == b.CMID && a.To == b.To && string(a.Body) == string(b.Body) && a.Type == b.Type
}

func TestFileStoreLocked(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no flock")
	}
	path := filepath.Join(t.TempDir(), "p.json")
	f, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path); !errors.Is(err, ErrLocked) {
		t.Errorf("second open = %v, want ErrLocked", err)
	}
	f.Close()
	g, err := OpenFileStore(path)
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	g.Close()
}

func TestFileStoreRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(path, []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path); err == nil {
		t.Error("opened a file of an unknown version")
	}
	if err := os.WriteFile(path, []byte(`not json`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path); err == nil {
		t.Error("opened a file that is not JSON")
	}
}

// TestCMIDNeverReused checks [S-8-11]: the cmid counter survives a restart,
// also when every send has been answered.
func TestCMIDNeverReused(t *testing.T) {
	srv := newFakeServer(t, false)
	path := filepath.Join(t.TempDir(), "p.json")
	for run, want := range []uint64{1, 2} {
		f, err := OpenFileStore(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(srv)
		cfg.Plain = true // the fake server has no key directory
		c := startClient(t, cfg, f)
		fc := srv.accept(t)
		fc.login(16, 30, 0)
		res := sendAsyncTest(c, context.Background(), 9, "x")
		if s := expectSend(t, fc); s.CMID != want {
			t.Fatalf("run %d: cmid %d, want %d", run, s.CMID, want)
		}
		fc.write(codec.AppendSent(nil, want, 100+want))
		if o := outcome(t, res); o.err != nil {
			t.Fatal(o.err)
		}
		c.Close()
		f.Close()
	}
}
