package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a node that speaks distribution over TLS
// (as OTP's inet_tls_dist does).
type TLSFiles struct {
	Cert, Key string // this node's certificate (chain) and private key
	// CA, when set, is the certificate(s) every peer's certificate must
	// chain to, in both directions (mutual TLS). Without it peers are not
	// verified, as with OTP's default verify_none: the traffic is
	// encrypted, and the cookie still decides who may connect.
	CA string
}

// TLSConfig loads the files into a tls.Config for Config.TLS.
func (f TLSFiles) TLSConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w (give PEM files of one certificate and its private key)", f.Cert, f.Key, err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Peers are named by node name, not by host name: nothing to match a
		// certificate's names against. With a CA the chain is checked below.
		InsecureSkipVerify: true,
	}
	if f.CA == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", f.CA)
	}
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer sent no certificate (this node was started with a TLS CA: peers need a certificate it signed)")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return fmt.Errorf("peer certificate %q: %w", cs.PeerCertificates[0].Subject, err)
		}
		return nil
	}
	return cfg, nil
}
