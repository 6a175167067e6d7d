package loadtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"math/big"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestConnectGivesUpBeforeSynced: a login that is answered LoginOk but
// never Synced before the connect's deadline ends its session, so that
// the device's next connect starts clean (it panicked on closing the
// device's live channel twice, in a 10,000-device storm on a loaded box).
func TestConnectGivesUpBeforeSynced(t *testing.T) {
	cert, fp := testCertificate(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() { l.Close(); <-done }()
	go func() { // answers each Login with LoginOk, then nothing
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if _, err := codec.NewReader(c, protocol.MaxFrameBody, nil).ReadFrame(); err == nil {
				ok, _ := codec.AppendProto(nil, protocol.KindLoginOK, &pb.LoginOk{})
				_, _ = c.Write(ok)
			}
			defer c.Close()
		}
	}()

	spec := workerSpec{Config: Config{Scenario: stormScenario.Name}, Source: "127.0.0.1", Hi: 1,
		Addr: l.Addr().String(), Fingerprint: fp}
	w, err := newWorker(context.Background(), spec, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := w.devices[0]
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := d.connect(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("connect %d: %v, want the deadline", i, err)
		}
		if d.session() != nil {
			t.Fatalf("connect %d left a live session", i)
		}
	}
}

// testCertificate returns a self-signed certificate and the fingerprint a
// worker pins it by.
func testCertificate(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(sum[:])
}
