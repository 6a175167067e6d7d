package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrBlobNotFound is returned by Store.Open for a blob the store does not
// hold.
var ErrBlobNotFound = errors.New("media: blob not found")

// Store keeps blobs: immutable byte strings named by their SHA-256
// (content addressing), so identical bytes are stored once. The Service
// verifies size and hash before it calls Put and serialises Put and Delete
// of one hash; a Store only moves bytes. Implementations must be safe for
// concurrent use and must stream: no method may hold a whole blob in
// memory.
type Store interface {
	// Put stores the size bytes of the file at path, whose SHA-256 is h,
	// and returns once they are durable. It may move the file (the caller
	// removes it afterwards if it is still there). Putting a blob the store
	// already holds is harmless.
	Put(ctx context.Context, h Hash, path string, size int64) error
	// Open returns a reader of n bytes of blob h from offset off, or
	// ErrBlobNotFound. The caller closes it.
	Open(ctx context.Context, h Hash, off, n int64) (io.ReadCloser, error)
	// Delete removes blob h; deleting a missing blob is not an error.
	Delete(ctx context.Context, h Hash) error
	// List calls fn for every blob the store holds, in no particular
	// order, stopping at fn's first error, which it returns.
	List(ctx context.Context, fn func(h Hash) error) error
}

// FSStore is the default Store: a directory of files named by their
// SHA-256 in hex, fanned out over 256 subdirectories by the first two
// digits (Dir/ab/ab12…). Put renames the verified upload into place, so
// the staging directory must be on the same file system (the Service
// stages in its own Dir, next to the store's).
type FSStore struct {
	// Dir is the root directory; it is created if missing.
	Dir string
}

var _ Store = (*FSStore)(nil)

func (s *FSStore) path(h Hash) string {
	x := h.String()
	return filepath.Join(s.Dir, x[:2], x)
}

// Put implements Store: it fsyncs the file, renames it into place and
// fsyncs the directory.
func (s *FSStore) Put(_ context.Context, h Hash, path string, _ int64) error {
	dst := s.path(h)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("media: store: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("media: store: %w", err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("media: store: %w", err)
	}
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("media: store: %w", err)
	}
	return syncDir(dir)
}

// Open implements Store.
func (s *FSStore) Open(_ context.Context, h Hash, off, n int64) (io.ReadCloser, error) {
	f, err := os.Open(s.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrBlobNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("media: store: %w", err)
	}
	return sectionReadCloser{io.NewSectionReader(f, off, n), f}, nil
}

type sectionReadCloser struct {
	*io.SectionReader
	io.Closer
}

// Delete implements Store.
func (s *FSStore) Delete(_ context.Context, h Hash) error {
	if err := os.Remove(s.path(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("media: store: %w", err)
	}
	return nil
}

// List implements Store. Files whose names are not hashes are ignored.
func (s *FSStore) List(ctx context.Context, fn func(h Hash) error) error {
	err := filepath.WalkDir(s.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return ctx.Err()
		}
		h, perr := ParseHash(d.Name())
		if perr != nil || !strings.HasPrefix(d.Name(), filepath.Base(filepath.Dir(path))) {
			return nil
		}
		return fn(h)
	})
	if err != nil {
		return fmt.Errorf("media: store: %w", err)
	}
	return nil
}
