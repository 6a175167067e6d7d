package storage

import (
	"bytes"
	"fmt"

	"github.com/parley-im/parley/protocol"
)

// keyRecord is the public keys a device published (spec.md section 17.1),
// stored under tagKeys. Its one-time prekeys are records of their own
// (tagPreKey); PreKeys counts them.
type keyRecord struct {
	Identity       []byte // protocol.KeyLen bytes; never changes once set
	RegistrationID uint32
	SignedID       uint32
	Signed         []byte // the signed prekey, protocol.KeyLen bytes
	Signature      []byte // protocol.SignatureLen bytes
	PreKeys        uint32 // one-time prekeys held under tagPreKey
	// LowSent: PREKEYS_LOW was appended since PreKeys last rose above
	// protocol.PreKeysLow, so it is not appended again.
	LowSent bool
}

func (k *keyRecord) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.bytes(k.Identity)
	w.uint(uint64(k.RegistrationID))
	w.uint(uint64(k.SignedID))
	w.bytes(k.Signed)
	w.bytes(k.Signature)
	w.uint(uint64(k.PreKeys))
	w.bool(k.LowSent)
	return w.b
}

func (k *keyRecord) decode(b []byte) error {
	r := newRecordReader(b)
	k.Identity = bytes.Clone(r.bytes())
	k.RegistrationID = uint32(r.uint())
	k.SignedID = uint32(r.uint())
	k.Signed = bytes.Clone(r.bytes())
	k.Signature = bytes.Clone(r.bytes())
	k.PreKeys = uint32(r.uint())
	k.LowSent = r.bool()
	if err := r.done("keys"); err != nil {
		return err
	}
	if len(k.Identity) != protocol.KeyLen || len(k.Signed) != protocol.KeyLen || len(k.Signature) != protocol.SignatureLen {
		return fmt.Errorf("%w: keys with a %d-byte identity, a %d-byte signed prekey, a %d-byte signature",
			errCorrupt, len(k.Identity), len(k.Signed), len(k.Signature))
	}
	return nil
}
