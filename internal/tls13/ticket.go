package tls13

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// ticketKeyInfo is the HKDF info prefix of a ticket key; the period number
// follows it as a big-endian uint64.
const ticketKeyInfo = "parley tls13 ticket key"

// ticketKeys derives the session ticket keys of each rotation period from
// one secret. It is safe for concurrent use: the keys of the latest period
// asked for are cached behind an atomic pointer.
type ticketKeys struct {
	secret   [ticketSecretLen]byte // immutable
	rotation time.Duration         // immutable, > 0
	cache    atomic.Pointer[periodKeys]
}

// periodKeys are the keys handed to crypto/tls during one period: the
// period's own key first (it encrypts new tickets), then the previous one.
type periodKeys struct {
	period int64
	keys   [][32]byte // immutable; crypto/tls copies what it is given
}

// newTicketKeys returns the key source for secret (nil: 32 bytes from
// random, or crypto/rand if random is nil) rotated every rotation (zero:
// defaultTicketRotation).
func newTicketKeys(secret []byte, rotation time.Duration, random io.Reader) (*ticketKeys, error) {
	tk := &ticketKeys{rotation: rotation}
	if tk.rotation == 0 {
		tk.rotation = defaultTicketRotation
	}
	if secret != nil {
		copy(tk.secret[:], secret)
		return tk, nil
	}
	if random == nil {
		random = rand.Reader
	}
	if _, err := io.ReadFull(random, tk.secret[:]); err != nil {
		return nil, fmt.Errorf("tls13: drawing a session ticket secret: %w", err)
	}
	return tk, nil
}

// current returns the keys for the period holding now: its own, then the
// previous period's, so that tickets issued just before a rotation still
// resume. The slice must not be modified.
func (tk *ticketKeys) current(now time.Time) [][32]byte {
	period := now.Unix() / int64(tk.rotation/time.Second)
	if pk := tk.cache.Load(); pk != nil && pk.period == period {
		return pk.keys
	}
	pk := &periodKeys{period: period, keys: [][32]byte{tk.key(period), tk.key(period - 1)}}
	tk.cache.Store(pk)
	return pk.keys
}

// key is the ticket key of one period:
//
//	HKDF-SHA256(salt: none, secret, info: "parley tls13 ticket key" || uint64be(period), 32 bytes)
//
// crypto/tls derives its AES and HMAC keys from it.
func (tk *ticketKeys) key(period int64) [32]byte {
	info := binary.BigEndian.AppendUint64([]byte(ticketKeyInfo), uint64(period))
	out, err := hkdf.Key(sha256.New, tk.secret[:], nil, string(info), 32)
	if err != nil {
		// Key fails only for lengths above 255*32 bytes.
		panic("tls13: " + err.Error())
	}
	return [32]byte(out)
}
