package media

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// IDLen is the length of a media id in bytes: 128 random bits.
const IDLen = 16

// ID is a media id: 16 bytes from crypto/rand, unguessable, named in
// MediaUploadSlot and MediaDownload and carried by clients inside their
// (opaque) message bodies. Its text form, in URLs and file names, is 32
// lowercase hex digits.
type ID [IDLen]byte

// NewID returns a fresh random id.
func NewID() ID {
	var id ID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	return id
}

// String returns the id as 32 lowercase hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the text form of an id.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDLen {
		return id, fmt.Errorf("media: id %q is not %d hex digits", s, 2*IDLen)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("media: id %q: %w", s, err)
	}
	return id, nil
}

// IDFromBytes returns the id in b, which must be IDLen bytes.
func IDFromBytes(b []byte) (ID, error) {
	var id ID
	if len(b) != IDLen {
		return id, errors.New("media: id is not 16 bytes")
	}
	copy(id[:], b)
	return id, nil
}

// HashLen is the length of a SHA-256 digest.
const HashLen = 32

// Hash is the SHA-256 of a blob's bytes: the key under which a Store
// keeps it (content addressing).
type Hash [HashLen]byte

// String returns the hash as 64 lowercase hex digits.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash parses 64 hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*HashLen {
		return h, fmt.Errorf("media: hash %q is not %d hex digits", s, 2*HashLen)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("media: hash %q: %w", s, err)
	}
	return h, nil
}
