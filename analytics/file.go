package analytics

import (
	"context"
	"fmt"

	"github.com/parley-im/parley/internal/ndjson"
)

// File is a Writer that appends events, one JSON object per line, to a
// file that rotates by size (the default sink). It does not sync: an
// event is metadata, and a crash may lose the last second of them.
type File struct {
	f    *ndjson.File
	line []byte
}

// OpenFile opens (creating if needed) the NDJSON file at path, rotated at
// maxBytes (0: 64 MiB) with keep older files (0: 4).
func OpenFile(path string, maxBytes int64, keep int) (*File, error) {
	f, err := ndjson.Open(ndjson.Config{Path: path, MaxBytes: maxBytes, Keep: keep})
	if err != nil {
		return nil, fmt.Errorf("analytics: %w", err)
	}
	return &File{f: f}, nil
}

// Write implements Writer.
func (f *File) Write(_ context.Context, batch []Event) error {
	f.line = f.line[:0]
	for i := range batch {
		f.line = append(batch[i].AppendJSON(f.line), '\n')
	}
	return f.f.Write(f.line)
}

// Close implements Writer: it syncs and closes the file.
func (f *File) Close() error {
	err := f.f.Sync()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	return err
}
