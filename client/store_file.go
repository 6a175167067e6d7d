package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
)

// FileStore is a Store kept in one JSON file, for the command-line client
// and other single-user applications. Every change rewrites the whole file
// atomically (write a temporary file, fsync, rename, fsync the directory),
// so a crash leaves either the old state or the new one. That suits a
// device with a handful of unanswered sends, not a server-side bulk store.
//
// The file holds the device credential: it is created with mode 0600.
// OpenFileStore takes an exclusive lock on the file (path + ".lock") where
// the platform supports it, so two processes cannot interleave writes and
// reuse a cmid; Close releases it. A FileStore is safe for concurrent use.
type FileStore struct {
	path   string
	unlock func() error

	mu     sync.Mutex // guards the fields below
	st     State
	attrs  map[string]string
	keys   map[string][]byte // the KeyStore's values
	closed bool
}

var (
	_ Store    = (*FileStore)(nil)
	_ KeyStore = (*FileStore)(nil)
)

// fileFormat is the JSON layout of a FileStore file.
type fileFormat struct {
	Version int `json:"version"`
	State
	Attrs map[string]string `json:"attrs,omitempty"`
	// Keys holds the end-to-end encryption state (KeyStore): private keys
	// among them, which is one more reason for the file's mode 0600.
	Keys map[string][]byte `json:"keys,omitempty"`
}

// fileVersion is the layout version written by this package.
const fileVersion = 1

// OpenFileStore opens the state file at path, or prepares an empty state
// if the file does not exist (it is written on the first change). The
// directory must exist. It fails with ErrLocked if another process has the
// file open.
func OpenFileStore(path string) (*FileStore, error) {
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	f := &FileStore{path: path, unlock: unlock}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return f, nil
	case err != nil:
		_ = unlock()
		return nil, fmt.Errorf("client: read state: %w", err)
	}
	var ff fileFormat
	if err := json.Unmarshal(b, &ff); err != nil {
		_ = unlock()
		return nil, fmt.Errorf("client: state file %s: %w", path, err)
	}
	if ff.Version != fileVersion {
		_ = unlock()
		return nil, fmt.Errorf("client: state file %s has version %d, want %d", path, ff.Version, fileVersion)
	}
	f.st, f.attrs, f.keys = ff.State, ff.Attrs, ff.Keys
	return f, nil
}

// Path returns the file's path.
func (f *FileStore) Path() string { return f.path }

// Close releases the lock. Later changes fail with ErrClosed.
func (f *FileStore) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return f.unlock()
}

// Attr returns the application attribute key, or "" if it is not set.
// Attributes are strings stored beside the state (the command-line client
// keeps the server address there).
func (f *FileStore) Attr(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attrs[key]
}

// Attrs returns a copy of all application attributes.
func (f *FileStore) Attrs() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.attrs)
}

// Reset replaces the state with an empty one, keeping the attributes: a
// device registered anew starts with a new cursor and cmid space (spec
// [S-9-10]) and new keys ([S-17-3]). No Client may be using the store.
func (f *FileStore) Reset() error {
	return f.updateKeys(func(st *State, _ map[string]string, keys map[string][]byte) {
		*st = State{}
		clear(keys)
	})
}

// LoadKey implements KeyStore.
func (f *FileStore) LoadKey(name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.keys[name]), nil
}

// SaveKey implements KeyStore: the whole file is written again.
func (f *FileStore) SaveKey(name string, value []byte) error {
	return f.updateKeys(func(_ *State, _ map[string]string, keys map[string][]byte) {
		if value == nil {
			delete(keys, name)
		} else {
			keys[name] = bytes.Clone(value)
		}
	})
}

// SetAttr stores the application attribute key; an empty value deletes it.
func (f *FileStore) SetAttr(key, value string) error {
	return f.update(func(st *State, attrs map[string]string) {
		if value == "" {
			delete(attrs, key)
		} else {
			attrs[key] = value
		}
	})
}

// Load implements Store.
func (f *FileStore) Load() (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.clone(), nil
}

// SaveCredentials implements Store.
func (f *FileStore) SaveCredentials(c Credentials) error {
	return f.update(func(st *State, _ map[string]string) { st.Credentials = c.clone() })
}

// SaveCursor implements Store.
func (f *FileStore) SaveCursor(seq uint64) error {
	return f.update(func(st *State, _ map[string]string) { st.Cursor = seq })
}

// AddOutgoing implements Store.
func (f *FileStore) AddOutgoing(o Outgoing) error {
	return f.update(func(st *State, _ map[string]string) { st.addOutgoing(o) })
}

// RemoveOutgoing implements Store.
func (f *FileStore) RemoveOutgoing(cmid uint64) error {
	return f.update(func(st *State, _ map[string]string) { st.removeOutgoing(cmid) })
}

// update applies fn to a copy of the state and writes it; the change is
// kept only if the write succeeds.
func (f *FileStore) update(fn func(*State, map[string]string)) error {
	return f.updateKeys(func(st *State, attrs map[string]string, _ map[string][]byte) { fn(st, attrs) })
}

// updateKeys is update with the keys too.
func (f *FileStore) updateKeys(fn func(*State, map[string]string, map[string][]byte)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	st := f.st.clone()
	attrs := maps.Clone(f.attrs)
	if attrs == nil {
		attrs = make(map[string]string)
	}
	keys := maps.Clone(f.keys)
	if keys == nil {
		keys = make(map[string][]byte)
	}
	fn(&st, attrs, keys)
	b, err := json.MarshalIndent(fileFormat{Version: fileVersion, State: st, Attrs: attrs, Keys: keys}, "", "  ")
	if err != nil {
		return fmt.Errorf("client: encode state: %w", err)
	}
	if err := writeFileAtomic(f.path, append(b, '\n')); err != nil {
		return err
	}
	f.st, f.attrs, f.keys = st, attrs, keys
	return nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory is written, synced and renamed over path, then the directory
// is synced so the rename survives a crash.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("client: write state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("client: write state: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("client: sync state: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("client: write state: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client: replace state: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // not supported everywhere; the rename is done either way
		_ = d.Close()
	}
	return nil
}
