package tls13

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// unhex decodes hex with optional spaces and newlines, as printed in RFCs.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// fakeConn is the part of gnet.Conn that Feed uses, over plain slices:
// in is the inbound buffer, out collects c.Write. Calling any other
// gnet.Conn method panics (nil embedded interface).
type fakeConn struct {
	gnet.Conn
	in  []byte
	out []byte
}

func (f *fakeConn) InboundBuffered() int { return len(f.in) }

func (f *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 {
		n = len(f.in)
	}
	if n > len(f.in) {
		return nil, io.ErrShortBuffer
	}
	return f.in[:n], nil
}

func (f *fakeConn) Discard(n int) (int, error) {
	if n <= 0 || n >= len(f.in) {
		n = len(f.in)
	}
	f.in = f.in[n:]
	return n, nil
}

func (f *fakeConn) Write(b []byte) (int, error) {
	f.out = append(f.out, b...)
	return len(b), nil
}

// testServer returns a Server for record-layer tests that never handshake.
func testServer() *Server {
	return &Server{rekeyAfter: defaultRekeyAfter, now: time.Now}
}

// readyConn returns a Conn past the handshake, reading under inSecret and
// writing under outSecret.
func readyConn(s *Server, suite uint8, inSecret, outSecret []byte) *Conn {
	tc := s.NewConn()
	tc.suite = suite
	tc.in.setSecret(&suites[suite], inSecret)
	tc.out.setSecret(&suites[suite], outSecret)
	tc.state = stateReady
	return tc
}

// connPair returns a server-side and a client-side Conn that talk to each
// other under fixed secrets of the suite's hash length.
func connPair(suite uint8) (server, client *Conn) {
	n := suites[suite].hashLen
	c2s := bytes.Repeat([]byte{0xc5}, n)
	s2c := bytes.Repeat([]byte{0x5c}, n)
	s := testServer()
	return readyConn(s, suite, c2s, s2c), readyConn(s, suite, s2c, c2s)
}

var allSuites = []uint8{suiteAES128GCM, suiteAES256GCM, suiteChaCha20}

func suiteName(i uint8) string { return tls.CipherSuiteName(suites[i].id) }

// testCert is a self-signed ECDSA P-256 certificate for "parley.test",
// made once per test binary.
var testCert = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "parley.test"},
		DNSNames:     []string{"parley.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
})

func serverTLSConfig() *tls.Config {
	cert, _ := testCert()
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// clientTLSConfig is a client that trusts testCert and, like mobile
// clients, keeps a session cache (so it asks for tickets and resumes).
func clientTLSConfig() *tls.Config {
	_, pool := testCert()
	return &tls.Config{
		RootCAs:            pool,
		ServerName:         "parley.test",
		MinVersion:         tls.VersionTLS13,
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
}
