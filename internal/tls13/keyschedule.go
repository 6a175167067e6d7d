package tls13

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// maxSecretLen is the largest traffic secret: the SHA-384 output of
// TLS_AES_256_GCM_SHA384.
const maxSecretLen = sha512.Size384

// ivLen is the per-record nonce length of every TLS 1.3 AEAD (RFC 8446 §5.3).
const ivLen = 12

// suite describes one TLS 1.3 cipher suite (RFC 8446 §B.4). The table below
// is immutable.
type suite struct {
	id      uint16
	hash    func() hash.Hash
	keyLen  int // AEAD key length in bytes
	hashLen int // hash output length: the traffic secret length
	aead    func(key []byte) (cipher.AEAD, error)
}

// suiteIndex values index suites; 0 means "no suite yet" so a zero Conn has none.
const (
	suiteNone uint8 = iota
	suiteAES128GCM
	suiteAES256GCM
	suiteChaCha20
)

var suites = [...]suite{
	suiteNone:      {},
	suiteAES128GCM: {tls.TLS_AES_128_GCM_SHA256, sha256.New, 16, sha256.Size, newAESGCM},
	suiteAES256GCM: {tls.TLS_AES_256_GCM_SHA384, sha512.New384, 32, sha512.Size384, newAESGCM},
	suiteChaCha20:  {tls.TLS_CHACHA20_POLY1305_SHA256, sha256.New, chacha20poly1305.KeySize, sha256.Size, chacha20poly1305.New},
}

// suiteByID returns the index of the TLS 1.3 suite with the given IANA id,
// or suiteNone.
func suiteByID(id uint16) uint8 {
	for i := range suites {
		if i != int(suiteNone) && suites[i].id == id {
			return uint8(i)
		}
	}
	return suiteNone
}

func newAESGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1):
//
//	HKDF-Expand(Secret, HkdfLabel, Length), where HkdfLabel is
//	uint16 length || opaque label<7..255> = "tls13 " + Label || opaque context<0..255>
func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) []byte {
	const prefix = "tls13 "
	info := make([]byte, 0, 2+1+len(prefix)+len(label)+1+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(h, secret, string(info), length)
	if err != nil {
		// Expand fails only for lengths above 255*HashLen; ours are constants
		// far below that.
		panic("tls13: " + err.Error())
	}
	return out
}

// trafficKeys derives the record key and IV from a traffic secret
// (RFC 8446 §7.3).
func (s *suite) trafficKeys(secret []byte) (key, iv []byte) {
	key = expandLabel(s.hash, secret, "key", nil, s.keyLen)
	iv = expandLabel(s.hash, secret, "iv", nil, ivLen)
	return key, iv
}

// nextTrafficSecret is application_traffic_secret_N+1 (RFC 8446 §7.2).
func (s *suite) nextTrafficSecret(secret []byte) []byte {
	return expandLabel(s.hash, secret, "traffic upd", nil, s.hashLen)
}
