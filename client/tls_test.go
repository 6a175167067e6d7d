package client

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// answerCodeSent serves one RequestCode on the next connection.
func answerCodeSent(t *testing.T, srv *fakeServer) *pb.RequestCode {
	t.Helper()
	fc := srv.accept(t)
	var req pb.RequestCode
	fc.expectProto(protocol.KindRequestCode, &req)
	fc.writeProto(protocol.KindCodeSent, &pb.CodeSent{Rid: req.Rid, CodeLength: 6, ExpiresInS: 300, RetryAfterS: 30})
	return &req
}

func TestFingerprintPinAcceptsServerCertificate(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.Fingerprint = strings.ToUpper(srv.fingerprint[:2]) + ":" + srv.fingerprint[2:] // case and colons ignored
	done := make(chan error, 1)
	var got CodeSent
	go func() {
		var err error
		got, err = RequestCode(context.Background(), cfg, "+15551234567")
		done <- err
	}()
	req := answerCodeSent(t, srv)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if req.Phone != "+15551234567" || req.Version != protocol.Version || req.Rid == 0 {
		t.Errorf("RequestCode sent %v", req)
	}
	if got.CodeLength != 6 || got.ExpiresIn.Seconds() != 300 || got.RetryAfter.Seconds() != 30 {
		t.Errorf("CodeSent = %+v", got)
	}
}

func TestFingerprintPinRejectsOtherCertificate(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	wrong := "0"
	if srv.fingerprint[0] == '0' {
		wrong = "1"
	}
	cfg.Fingerprint = wrong + srv.fingerprint[1:]
	_, err := RequestCode(context.Background(), cfg, "+15551234567")
	if !errors.Is(err, ErrFingerprint) {
		t.Fatalf("err = %v, want ErrFingerprint", err)
	}

	// A running client reports it and keeps trying.
	c := startClient(t, cfg, nil)
	ev := waitFor[Disconnected](c)
	if !errors.Is(ev.Err, ErrFingerprint) {
		t.Fatalf("Disconnected.Err = %v, want ErrFingerprint", ev.Err)
	}
}

func TestRootCAsVerifyChain(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.Fingerprint, cfg.RootCAs = "", srv.pool
	done := make(chan error, 1)
	go func() {
		_, err := RequestCode(context.Background(), cfg, "+15551234567")
		done <- err
	}()
	answerCodeSent(t, srv)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	cfg.RootCAs = x509.NewCertPool() // trusts nothing
	_, err := RequestCode(context.Background(), cfg, "+15551234567")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("err = %v, want x509.UnknownAuthorityError", err)
	}
}

func TestPlaintext(t *testing.T) {
	srv := newFakeServer(t, true)
	cfg := testConfig(srv)
	cfg.Fingerprint, cfg.Plaintext = "", true
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)
}
