package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are the PEM files of a cluster started WithTLS, in its temporary
// directory: what a client of it needs.
type TLSFiles struct {
	CAFile   string // the CA that signed the members' and the client's certificates
	CertFile string // a client certificate the members accept
	KeyFile  string // its key
}

// WithTLS makes the members serve clients over TLS only, with a
// certificate for 127.0.0.1 from a CA made for the cluster, and accept only
// clients with a certificate from that CA (--client-cert-auth). TLS gives
// the files a client needs; Client and Leader use them. Members still talk
// to each other in plain HTTP.
func WithTLS() Option {
	return func(c *config) { c.tls = true }
}

// TLS returns the files of a cluster started WithTLS, nil for another.
func (c *Cluster) TLS() *TLSFiles {
	return c.tlsFiles
}

// makeTLS writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all valid for a day, to dir, and returns their files and
// the client's configuration.
func makeTLS(dir string) (*TLSFiles, *tls.Config, error) {
	caKey, caDER, err := newCert(nil, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	})
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, err
	}
	serverKey, serverDER, err := newCert(ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "etcdtest member"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
	})
	if err != nil {
		return nil, nil, err
	}
	clientKey, clientDER, err := newCert(ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "etcdtest client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, nil, err
	}
	serverKeyDER, err := x509.MarshalPKCS8PrivateKey(serverKey)
	if err != nil {
		return nil, nil, err
	}
	clientKeyDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		return nil, nil, err
	}
	files := &TLSFiles{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "client.pem"),
		KeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	var clientPEM, clientKeyPEM []byte
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
		keep *[]byte
	}{
		{files.CAFile, "CERTIFICATE", caDER, nil},
		{serverCertFile(dir), "CERTIFICATE", serverDER, nil},
		{serverKeyFile(dir), "PRIVATE KEY", serverKeyDER, nil},
		{files.CertFile, "CERTIFICATE", clientDER, &clientPEM},
		{files.KeyFile, "PRIVATE KEY", clientKeyDER, &clientKeyPEM},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return nil, nil, err
		}
		if f.keep != nil {
			*f.keep = b
		}
	}
	cert, err := tls.X509KeyPair(clientPEM, clientKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return files, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func serverCertFile(dir string) string { return filepath.Join(dir, "member.pem") }
func serverKeyFile(dir string) string  { return filepath.Join(dir, "member-key.pem") }

// newCert makes a key and a certificate from tmpl, signed by parent and
// parentKey, or self-signed when parent is nil. It returns the key and the
// certificate in DER.
func newCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return key, der, nil
}
