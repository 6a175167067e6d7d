package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// peerServer is a peer's server process.
type peerServer struct {
	cmd    *exec.Cmd
	addr   string
	dir    string
	exited chan struct{} // closed once cmd.Wait returned
}

// errPeerExited is a peer that exited before it listened: the port picked
// for it was taken in the meantime, or its start failed.
var errPeerExited = errors.New("exited before it listened")

// startPeer starts the peer's server on a free loopback port with TLS 1.3
// and a fresh self-signed ECDSA P-256 certificate (as parleyd's). The peers
// cannot listen on port 0, so the port is one that was free a moment ago;
// if the peer exits before it listens (another process took the port), it
// tries another, three times in all.
func startPeer(peer string, logw io.Writer) (*peerServer, error) {
	var err error
	for range 3 {
		var ps *peerServer
		if ps, err = startPeerOnce(peer, logw); !errors.Is(err, errPeerExited) {
			return ps, err
		}
	}
	return nil, err
}

func startPeerOnce(peer string, logw io.Writer) (*peerServer, error) {
	dir, err := os.MkdirTemp("", "parley-peer-")
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o755) // mosquitto drops root for its own user
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeCert(cert, key); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conf := filepath.Join(dir, "peer.conf")
	var cmd *exec.Cmd
	switch peer {
	case "mosquitto":
		text := fmt.Sprintf(`listener %d 127.0.0.1
certfile %s
keyfile %s
tls_version tlsv1.3
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 100000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`, port, cert, key)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		cmd = exec.Command("mosquitto", "-c", conf)
	case "nats":
		text := fmt.Sprintf(`listen: %q
max_connections: 100000
write_deadline: "10s"
tls {
  cert_file: %q
  key_file: %q
  timeout: 10
}
`, addr, cert, key)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		cmd = exec.Command("nats-server", "-c", conf)
	default:
		return nil, fmt.Errorf("unknown peer %q (mosquitto or nats)", peer)
	}
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (apt-get install %s): %w", peer, map[string]string{"mosquitto": "mosquitto", "nats": "nats-server"}[peer], err)
	}
	ps := &peerServer{cmd: cmd, addr: addr, dir: dir, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(ps.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return ps, nil
		}
		select {
		case <-ps.exited:
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("%s on %s: %w (%v)", peer, addr, errPeerExited, cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ps.stop()
			return nil, fmt.Errorf("%s did not listen on %s", peer, addr)
		}
	}
}

func (p *peerServer) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	_ = os.RemoveAll(p.dir)
}

// rss returns the process's resident set size in bytes.
func (p *peerServer) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpu returns the process's user+system CPU time.
func (p *peerServer) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeCert(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "parley-peers"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644)
}
