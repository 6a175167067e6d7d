package tls13

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

// RFC 8448 §3 "Simple 1-RTT Handshake" (TLS_AES_128_GCM_SHA256).
const (
	rfc8448MasterSecret = "18 df 06 84 3d 13 a0 8b f2 a4 49 84 4c 5f 8a 47 80 01 bc 4d 4c 62 79 84 d5 a4 1d a8 d0 40 29 19"
	// Transcript hash of ClientHello..server Finished.
	rfc8448HashCHSF = "96 08 10 2a 0f 1c cc 6d b6 25 0b 7b 7e 41 7b 1a 00 0e aa da 3d aa e4 77 7a 76 86 c9 ff 83 df 13"

	rfc8448ClientSecret = "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5"
	rfc8448ClientKey    = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"
	rfc8448ClientIV     = "5b 78 92 3d ee 08 57 90 33 e5 23 d9"
	rfc8448ServerSecret = "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43"
	rfc8448ServerKey    = "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"
	rfc8448ServerIV     = "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"

	// {client} send application_data record: payload 00 01 .. 31, client
	// sequence number 0.
	rfc8448ClientAppRecord = `17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb
		ef ac ea 42 f9 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f
		5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4`
	// {server} send application_data record: the same payload, server
	// sequence number 1 (its NewSessionTicket used 0).
	rfc8448ServerAppRecord = `17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4
		69 32 fc 32 25 d0 5f 82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b
		f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d`
	// close_notify alerts: client sequence 1, server sequence 2.
	rfc8448ClientAlertRecord = "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3"
	rfc8448ServerAlertRecord = "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9"
)

func rfc8448Payload() []byte {
	p := make([]byte, 50)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

func TestKeyScheduleRFC8448(t *testing.T) {
	s := &suites[suiteAES128GCM]
	master := unhex(t, rfc8448MasterSecret)
	hash := unhex(t, rfc8448HashCHSF)
	for _, tt := range []struct {
		label           string
		secret, key, iv string
	}{
		{"c ap traffic", rfc8448ClientSecret, rfc8448ClientKey, rfc8448ClientIV},
		{"s ap traffic", rfc8448ServerSecret, rfc8448ServerKey, rfc8448ServerIV},
	} {
		// Derive-Secret(Master Secret, label, ClientHello..server Finished).
		secret := expandLabel(sha256.New, master, tt.label, hash, sha256.Size)
		if want := unhex(t, tt.secret); !bytes.Equal(secret, want) {
			t.Errorf("%s secret = %x, want %x", tt.label, secret, want)
		}
		key, iv := s.trafficKeys(secret)
		if want := unhex(t, tt.key); !bytes.Equal(key, want) {
			t.Errorf("%s key = %x, want %x", tt.label, key, want)
		}
		if want := unhex(t, tt.iv); !bytes.Equal(iv, want) {
			t.Errorf("%s iv = %x, want %x", tt.label, iv, want)
		}
	}
}

func TestRecordRFC8448(t *testing.T) {
	client, server := unhex(t, rfc8448ClientSecret), unhex(t, rfc8448ServerSecret)
	tc := readyConn(testServer(), suiteAES128GCM, client, server)

	// The client's application record decrypts to the payload.
	got, err := tc.openRecord(nil, unhex(t, rfc8448ClientAppRecord))
	if err != nil || !bytes.Equal(got, rfc8448Payload()) {
		t.Fatalf("open client record = %x, %v; want %x", got, err, rfc8448Payload())
	}
	// The server's record, sealed at sequence number 1, matches byte for byte.
	tc.out.seq = 1
	if got, want := tc.Seal(nil, rfc8448Payload()), unhex(t, rfc8448ServerAppRecord); !bytes.Equal(got, want) {
		t.Errorf("Seal = %x\nwant   %x", got, want)
	}
	if got, want := tc.CloseNotify(nil), unhex(t, rfc8448ServerAlertRecord); !bytes.Equal(got, want) {
		t.Errorf("CloseNotify = %x\nwant          %x", got, want)
	}
	// The client's close_notify ends the stream.
	if _, err := tc.openRecord(nil, unhex(t, rfc8448ClientAlertRecord)); err != io.EOF {
		t.Errorf("open client close_notify: err = %v, want io.EOF", err)
	}

	// The same bytes through Feed, one byte at a time.
	tc = readyConn(testServer(), suiteAES128GCM, client, server)
	c := &fakeConn{}
	var plain []byte
	stream := append(unhex(t, rfc8448ClientAppRecord), unhex(t, rfc8448ClientAlertRecord)...)
	for i := range stream {
		c.in = append(c.in, stream[i])
		plain, err = tc.Feed(c, plain)
		if i < len(stream)-1 && err != nil {
			t.Fatalf("Feed after %d bytes: %v", i+1, err)
		}
	}
	if err != io.EOF || !bytes.Equal(plain, rfc8448Payload()) {
		t.Errorf("Feed = %x, %v; want payload, io.EOF", plain, err)
	}
}

// TestChaCha20RFC9001 checks ChaCha20-Poly1305 key derivation, nonce
// construction and sealing against RFC 9001 §A.5, which uses the same
// HKDF-Expand-Label with QUIC's labels and a 64-bit packet number as the
// sequence number.
func TestChaCha20RFC9001(t *testing.T) {
	s := &suites[suiteChaCha20]
	secret := unhex(t, "9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b")
	var hc halfConn
	copy(hc.key[:], expandLabel(s.hash, secret, "quic key", nil, s.keyLen))
	copy(hc.iv[:], expandLabel(s.hash, secret, "quic iv", nil, ivLen))
	if want := unhex(t, "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8"); !bytes.Equal(hc.key[:], want) {
		t.Fatalf("key = %x, want %x", hc.key, want)
	}
	if want := unhex(t, "e0459b3474bdd0e44a41c144"); !bytes.Equal(hc.iv[:], want) {
		t.Fatalf("iv = %x, want %x", hc.iv, want)
	}
	hc.seq = 654360564
	var buf [ivLen]byte
	nonce := hc.nonce(&buf)
	if want := unhex(t, "e0459b3474bdd0e46d417eb0"); !bytes.Equal(nonce, want) {
		t.Fatalf("nonce = %x, want %x", nonce, want)
	}
	sealed := hc.cipher(s).Seal(nil, nonce, []byte{0x01}, unhex(t, "4200bff4"))
	if want := unhex(t, "655e5cd55c41f69080575d7999c25a5bfb"); !bytes.Equal(sealed, want) {
		t.Errorf("sealed = %x, want %x", sealed, want)
	}
	// The "quic ku" key update of the same appendix exercises the
	// secret-length expansion that KeyUpdate uses with "traffic upd".
	next := expandLabel(s.hash, secret, "quic ku", nil, s.hashLen)
	if want := unhex(t, "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9"); !bytes.Equal(next, want) {
		t.Errorf("quic ku = %x, want %x", next, want)
	}
}

// TestChaCha20RFC8439 is the AEAD known answer of RFC 8439 §2.8.2 through
// the suite table's constructor.
func TestChaCha20RFC8439(t *testing.T) {
	key := unhex(t, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
	aead, err := suites[suiteChaCha20].aead(key)
	if err != nil {
		t.Fatal(err)
	}
	plaintext := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	got := aead.Seal(nil, unhex(t, "070000004041424344454647"), plaintext, unhex(t, "50515253c0c1c2c3c4c5c6c7"))
	want := unhex(t, `d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b
		1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116
		1ae10b594f09e26a7e902ecbd0600691`)
	if !bytes.Equal(got, want) {
		t.Errorf("Seal = %x\nwant   %x", got, want)
	}
}

func TestSuiteTable(t *testing.T) {
	for _, i := range allSuites {
		s := &suites[i]
		if suiteByID(s.id) != i || s.hash().Size() != s.hashLen || s.hashLen > maxSecretLen || s.keyLen > 32 {
			t.Errorf("suite %s: inconsistent table entry", suiteName(i))
		}
		aead, err := s.aead(make([]byte, s.keyLen))
		if err != nil || aead.Overhead() != tagLen || aead.NonceSize() != ivLen {
			t.Errorf("suite %s: AEAD %v, overhead/nonce not 16/12", suiteName(i), err)
		}
	}
	if suiteByID(0x1304) != suiteNone { // TLS_AES_128_CCM_SHA256: not offered by crypto/tls
		t.Error("suiteByID accepted an unsupported suite")
	}
	if !errors.Is(peerAlertError(42), ErrRecord) {
		t.Error("peer alerts do not wrap ErrRecord")
	}
}
