package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/internal/admin"
)

// Backups (docs/operations.md, "Backups"). A backup is a directory:
//
//	BACKUP.json          the Manifest, written last: without it the backup is incomplete
//	shard-count          as in the data directory
//	codes.key            the key that protects verification codes
//	shards/000 …         a Pebble checkpoint of each shard
//	media/meta           a Pebble checkpoint of the media metadata
//	media/url.key        the key that signs media URLs
//	media/blobs/ab/ab12… the blobs (the default store only)
//	tls/cert.pem, key.pem the certificate, when it lives in the data directory
//	reports/reports.ndjson the user reports, up to the last whole line
//
// Restore copies such a directory into an empty data directory, which a
// node then starts on.

// ManifestFile is the name of a backup's manifest.
const ManifestFile = "BACKUP.json"

// backupFormat is the layout version Backup writes and Restore reads.
const backupFormat = 1

// Manifest describes a backup.
type Manifest struct {
	// Format is the layout version (1).
	Format int `json:"format"`
	// Created is when the shards were checkpointed, UTC.
	Created time.Time `json:"created"`
	// Shards is the data directory's shard count.
	Shards int `json:"shards"`
	// PausedMS is how long the shards were paused, milliseconds.
	PausedMS float64 `json:"paused_ms"`
	// Media says whether the media metadata is in the backup; MediaBlobs
	// and MediaBytes count the blobs copied (none with S3).
	Media      bool  `json:"media"`
	MediaBlobs int   `json:"media_blobs"`
	MediaBytes int64 `json:"media_bytes"`
}

// ErrStopped: the node is shutting down, and takes no backup.
var ErrStopped = fmt.Errorf("node: shutting down: %w", admin.ErrUnavailable)

// Backup writes an online backup of the node to dir, which must not exist
// (its parent is created): every shard is paused at a cycle boundary,
// all of them at once, and checkpointed while paused, so the shards' copies
// form one consistent cut of the node (docs/operations.md argues why);
// then the media metadata and blobs, the keys, the certificate in the data
// directory and the reports are copied, and the manifest written last.
// The shards are paused for as long as their checkpoints take (sstables
// are hard-linked when dir is on the data directory's file system; the
// WAL is copied). One backup runs at a time; a node that is shutting
// down answers ErrStopped.
func (n *Node) Backup(dir string) (Manifest, error) {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.stopped {
		return Manifest{}, ErrStopped
	}
	m := Manifest{Format: backupFormat, Shards: len(n.shards)}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return m, fmt.Errorf("node: backup: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return m, fmt.Errorf("node: backup: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "shards"), 0o700); err != nil {
		return m, fmt.Errorf("node: backup: %w", err)
	}

	resumes := make([]func(), 0, len(n.shards))
	for _, s := range n.shards {
		resumes = append(resumes, s.Pause())
	}
	start := time.Now()
	m.Created = start.UTC()
	errs := make([]error, len(n.shards))
	var wg sync.WaitGroup
	for i, s := range n.shards {
		wg.Go(func() { errs[i] = s.Checkpoint(filepath.Join(dir, "shards", fmt.Sprintf("%03d", s.ID()))) })
	}
	wg.Wait()
	for _, resume := range resumes {
		resume()
	}
	m.PausedMS = float64(time.Since(start).Microseconds()) / 1000
	if err := errors.Join(errs...); err != nil {
		return m, fmt.Errorf("node: backup: %w", err)
	}

	// Media after the shards: a message can only name media uploaded
	// before it was sent, so this copy holds every media id the shards'
	// copies can name (but those swept meanwhile, past their expiry).
	if n.media != nil {
		st, err := n.media.Checkpoint(filepath.Join(dir, "media"))
		if err != nil {
			return m, fmt.Errorf("node: backup: %w", err)
		}
		m.Media, m.MediaBlobs, m.MediaBytes = true, st.Blobs, st.Bytes
	}
	for _, name := range []string{"shard-count", "codes.key"} {
		if err := copyFile(filepath.Join(n.cfg.DataDir, name), filepath.Join(dir, name)); err != nil {
			return m, fmt.Errorf("node: backup: %w", err)
		}
	}
	for _, f := range []string{n.cfg.CertFile, n.cfg.KeyFile} {
		rel, err := filepath.Rel(n.cfg.DataDir, f)
		if n.cfg.Plaintext || err != nil || strings.HasPrefix(rel, "..") {
			continue // not the node's to keep
		}
		if err := copyFile(f, filepath.Join(dir, rel)); err != nil {
			return m, fmt.Errorf("node: backup: %w", err)
		}
	}
	if err := copyWholeLines(filepath.Join(n.cfg.DataDir, "reports", "reports.ndjson"), filepath.Join(dir, "reports", "reports.ndjson")); err != nil {
		return m, fmt.Errorf("node: backup: %w", err)
	}
	if err := syncTree(dir); err != nil {
		return m, fmt.Errorf("node: backup: %w", err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, ManifestFile), append(b, '\n'), 0o600); err != nil {
		return m, err
	}
	return m, nil
}

// ReadManifest reads the manifest of the backup in dir, and fails when it
// is missing (an incomplete backup) or of a format this build cannot
// restore.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("node: %s is not a complete backup (no %s)", dir, ManifestFile)
	}
	if err != nil {
		return m, fmt.Errorf("node: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node: %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Format != backupFormat {
		return m, fmt.Errorf("node: %s: backup format %d, this parleyd restores format %d", dir, m.Format, backupFormat)
	}
	if m.Shards < 1 {
		return m, fmt.Errorf("node: %s: %d shards", dir, m.Shards)
	}
	return m, nil
}

// Restore copies the backup in from into data, which must not exist or be
// empty, ready for a node to start on: files 0600, directories 0700, each
// synced. It returns the backup's manifest. A node started on data then
// replays each shard's outbox, so what crossed between shards converges.
func Restore(from, data string) (Manifest, error) {
	m, err := ReadManifest(from)
	if err != nil {
		return m, err
	}
	entries, err := os.ReadDir(data)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return m, fmt.Errorf("node: restore: %w", err)
	case len(entries) > 0:
		return m, fmt.Errorf("node: restore: %s is not empty: restore into a new directory", data)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return m, fmt.Errorf("node: restore: %w", err)
	}
	err = filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil || rel == "." || rel == ManifestFile {
			return err
		}
		dst := filepath.Join(data, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(dst, 0o700)
		case d.Type().IsRegular():
			return copyFile(path, dst)
		}
		return fmt.Errorf("%s: not a regular file", path)
	})
	if err != nil {
		return m, fmt.Errorf("node: restore: %w", err)
	}
	return m, syncTree(data)
}

// copyFile copies src to a new file dst (0600, synced), creating dst's
// directory.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeNew(dst, in)
}

// writeNew writes r to a new file dst (0600, synced), creating its
// directory.
func writeNew(dst string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, r)
	return errors.Join(err, out.Sync(), out.Close())
}

// copyWholeLines copies src up to its last newline (a line being appended
// meanwhile is left out); a missing src copies nothing.
func copyWholeLines(src, dst string) error {
	b, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return writeNew(dst, bytes.NewReader(b[:bytes.LastIndexByte(b, '\n')+1]))
}

// syncTree fsyncs every directory under (and including) root, so the
// names of the files written there are durable.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		return errors.Join(f.Sync(), f.Close())
	})
}
