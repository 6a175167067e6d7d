package tls13

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	envAddr = "TLS13_TEST_ADDR" // the server address, for children
	envCert = "TLS13_TEST_CERT" // the server certificate, hex DER, for children
)

func init() {
	children["echo-client"] = echoClient
}

// childConfig is clientTLSConfig for a child process, trusting the
// parent's certificate.
func childConfig() (*tls.Config, error) {
	der, err := hex.DecodeString(os.Getenv(envCert))
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{RootCAs: pool, ServerName: "parley.test", MinVersion: tls.VersionTLS13}, nil
}

// echoClient runs in a child process: round trips of echoSizes, then it
// prints the negotiated suite.
func echoClient() error {
	cfg, err := childConfig()
	if err != nil {
		return err
	}
	conn, err := tls.Dial("tcp", os.Getenv(envAddr), cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	for _, n := range echoSizes {
		if err := echo(conn, randomBytes(n)); err != nil {
			return fmt.Errorf("%d bytes: %w", n, err)
		}
	}
	fmt.Println(tls.CipherSuiteName(conn.ConnectionState().CipherSuite))
	return nil
}

// childCommand returns a command that runs the named child of this test
// binary against e.
func childCommand(t *testing.T, e *echoServer, name string, env ...string) *exec.Cmd {
	cert, _ := testCert()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+name, envAddr+"="+e.addr, envCert+"="+hex.EncodeToString(cert.Certificate[0]))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestChaCha20Interop runs a crypto/tls client that prefers
// ChaCha20-Poly1305 (GODEBUG=cpu.aes=off hides AES-NI from it, so it
// lists ChaCha20 first and Go's server follows) in a child process, against
// a server that also sends KeyUpdate(update_requested) before each echo.
func TestChaCha20Interop(t *testing.T) {
	e := startEcho(t, Config{}, func(e *echoServer) { e.keyUpdate = true })
	out, err := childCommand(t, e, "echo-client", "GODEBUG=cpu.aes=off").Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != "TLS_CHACHA20_POLY1305_SHA256" {
		t.Errorf("child negotiated %q, want TLS_CHACHA20_POLY1305_SHA256", got)
	}
}

// TestOpenSSLInterop talks to OpenSSL's s_client, when installed, with the
// two suites a Go client never picks on AES-NI hardware, and sends
// KeyUpdate with and without update_requested from the client side.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	cert, _ := testCert()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, suite := range []string{"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			e := startEcho(t, Config{}, nil)
			cmd := exec.Command(openssl, "s_client", "-connect", e.addr, "-tls1_3", "-ciphersuites", suite,
				"-servername", "parley.test", "-CAfile", caFile, "-verify_return_error")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			// s_client reports KEYUPDATE on stderr, echoed data on stdout.
			stdout, w := io.Pipe()
			cmd.Stdout, cmd.Stderr = w, w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); w.Close() }()
			lines := make(chan string, 256)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			expect := func(want string) {
				t.Helper()
				timeout := time.After(10 * time.Second)
				for {
					select {
					case line, ok := <-lines:
						if !ok {
							t.Fatalf("s_client exited before printing %q", want)
						}
						if strings.Contains(line, want) {
							return
						}
					case <-timeout:
						t.Fatalf("s_client did not print %q", want)
					}
				}
			}
			expect("Cipher is " + suite)
			send := func(s string) {
				t.Helper()
				if _, err := io.WriteString(stdin, s); err != nil {
					t.Fatal(err)
				}
			}
			send("hello from openssl\n")
			expect("hello from openssl")
			// s_client commands: K = KeyUpdate(update_requested), k = without.
			for _, cmd := range []string{"K", "k"} {
				send(cmd + "\n")
				expect("KEYUPDATE")
				time.Sleep(50 * time.Millisecond) // keep the next line out of the command's read
				send("after " + cmd + "\n")
				expect("after " + cmd)
			}
			stdin.Close() // s_client closes with close_notify
			if err := e.nextErr(t); err != io.EOF {
				t.Errorf("server error %v, want io.EOF", err)
			}
		})
	}
}
