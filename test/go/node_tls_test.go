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
	"fmt"
	"math/big"
	"net"
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
	return ca.issueValid(t, dir, name, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// issueValid is issue with the certificate valid from notBefore to notAfter.
func (ca *testCA) issueValid(t *testing.T, dir, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		// OTP checks the host of a node name as a DNS name, even an address.
		DNSNames:    []string{"localhost", "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
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

// tlsSide is one side (server or client) of an -ssl_dist_optfile: the
// node's certificate and key, and with ca its peers' certificates are
// verified against it (and the server requires one).
type tlsSide struct{ cert, key, ca string }

func (s tlsSide) erlang(server bool) string {
	opts := []string{}
	if s.cert != "" {
		opts = append(opts, fmt.Sprintf("{certfile, %q}, {keyfile, %q}", s.cert, s.key))
	}
	if s.ca == "" {
		opts = append(opts, "{verify, verify_none}")
	} else {
		opts = append(opts, fmt.Sprintf("{verify, verify_peer}, {cacertfile, %q}", s.ca))
		if server {
			opts = append(opts, "{fail_if_no_peer_cert, true}")
		}
	}
	return "[" + strings.Join(opts, ", ") + "]"
}

// tlsErl is the erl command line of an OTP node on inet_tls distribution
// with an -ssl_dist_optfile made of server and client, and more flags.
func tlsErl(t *testing.T, dir string, server, client tlsSide, more ...string) []string {
	t.Helper()
	opts := filepath.Join(dir, fmt.Sprintf("ssl_dist_%d.conf", time.Now().UnixNano()))
	conf := fmt.Sprintf("[{server, %s},\n {client, %s}].\n", server.erlang(true), client.erlang(false))
	if err := os.WriteFile(opts, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return append(append(append([]string(nil), erlCommand...), "-proto_dist", "inet_tls", "-ssl_dist_optfile", opts), more...)
}

// tlsNode is a ps_port node on TLS distribution, with the certificates of
// a CA that issued its own and an owner's.
type tlsNode struct {
	dir    string
	ca     *testCA
	ps     *psNode
	cookie string
	owner  tlsSide // the owner's certificate, key and the CA
}

// startTLSNode starts ps_port node with --tls-cert, --tls-key and --tls-ca.
func startTLSNode(t *testing.T) tlsNode {
	t.Helper()
	n := tlsNode{dir: t.TempDir(), cookie: randomCookie()}
	n.ca = newTestCA(t, n.dir, "ca")
	psCert, psKey := n.ca.issue(t, n.dir, "ps")
	erlCert, erlKey := n.ca.issue(t, n.dir, "erl")
	n.ps = startPsNode(t, n.cookie, "--allow-any", "--tls-cert", psCert, "--tls-key", psKey, "--tls-ca", n.ca.file)
	n.owner = tlsSide{erlCert, erlKey, n.ca.file}
	return n
}

func TestNodeTLS(t *testing.T) {
	n := startTLSNode(t)
	dir, ps, cookie, full := n.dir, n.ps, n.cookie, n.owner
	erlCert, erlKey := full.cert, full.key
	// Both sides verify each other: the owner checks ps_port's certificate
	// (and its host name, 127.0.0.1) as client, ps_port checks the owner's.
	e := startErlWith(t, tlsErl(t, dir, full, full), cookie, ps.name)
	e.expect(`{ok, P} = open(<<"cat">>, []), P ! {self(), {command, <<"over tls\n">>}}, receive {P, {data, D}} -> D after 10000 -> timeout end`,
		`<<"over tls\n">>`)
	e.expect(`P ! {self(), eof}, element(4, collect(P))`, `normal`)
	e.expect(`{ok, P3} = open(<<"sh">>, [<<"-c">>, <<"echo err >&2; exit 3">>]), collect(P3)`,
		`{<<>>,<<"err\n">>,[],{exit_status,3}}`)
	// Enough data to take many TLS records and ergo's fragments, in order.
	e.expect(`{ok, P4} = open(<<"seq">>, [<<"1">>, <<"50000">>]), element(1, seq_check(P4, 50000, 30000))`, `ok`)
	// The connection really is TLS, as the owner's net_kernel sees it.
	e.expect(`{ok, Info} = net_kernel:node_info(ps_node()), element(4, proplists:get_value(address, Info))`, `tls`)
	// Owner gone: the tree goes, as over TCP.
	osPid := e.evalInt(`{Owner, _, OsPid} = spawn_owner(` + treeCmd + `, [{delay_to_sigkill, 200}]), OsPid`)
	pids := treePids(t, osPid)
	e.eval(`exit(Owner, kill)`)
	waitAllGone(t, pids, 2*time.Second)

	// A node without TLS cannot connect to it, and ps_port says why.
	plain := startErl(t, cookie, ps.name)
	plain.expect(`net_kernel:connect_node(ps_node())`, `false`)
	waitLog(t, ps.stderr, 5*time.Second, "it does not speak TLS")

	// With --tls-ca, a certificate from another CA is refused...
	other := newTestCA(t, dir, "other")
	badCert, badKey := other.issue(t, dir, "intruder")
	bad := startErlWith(t, tlsErl(t, dir, tlsSide{badCert, badKey, ""}, tlsSide{badCert, badKey, ""}), cookie, ps.name)
	bad.expect(`net_kernel:connect_node(ps_node())`, `false`)
	waitLog(t, ps.stderr, 5*time.Second, `its certificate "CN=intruder" does not verify`)
	// ... and so is a peer with no certificate at all.
	none := startErlWith(t, tlsErl(t, dir, tlsSide{erlCert, erlKey, ""}, tlsSide{}), cookie, ps.name)
	none.expect(`net_kernel:connect_node(ps_node())`, `false`)
	waitLog(t, ps.stderr, 5*time.Second, "TLS: it sent no certificate")
	// The trusted owner still works.
	e.expect(`{ok, P2} = open(<<"true">>, []), element(4, collect(P2))`, `normal`)
}

// TestNodeTLSDial: ps_port connects out over TLS too. The owner of a child
// is a process on a node ps_port is not connected to yet, so ps_port dials
// it (to monitor the owner) with its certificate, which that node checks
// against the CA.
func TestNodeTLSDial(t *testing.T) {
	n := startTLSNode(t)
	dir, ps, cookie, full := n.dir, n.ps, n.cookie, n.owner
	// No global mesh: B must not connect to ps_port by itself.
	a := startErlWith(t, tlsErl(t, dir, full, full, "-connect_all", "false"), cookie, ps.name)
	b := startErlWith(t, tlsErl(t, dir, full, full, "-connect_all", "false"), cookie, ps.name)
	b.expect(`register(owner_b, self()), lists:member(ps_node(), nodes())`, `false`)
	a.expect(`{ok, P} = open_as(<<"cat">>, [], [], rpc:call('`+b.name+`', erlang, whereis, [owner_b])), {owner_b, '`+b.name+`'} ! {child, P}, is_pid(P)`,
		`true`)
	// B has sent nothing to ps_port: ps_port dialed it, over TLS.
	b.expect(`WaitUp = fun W(0) -> false; W(N) -> lists:member(ps_node(), nodes()) orelse (timer:sleep(50) == ok andalso W(N - 1)) end, WaitUp(100)`,
		`true`)
	b.expect(`{ok, Info} = net_kernel:node_info(ps_node()), element(4, proplists:get_value(address, Info))`, `tls`)
	b.expect(`receive {child, P} -> P end, P ! {self(), {command, <<"dialed\n">>}}, receive {P, {data, D}} -> D after 10000 -> timeout end`,
		`<<"dialed\n">>`)
	b.expect(`P ! {self(), eof}, element(4, collect(P))`, `normal`)
}

// TestNodeTLSPeerOnPlainNode: a TLS peer cannot connect to a ps_port node
// without TLS, and ps_port says what to do.
func TestNodeTLSPeerOnPlainNode(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	erlCert, erlKey := ca.issue(t, dir, "erl")
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	side := tlsSide{erlCert, erlKey, ""}
	e := startErlWith(t, tlsErl(t, dir, side, side), cookie, ps.name)
	e.expect(`net_kernel:connect_node(ps_node())`, `false`)
	waitLog(t, ps.stderr, 5*time.Second, "it speaks TLS (OTP's -proto_dist inet_tls) and this node does not")
}

// TestNodeTLSBadFiles: TLS flags that cannot work stop ps_port at start,
// with a message naming the file and what to give instead.
func TestNodeTLSBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "ps")
	_, otherKey := ca.issue(t, dir, "other")
	expired, expiredKey := ca.issueValid(t, dir, "expired", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	future, futureKey := ca.issueValid(t, dir, "future", time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour))
	encKey := filepath.Join(dir, "enc.key")
	kb, _ := os.ReadFile(key)
	blk, _ := pem.Decode(kb)
	//lint:ignore SA1019 only to make an encrypted key to refuse
	eb, err := x509.EncryptPEMBlock(rand.Reader, "EC PRIVATE KEY", blk.Bytes, []byte("pw"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(encKey, pem.EncodeToMemory(eb), 0o600); err != nil {
		t.Fatal(err)
	}
	cookieFile := writeCookie(t, randomCookie())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", cert}, "TLS needs both --tls-cert FILE and --tls-key FILE"},
		{[]string{"--tls-ca", ca.file}, "TLS needs both --tls-cert FILE and --tls-key FILE"},
		{[]string{"--tls-cert", cert, "--tls-key", filepath.Join(dir, "missing.key")},
			"--tls-key " + filepath.Join(dir, "missing.key") + ": open"},
		{[]string{"--tls-cert", dir, "--tls-key", key}, "--tls-cert " + dir + ": read"},
		{[]string{"--tls-cert", key, "--tls-key", key}, "--tls-cert " + key + ": no PEM CERTIFICATE block in it"},
		{[]string{"--tls-cert", cert, "--tls-key", cert}, "--tls-key " + cert + ": no PEM PRIVATE KEY block in it"},
		{[]string{"--tls-cert", cert, "--tls-key", otherKey},
			"--tls-key " + otherKey + " is not the private key of the certificate in --tls-cert " + cert},
		{[]string{"--tls-cert", cert, "--tls-key", encKey}, "--tls-key " + encKey + ": the private key is encrypted"},
		{[]string{"--tls-cert", expired, "--tls-key", expiredKey}, "--tls-cert " + expired + ": the certificate expired on"},
		{[]string{"--tls-cert", future, "--tls-key", futureKey}, "--tls-cert " + future + ": the certificate is not valid before"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", key}, "--tls-ca " + key + ": no PEM CERTIFICATE block in it"},
		{[]string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", filepath.Join(dir, "nope.pem")}, "--tls-ca " + filepath.Join(dir, "nope.pem") + ": open"},
	} {
		args := append([]string{"node", "--name", uniqueName("ps"), "--cookie-file", cookieFile, "--allow-any"}, c.args...)
		out, err := exec.Command(psPortBinary(t), args...).CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and %q", c.args, code, out, c.want)
		}
	}
}
