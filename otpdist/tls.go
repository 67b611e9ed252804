package otpdist

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ergo-services/ergo/lib"
)

// TLSFiles names the PEM files of a node that speaks distribution over TLS
// (as OTP's inet_tls_dist does). ergo listens with tls.NewListener and
// dials OTP nodes with a tls.Dialer, both with Config.TLS; the distribution
// handshake then runs with 4-byte length prefixes (distHandshake passes
// ergo's tls flag on), and tickConn and distConn sit on the *tls.Conn as on
// a TCP socket.
type TLSFiles struct {
	Cert, Key string // this node's certificate (chain) and private key
	// CA, when set, is the certificate(s) every peer's certificate must
	// chain to, in both directions (mutual TLS). Without it peers are not
	// verified, as with OTP's default verify_none: the traffic is
	// encrypted, and the cookie still decides who may connect.
	CA string
}

// tlsHandshakeTimeout bounds the TLS handshake of an incoming connection
// (ergo accepts one connection at a time).
const tlsHandshakeTimeout = 5 * time.Second

// TLSConfig loads and checks the files and returns the tls.Config for
// Config.TLS. Its errors name the flag and the file at fault.
func (f TLSFiles) TLSConfig() (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs both --tls-cert FILE and --tls-key FILE (PEM; --tls-ca is optional)")
	}
	cert, err := f.keyPair()
	if err != nil {
		return nil, err
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
	caPEM, err := readPEM("--tls-ca", f.CA, "CERTIFICATE", "the PEM certificate(s) of the CA that signs the peers' certificates")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca %s: no certificate in it could be parsed; give the PEM certificate(s) of the CA that signs the peers' certificates", f.CA)
	}
	// Request, not require, a certificate: a peer without one then gets
	// to VerifyConnection, which says so (Go's own refusal is terser).
	cfg.ClientAuth = tls.RequestClientCert
	cfg.ClientCAs = pool // named in the request, so a peer picks the right certificate
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPeer(cs, pool) }
	return cfg, nil
}

// keyPair loads the node's certificate and key, and checks that they go
// together and that the certificate is valid now.
func (f TLSFiles) keyPair() (tls.Certificate, error) {
	certPEM, err := readPEM("--tls-cert", f.Cert, "CERTIFICATE", "a PEM certificate (-----BEGIN CERTIFICATE-----)")
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM("--tls-key", f.Key, "PRIVATE KEY", "a PEM private key (-----BEGIN ... PRIVATE KEY-----), unencrypted")
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return cert, fmt.Errorf("--tls-key %s is not the private key of the certificate in --tls-cert %s (%v): give the key the certificate was issued for", f.Key, f.Cert, err)
		}
		return cert, fmt.Errorf("--tls-cert %s with --tls-key %s: %v (give PEM files of one certificate and its unencrypted private key)", f.Cert, f.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return cert, fmt.Errorf("--tls-cert %s: %v", f.Cert, err)
		}
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return cert, fmt.Errorf("--tls-cert %s: the certificate expired on %s; issue a new one", f.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	} else if now.Before(leaf.NotBefore) {
		return cert, fmt.Errorf("--tls-cert %s: the certificate is not valid before %s (is this host's clock right?)", f.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// verifyPeer checks a peer's certificate chain against the CA pool.
func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return &peerCertError{msg: "it sent no certificate"}
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
		return &peerCertError{msg: fmt.Sprintf("its certificate %q does not verify: %v", cs.PeerCertificates[0].Subject, err)}
	}
	return nil
}

// readPEM reads a file given with flag and checks that it holds a PEM
// block whose type ends with typ.
func readPEM(flag, path, typ, want string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v; give a readable file holding %s", flag, path, err, want)
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if strings.HasSuffix(blk.Type, typ) {
			if typ == "PRIVATE KEY" && x509.IsEncryptedPEMBlock(blk) { //nolint:staticcheck // only to tell the user
				return nil, fmt.Errorf("%s %s: the private key is encrypted; give it unencrypted (e.g. openssl pkey -in KEY -out KEY.plain), readable only by ps_port's user", flag, path)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s %s: no PEM %s block in it; give a file holding %s", flag, path, typ, want)
}

// peerCertError is a peer certificate that --tls-ca refuses.
type peerCertError struct{ msg string }

func (e *peerCertError) Error() string { return e.msg }

// tlsAccept runs the TLS handshake of an accepted connection before the
// distribution handshake, so that a TLS failure is told apart (and the
// handshake cannot hold the accept loop longer than tlsHandshakeTimeout).
func tlsAccept(conn lib.NetReadWriter) error {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	defer cancel()
	return tc.HandshakeContext(ctx)
}

// tlsRecordHandshake is the first byte of a TLS client's first record; no
// distribution handshake message starts with it (that would be a length
// over 5 600 bytes).
const tlsRecordHandshake = 0x16

// explainTLSError says what a failed TLS handshake means and what to do.
func explainTLSError(err error) string {
	var rh tls.RecordHeaderError
	var pc *peerCertError
	var op *net.OpError
	switch {
	case errors.As(err, &rh):
		return fmt.Sprintf("it does not speak TLS (%v); this node runs distribution over TLS (--tls-cert), "+
			"so peers must run OTP's TLS distribution: erl -proto_dist inet_tls -ssl_dist_optfile FILE (docs/node.md, \"TLS\")", err)
	case errors.As(err, &pc):
		return fmt.Sprintf("TLS: %s; with --tls-ca every peer needs a certificate signed by that CA "+
			"(certfile/keyfile in the client part of its -ssl_dist_optfile)", pc.msg)
	case errors.As(err, &op) && op.Op == "remote error":
		return fmt.Sprintf("the peer refused the TLS handshake (%v): does its cacertfile hold the CA that signed --tls-cert?", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no TLS handshake within %v", tlsHandshakeTimeout)
	}
	return fmt.Sprintf("TLS handshake failed: %v", err)
}
