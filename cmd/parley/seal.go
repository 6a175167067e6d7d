package main

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Files are encrypted end to end in sealed chunks (the media reference
// format in doc.go): AES-256-GCM with a key of their own, the plaintext
// cut into chunks of sealChunk bytes, each sealed on its own with a nonce
// of its index and a flag marking the last chunk, so that chunks cannot
// be reordered, dropped or cut off unnoticed, and neither side holds more
// than a chunk in memory.

// sealChunk is the plaintext bytes per chunk; sealOverhead the bytes the
// seal adds to each.
const (
	sealChunk    = 64 << 10
	sealOverhead = 16
)

// errOpen reports ciphertext that does not open with the key: damaged,
// truncated, or sealed with another key.
var errOpen = errors.New("the file does not decrypt with its key: it was damaged or altered")

// sealedSize returns the ciphertext size of n bytes of plaintext.
func sealedSize(n int64) int64 {
	chunks := max(1, (n+sealChunk-1)/sealChunk)
	return n + chunks*sealOverhead
}

// chunkNonce is the nonce of chunk i: its index, big-endian, in the first
// 8 bytes, and 1 in the last byte for the last chunk.
func chunkNonce(i uint64, last bool) []byte {
	nonce := make([]byte, 12)
	binary.BigEndian.PutUint64(nonce, i)
	if last {
		nonce[11] = 1
	}
	return nonce
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("key of %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts the size bytes of r to w with key.
func seal(w io.Writer, r io.Reader, size int64, key []byte) error {
	aead, err := newGCM(key)
	if err != nil {
		return err
	}
	buf := make([]byte, sealChunk, sealChunk+sealOverhead)
	var i uint64
	for left := size; ; i++ {
		n := min(left, sealChunk)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("reading the file: %w", err)
		}
		left -= n
		out := aead.Seal(buf[:0], chunkNonce(i, left == 0), buf[:n], nil)
		if _, err := w.Write(out); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
	}
}

// open decrypts the size bytes of ciphertext in r to w with key. Nothing
// it wrote may be used unless it returns nil.
func open(w io.Writer, r io.Reader, size int64, key []byte) error {
	aead, err := newGCM(key)
	if err != nil {
		return err
	}
	if size < sealOverhead {
		return errOpen
	}
	buf := make([]byte, sealChunk+sealOverhead)
	var i uint64
	for left := size; ; i++ {
		n := min(left, sealChunk+sealOverhead)
		if n < sealOverhead {
			return errOpen
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("reading the download: %w", err)
		}
		left -= n
		plain, err := aead.Open(buf[:0], chunkNonce(i, left == 0), buf[:n], nil)
		if err != nil {
			return errOpen
		}
		if _, err := w.Write(plain); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
	}
}
