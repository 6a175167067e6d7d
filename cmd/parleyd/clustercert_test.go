package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/router/link"
)

// TestClusterCert: init then issue make credentials a node loads; wrong
// use gets one readable error.
func TestClusterCert(t *testing.T) {
	now := time.Now()
	caDir := filepath.Join(t.TempDir(), "ca")
	nodeDir := filepath.Join(t.TempDir(), "n3")
	var out bytes.Buffer
	if err := runClusterCert([]string{"init", "--dir", caDir}, &out, now); err != nil {
		t.Fatal(err)
	}
	if err := runClusterCert([]string{"issue", "--ca", caDir, "--node", "3", "--out", nodeDir}, &out, now); err != nil {
		t.Fatal(err)
	}
	cred, err := link.LoadCredentials(nodeDir)
	if err != nil || cred.ID != 3 {
		t.Fatalf("loading what issue wrote: %v, %v", cred, err)
	}
	if !strings.Contains(out.String(), "SHA-256") || !strings.Contains(out.String(), "node 3") {
		t.Fatalf("output: %q", out.String())
	}
	if err := runClusterCert([]string{"init", "--dir", caDir}, &out, now); !errors.Is(err, os.ErrExist) {
		t.Fatalf("init over an existing CA: %v", err)
	}
	if err := runClusterCert([]string{"issue", "--ca", caDir, "--node", "0", "--out", t.TempDir()}, &out, now); err == nil || !strings.Contains(err.Error(), "--node") {
		t.Fatalf("node 0: %v, want an error about --node", err)
	}
	for _, args := range [][]string{
		nil,
		{"renew"},
		{"init"},
		{"issue", "--ca", caDir, "--out", nodeDir},
		{"issue", "--ca", caDir, "--node", "0", "--out", t.TempDir()},
		{"issue", "--node", "x"},
		{"init", "--dir", caDir, "extra"},
	} {
		if err := runClusterCert(args, &out, now); err == nil {
			t.Errorf("cluster-cert %q succeeded", args)
		}
	}
}
