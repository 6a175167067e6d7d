package ndjson

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRotation: records are appended whole, a full file moves to FILE.1,
// older ones shift up, the oldest beyond Keep is deleted, and a reopened
// file goes on where it was.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "events.ndjson")
	f, err := Open(Config{Path: path, MaxBytes: 20, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if err := f.Write([]byte(fmt.Sprintf(`{"n":%d}`+"\n", i))); err != nil { // 8 bytes each: 2 per file
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(name)
		if err != nil {
			return "missing"
		}
		return strings.ReplaceAll(string(b), "\n", " ")
	}
	for name, want := range map[string]string{
		path:        `{"n":6} {"n":7} `,
		path + ".1": `{"n":4} {"n":5} `,
		path + ".2": `{"n":2} {"n":3} `,
		path + ".3": "missing",
	} {
		if got := read(name); got != want {
			t.Errorf("%s = %q, want %q", filepath.Base(name), got, want)
		}
	}
	f, err = Open(Config{Path: path, MaxBytes: 20, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Write([]byte("{\"n\":8}\n")); err != nil {
		t.Fatal(err)
	}
	if got := read(path); got != `{"n":8} ` {
		t.Fatalf("after reopening a full file: %q, want a fresh one", got)
	}
	if got := read(path + ".1"); got != `{"n":6} {"n":7} ` {
		t.Fatalf("FILE.1 after reopening: %q", got)
	}
}
