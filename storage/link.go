package storage

import (
	"strings"

	"github.com/parley-im/parley/protocol"
)

// linkAlphabet is Crockford's base32: digits and letters without I, L, O
// and U, so a code read aloud or typed is unambiguous.
const linkAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewLinkCode turns 10 random bytes into a link code. The code's first 12
// bits are the slot whose shard holds the pending link (LinkCodeSlot).
func NewLinkCode(random [10]byte) string {
	var b strings.Builder
	b.Grow(protocol.LinkCodeLen)
	var acc uint64
	bits := 0
	for _, c := range random {
		acc = acc<<8 | uint64(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			b.WriteByte(linkAlphabet[acc>>bits&31])
		}
	}
	return b.String()
}

// LinkCodeSlot returns the slot of a link code, and false if the code is
// malformed.
func LinkCodeSlot(code string) (uint16, bool) {
	if len(code) != protocol.LinkCodeLen {
		return 0, false
	}
	var v uint32
	for i := 0; i < len(code); i++ {
		d := strings.IndexByte(linkAlphabet, code[i])
		if d < 0 {
			return 0, false
		}
		if i < 3 {
			v = v<<5 | uint32(d)
		}
	}
	return uint16(v >> 3), true // the first 15 bits, less the 3 below the slot
}
