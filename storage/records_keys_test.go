package storage

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/parley-im/parley/protocol"
)

// goldenKeyRecord is a keyRecord as format 1 stores it. The bytes must not
// change: databases hold them (a new field goes at the end, read with
// optUint).
const goldenKeyRecord = "01" + // record version
	"21" + "05" + "0101010101010101010101010101010101010101010101010101010101010101" + // identity
	"b960" + // registration id 12345
	"07" + // signed prekey id
	"21" + "05" + "0202020202020202020202020202020202020202020202020202020202020202" + // signed prekey
	"40" + "03030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303" + // signature
	"c801" + // 200 one-time prekeys
	"01" // PREKEYS_LOW sent

func goldenKeys() keyRecord {
	key := func(b byte) []byte {
		k := bytes.Repeat([]byte{b}, protocol.KeyLen)
		k[0] = 0x05
		return k
	}
	return keyRecord{
		Identity: key(1), RegistrationID: 12345, SignedID: 7, Signed: key(2),
		Signature: bytes.Repeat([]byte{3}, protocol.SignatureLen), PreKeys: 200, LowSent: true,
	}
}

func TestKeyRecordGolden(t *testing.T) {
	rec := goldenKeys()
	if got := hex.EncodeToString(rec.encode(nil)); got != goldenKeyRecord {
		t.Fatalf("encode:\ngot  %s\nwant %s", got, goldenKeyRecord)
	}
	b, _ := hex.DecodeString(goldenKeyRecord)
	var back keyRecord
	if err := back.decode(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rec) {
		t.Fatalf("decode: %+v, want %+v", back, rec)
	}
	// Every strict prefix, and a record with a short key, is corrupt.
	for i := range len(b) {
		var r keyRecord
		if err := r.decode(b[:i]); !errors.Is(err, errCorrupt) {
			t.Fatalf("prefix of %d bytes: %v, want corrupt", i, err)
		}
	}
	short := rec
	short.Signed = short.Signed[:32]
	var r keyRecord
	if err := r.decode(short.encode(nil)); !errors.Is(err, errCorrupt) {
		t.Fatalf("short signed prekey: %v, want corrupt", err)
	}
}
