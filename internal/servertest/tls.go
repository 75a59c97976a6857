package servertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/varbridge/varbridge/internal/server"
)

// TLS is a self-signed certificate for 127.0.0.1, ::1 and localhost.
type TLS struct {
	CertPEM, KeyPEM   []byte
	CertFile, KeyFile string // the PEMs, written to the test's temp dir
	Cert              tls.Certificate
	Pool              *x509.CertPool // trusts Cert
}

// SelfSignedTLS makes a fresh ECDSA P-256 certificate valid for an hour.
func SelfSignedTLS(tb testing.TB) *TLS {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "varbridge test"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	t := &TLS{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if t.Cert, err = tls.X509KeyPair(t.CertPEM, t.KeyPEM); err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	t.Pool = x509.NewCertPool()
	t.Pool.AddCert(leaf)
	dir := tb.TempDir()
	t.CertFile, t.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(t.CertFile, t.CertPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(t.KeyFile, t.KeyPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	return t
}

// ServerOption makes a server serve TLS with the certificate.
func (t *TLS) ServerOption() server.Option {
	return server.WithGRPCOptions(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{t.Cert}, MinVersion: tls.VersionTLS12,
	})))
}

// ClientCreds trusts only the certificate.
func (t *TLS) ClientCreds() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{RootCAs: t.Pool, MinVersion: tls.VersionTLS12})
}
