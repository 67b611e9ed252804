package blackbox

// ps_port node over TLS: an OTP node using inet_tls distribution drives it
// as over TCP; a plain-TCP node cannot connect; with --tls-ca a peer whose
// certificate another CA signed is refused.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate and key for name signed by ca and returns
// their paths.
func (ca *testCA) issue(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsErl is the erl command line of an OTP node on inet_tls distribution
// that presents certFile/keyFile both as server and as client.
func tlsErl(t *testing.T, dir, certFile, keyFile string) []string {
	t.Helper()
	opts := filepath.Join(dir, fmt.Sprintf("ssl_dist_%d.conf", time.Now().UnixNano()))
	side := fmt.Sprintf(`[{certfile, %q}, {keyfile, %q}, {verify, verify_none}]`, certFile, keyFile)
	conf := fmt.Sprintf("[{server, %s}, {client, %s}].\n", side, side)
	if err := os.WriteFile(opts, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{erlCommand[0], "-proto_dist", "inet_tls", "-ssl_dist_optfile", opts}
}

func TestNodeTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	psCert, psKey := ca.issue(t, dir, "ps")
	erlCert, erlKey := ca.issue(t, dir, "erl")
	cookie := randomCookie()
	ps := startPsNode(t, cookie, "--allow-any", "--tls-cert", psCert, "--tls-key", psKey, "--tls-ca", ca.file)

	e := startErlWith(t, tlsErl(t, dir, erlCert, erlKey), cookie, ps.name)
	e.expect(`{ok, P} = open(<<"cat">>, []), P ! {self(), {command, <<"over tls\n">>}}, receive {P, {data, D}} -> D after 10000 -> timeout end`,
		`<<"over tls\n">>`)
	e.expect(`P ! {self(), eof}, element(4, collect(P))`, `normal`)
	// The connection really is TLS, as the owner's net_kernel sees it.
	e.expect(`{ok, Info} = net_kernel:node_info(ps_node()), element(4, proplists:get_value(address, Info))`, `tls`)
	// Owner gone: the tree goes, as over TCP.
	osPid := e.evalInt(`{Owner, _, OsPid} = spawn_owner(` + treeCmd + `, [{delay_to_sigkill, 200}]), OsPid`)
	pids := treePids(t, osPid)
	e.eval(`exit(Owner, kill)`)
	waitAllGone(t, pids, 2*time.Second)

	// A node without TLS cannot connect to it.
	plain := startErl(t, cookie, ps.name)
	plain.expect(`net_kernel:connect_node(ps_node())`, `false`)

	// With --tls-ca, a certificate from another CA is refused.
	other := newTestCA(t, dir, "other")
	badCert, badKey := other.issue(t, dir, "intruder")
	bad := startErlWith(t, tlsErl(t, dir, badCert, badKey), cookie, ps.name)
	bad.expect(`net_kernel:connect_node(ps_node())`, `false`)
	// The trusted owner still works.
	e.expect(`{ok, P2} = open(<<"true">>, []), element(4, collect(P2))`, `normal`)
}

// TestNodeTLSBadFiles: TLS flags that cannot work stop ps_port at start,
// with a message naming the file.
func TestNodeTLSBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "ps")
	cookieFile := writeCookie(t, randomCookie())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", cert}, "TLS needs both --tls-cert and --tls-key"},
		{[]string{"--tls-cert", cert, "--tls-key", filepath.Join(dir, "missing.key")}, "missing.key"},
		{[]string{"--tls-cert", key, "--tls-key", key}, "give PEM files of one certificate and its private key"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", key}, "holds no PEM certificate"},
	} {
		args := append([]string{"node", "--name", uniqueName("ps") + "@127.0.0.1", "--cookie-file", cookieFile, "--allow-any"}, c.args...)
		out, err := exec.Command(psPortBinary(t), args...).CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and %q", c.args, code, out, c.want)
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
