// Package ndjson appends records, one JSON value per line, to a file that
// rotates by size, so a log of events or reports stays bounded on disk:
// the current file FILE, then FILE.1 (the newest full one) to FILE.<Keep>
// (the oldest), which the next rotation deletes.
//
// Threading: a File belongs to one goroutine at a time; its owner
// serialises the calls.
package ndjson

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Config configures a File.
type Config struct {
	// Path is the current file. Required; its directory is created.
	Path string
	// MaxBytes is the size at which the current file is rotated. Default
	// 64 MiB.
	MaxBytes int64
	// Keep is how many rotated files are kept besides the current one.
	// Default 4; so the whole log takes at most (Keep + 1) × MaxBytes plus
	// one record.
	Keep int
	// Mode is the permission of new files. Default 0600.
	Mode os.FileMode
}

// File is an append-only, size-rotated NDJSON file.
type File struct {
	cfg  Config
	f    *os.File
	size int64
}

// Open opens (creating if needed) cfg.Path for appending.
func Open(cfg Config) (*File, error) {
	if cfg.Path == "" {
		return nil, errors.New("ndjson: no path")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 4
	}
	if cfg.Mode == 0 {
		cfg.Mode = 0o600
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("ndjson: %w", err)
	}
	f := &File{cfg: cfg}
	if err := f.open(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) open() error {
	file, err := os.OpenFile(f.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, f.cfg.Mode)
	if err != nil {
		return fmt.Errorf("ndjson: %w", err)
	}
	st, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return fmt.Errorf("ndjson: %w", err)
	}
	f.f, f.size = file, st.Size()
	return nil
}

// Write appends lines, whole records each ending in a newline, rotating
// first when they would take the current file past MaxBytes (a file
// holds at least one record). It does not sync.
func (f *File) Write(lines []byte) error {
	if f.f == nil {
		return errors.New("ndjson: closed")
	}
	if f.size > 0 && f.size+int64(len(lines)) > f.cfg.MaxBytes {
		if err := f.rotate(); err != nil {
			return err
		}
	}
	n, err := f.f.Write(lines)
	f.size += int64(n)
	if err != nil {
		return fmt.Errorf("ndjson: write %s: %w", f.cfg.Path, err)
	}
	return nil
}

// rotate closes the current file, shifts FILE.i to FILE.i+1 (dropping the
// oldest) and FILE to FILE.1, and opens a new FILE.
func (f *File) rotate() error {
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("ndjson: %w", err)
	}
	f.f = nil
	p := f.cfg.Path
	if err := os.Remove(fmt.Sprintf("%s.%d", p, f.cfg.Keep)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ndjson: %w", err)
	}
	for i := f.cfg.Keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", p, i), fmt.Sprintf("%s.%d", p, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ndjson: %w", err)
		}
	}
	if err := os.Rename(p, p+".1"); err != nil {
		return fmt.Errorf("ndjson: %w", err)
	}
	return f.open()
}

// Sync makes what was written durable.
func (f *File) Sync() error {
	if f.f == nil {
		return errors.New("ndjson: closed")
	}
	if err := f.f.Sync(); err != nil {
		return fmt.Errorf("ndjson: sync %s: %w", f.cfg.Path, err)
	}
	return nil
}

// Close closes the file. Later calls do nothing.
func (f *File) Close() error {
	if f.f == nil {
		return nil
	}
	err := f.f.Close()
	f.f = nil
	if err != nil {
		return fmt.Errorf("ndjson: %w", err)
	}
	return nil
}
