package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/parley-im/parley/router/link"
)

// clusterCertUsage is the help of `parleyd cluster-cert`.
const clusterCertUsage = `usage:
  parleyd cluster-cert init --dir DIR
      create the cluster CA in DIR (once per cluster; keep DIR off the nodes)
  parleyd cluster-cert issue --ca DIR --node ID --out NODEDIR
      sign a certificate for node ID (1 to 4294967295) with the CA in DIR,
      writing it, its key and the CA certificate to NODEDIR (the node's
      cluster directory)`

// runClusterCert runs `parleyd cluster-cert`: the node-link certificates
// of docs/cluster.md ("Node links"). It writes what it created, or its
// usage when asked for it or used wrongly, to out; errors are one line.
func runClusterCert(args []string, out io.Writer, now time.Time) error {
	if len(args) == 0 || (args[0] != "init" && args[0] != "issue") {
		fmt.Fprintln(out, clusterCertUsage)
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("cluster-cert: want init or issue")
	}
	fs := flag.NewFlagSet("parleyd cluster-cert "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "directory for the cluster CA (init)")
	caDir := fs.String("ca", "", "directory of the cluster CA (issue)")
	nodeFlag := fs.String("node", "", "the node's id (issue)")
	outDir := fs.String("out", "", "the node's cluster directory (issue)")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("cluster-cert %s: %w", args[0], err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cluster-cert %s: unexpected argument %q", args[0], fs.Arg(0))
	}
	switch args[0] {
	case "init":
		if *dir == "" {
			return errors.New("cluster-cert init: --dir is required")
		}
		if err := link.CreateCA(*dir, now); err != nil {
			return err
		}
		ca, err := link.LoadCA(*dir)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(ca.Cert.Raw)
		fmt.Fprintf(out, "cluster CA written to %s (SHA-256 %s)\n", filepath.Join(*dir, link.CAFile), hex.EncodeToString(sum[:]))
		return nil
	case "issue":
		var errs []error
		if *caDir == "" {
			errs = append(errs, errors.New("cluster-cert issue: --ca is required"))
		}
		if *outDir == "" {
			errs = append(errs, errors.New("cluster-cert issue: --out is required"))
		}
		id, err := strconv.ParseUint(*nodeFlag, 10, 32)
		if err != nil || id == 0 {
			errs = append(errs, fmt.Errorf("cluster-cert issue: --node %q, want a node id from 1 to 4294967295", *nodeFlag))
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		if err := link.IssueNode(*caDir, *outDir, uint32(id), now); err != nil {
			return err
		}
		fmt.Fprintf(out, "node %d's certificate written to %s\n", id, *outDir)
	}
	return nil
}
