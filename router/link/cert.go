package link

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Files of the cluster's certificates. A node's directory holds CAFile,
// NodeCertFile and NodeKeyFile; only the directory where certificates are
// issued (the operator's, not a node's) holds CAKeyFile.
const (
	CAFile       = "cluster-ca.pem"
	CAKeyFile    = "cluster-ca.key"
	NodeCertFile = "node.pem"
	NodeKeyFile  = "node.key"
)

// nodeNameSuffix ends the DNS name that carries a node's id in its
// certificate: node-<id>.parley.invalid. The reserved .invalid domain
// never resolves, so the name can only mean a cluster node.
const nodeNameSuffix = ".parley.invalid"

// certValidity is how long a CA or node certificate is valid.
const certValidity = 10 * 365 * 24 * time.Hour

// ErrNoNodeID means a certificate carries no node id (no DNS name
// node-<id>.parley.invalid), or more than one.
var ErrNoNodeID = errors.New("link: certificate names no single cluster node")

// NodeName returns the DNS name a node's certificate carries for id. A
// dialer verifies the peer's certificate against it, so the id in the
// certificate must be the id it dialed.
func NodeName(id uint32) string {
	return "node-" + strconv.FormatUint(uint64(id), 10) + nodeNameSuffix
}

// NodeIDOf returns the node id a certificate carries, or ErrNoNodeID.
func NodeIDOf(cert *x509.Certificate) (uint32, error) {
	var id uint32
	found := 0
	for _, name := range cert.DNSNames {
		s, ok := strings.CutSuffix(name, nodeNameSuffix)
		if !ok {
			continue
		}
		s, ok = strings.CutPrefix(s, "node-")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 0 || NodeName(uint32(n)) != name {
			continue
		}
		id = uint32(n)
		found++
	}
	if found != 1 {
		return 0, ErrNoNodeID
	}
	return id, nil
}

// CA is a cluster's certificate authority: it signs node certificates,
// and a node accepts only peers whose certificate it signed.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a cluster CA (ECDSA P-256) valid from an hour before now
// for ten years.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("link: generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "parley cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := createCert(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue returns credentials for node id signed by the CA, valid from an
// hour before now for ten years. The certificate serves both ends of a
// link (server and client authentication).
func (ca *CA) Issue(id uint32, now time.Time) (*Credentials, error) {
	if id == 0 {
		return nil, errors.New("link: node id 0")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("link: generate node key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "parley node " + strconv.FormatUint(uint64(id), 10)},
		DNSNames:    []string{NodeName(id)},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(certValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	cert, err := createCert(tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &Credentials{
		ID:   id,
		CA:   pool,
		Cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
	}, nil
}

func createCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("link: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("link: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("link: parse certificate: %w", err)
	}
	return cert, nil
}

// Credentials are what a node needs on its links: its id, the cluster CA
// that every peer's certificate must chain to, and its own certificate
// and key. They are immutable once made.
type Credentials struct {
	// ID is the node id the certificate carries (NodeIDOf).
	ID uint32
	// CA holds the cluster CA certificate only.
	CA *x509.CertPool
	// Cert is the node's certificate chain and key; Leaf is set.
	Cert tls.Certificate
}

// CreateCA writes a new cluster CA to dir (CAFile, CAKeyFile), creating
// dir. It refuses (wrapping os.ErrExist) if either file exists, so a CA
// that signed nodes is never replaced by mistake.
func CreateCA(dir string, now time.Time) error {
	ca, err := NewCA(now)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return fmt.Errorf("link: marshal CA key: %w", err)
	}
	return writeNew(dir, map[string][]byte{
		CAFile:    pemBlock("CERTIFICATE", ca.Cert.Raw),
		CAKeyFile: pemBlock("PRIVATE KEY", keyDER),
	})
}

// LoadCA reads the cluster CA and its key from dir.
func LoadCA(dir string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("link: load cluster CA: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("link: %s is not a cluster CA", filepath.Join(dir, CAFile))
	}
	return &CA{Cert: pair.Leaf, Key: key}, nil
}

// IssueNode writes credentials for node id, signed by the CA in caDir, to
// nodeDir (NodeCertFile, NodeKeyFile and a copy of CAFile), creating
// nodeDir. It refuses (wrapping os.ErrExist) if nodeDir already holds a
// node certificate or key.
func IssueNode(caDir, nodeDir string, id uint32, now time.Time) error {
	ca, err := LoadCA(caDir)
	if err != nil {
		return err
	}
	cred, err := ca.Issue(id, now)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cred.Cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("link: marshal node key: %w", err)
	}
	files := map[string][]byte{
		NodeCertFile: pemBlock("CERTIFICATE", cred.Cert.Leaf.Raw),
		NodeKeyFile:  pemBlock("PRIVATE KEY", keyDER),
	}
	if filepath.Clean(caDir) != filepath.Clean(nodeDir) {
		files[CAFile] = pemBlock("CERTIFICATE", ca.Cert.Raw)
	}
	return writeNew(nodeDir, files)
}

// LoadCredentials reads a node's credentials from dir (CAFile,
// NodeCertFile, NodeKeyFile) and checks that the node certificate chains
// to the CA and carries a node id.
func LoadCredentials(dir string) (*Credentials, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("link: load cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("link: %s holds no certificate", filepath.Join(dir, CAFile))
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, NodeCertFile), filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("link: load node certificate: %w", err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{
		Roots:     pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("link: node certificate not signed by the cluster CA: %w", err)
	}
	id, err := NodeIDOf(pair.Leaf)
	if err != nil {
		return nil, err
	}
	return &Credentials{ID: id, CA: pool, Cert: pair}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeNew creates dir (0700) and writes each file (0600) only if none of
// them exists yet. A file is written to a temporary name, synced, and
// linked into place, so a crash leaves it whole or absent.
func writeNew(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("link: %s: %w", filepath.Join(dir, name), os.ErrExist)
		}
	}
	for name, data := range files {
		tmp, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
		if err != nil {
			return fmt.Errorf("link: %w", err)
		}
		_, werr := tmp.Write(data)
		if werr == nil {
			werr = tmp.Sync()
		}
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			// Link, not rename: it fails if the name appeared meanwhile.
			werr = os.Link(tmp.Name(), filepath.Join(dir, name))
		}
		_ = os.Remove(tmp.Name())
		if werr != nil {
			return fmt.Errorf("link: write %s: %w", filepath.Join(dir, name), werr)
		}
	}
	return nil
}
