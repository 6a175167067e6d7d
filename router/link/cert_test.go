package link

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCertFiles: a CA created once, node credentials issued from it and
// loaded back; neither is ever overwritten.
func TestCertFiles(t *testing.T) {
	now := time.Now()
	caDir := filepath.Join(t.TempDir(), "ca")
	nodeDir := filepath.Join(t.TempDir(), "node7")
	if err := CreateCA(caDir, now); err != nil {
		t.Fatal(err)
	}
	if err := CreateCA(caDir, now); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second CreateCA: %v, want ErrExist", err)
	}
	if err := IssueNode(caDir, nodeDir, 7, now); err != nil {
		t.Fatal(err)
	}
	if err := IssueNode(caDir, nodeDir, 8, now); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second IssueNode into one directory: %v, want ErrExist", err)
	}
	// A directory holding part of a set gets none of it.
	partial := t.TempDir()
	if err := os.WriteFile(filepath.Join(partial, NodeKeyFile), []byte("old key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := IssueNode(caDir, partial, 9, now); !errors.Is(err, os.ErrExist) {
		t.Fatalf("IssueNode over a key: %v, want ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(partial, NodeCertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("IssueNode over a key wrote a certificate: %v", err)
	}
	cred, err := LoadCredentials(nodeDir)
	if err != nil {
		t.Fatal(err)
	}
	if cred.ID != 7 {
		t.Fatalf("loaded node id %d, want 7", cred.ID)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the CA key was copied to the node: %v", err)
	}
	for _, name := range []string{NodeKeyFile, CAKeyFile} {
		dir := nodeDir
		if name == CAKeyFile {
			dir = caDir
		}
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}

	// A node certificate of another CA does not load against this CA.
	other := filepath.Join(t.TempDir(), "other")
	if err := CreateCA(other, now); err != nil {
		t.Fatal(err)
	}
	if err := IssueNode(other, filepath.Join(other, "n"), 7, now); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(caDir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "n", CAFile), caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCredentials(filepath.Join(other, "n")); err == nil {
		t.Fatal("loaded a node certificate that the CA beside it did not sign")
	}
}

// TestNodeIDOf: exactly one well-formed node name.
func TestNodeIDOf(t *testing.T) {
	cases := []struct {
		names []string
		id    uint32
		ok    bool
	}{
		{[]string{"node-1.parley.invalid"}, 1, true},
		{[]string{"example.com", "node-4294967295.parley.invalid"}, 4294967295, true},
		{[]string{"node-0.parley.invalid"}, 0, false},
		{[]string{"node-01.parley.invalid"}, 0, false},
		{[]string{"node-4294967296.parley.invalid"}, 0, false},
		{[]string{"node-1.parley.invalid", "node-2.parley.invalid"}, 0, false},
		{[]string{"node-x.parley.invalid"}, 0, false},
		{[]string{"node-1.parley.example"}, 0, false},
		{nil, 0, false},
	}
	for _, tc := range cases {
		id, err := NodeIDOf(&x509.Certificate{DNSNames: tc.names})
		if (err == nil) != tc.ok || id != tc.id {
			t.Errorf("NodeIDOf(%q) = %d, %v; want %d, ok %v", tc.names, id, err, tc.id, tc.ok)
		}
	}
}
