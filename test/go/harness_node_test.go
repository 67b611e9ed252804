package blackbox

// ps_port node and the real erl nodes that drive it: an erl node runs
// node_driver.erl (and reliability_driver.erl for the reliability suite),
// which evaluates the Erlang expressions a test writes to its stdin.

import (
	"bufio"
	"crypto/rand"
	hexenc "encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// uniqueName is a node name no other test (of this run or of another
// worktree's) uses: prefix_<random hex>@host.
func uniqueName(prefix string) string { return uniqueNameAt(prefix, "127.0.0.1") }

func uniqueNameAt(prefix, host string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "_" + hexenc.EncodeToString(b[:]) + "@" + host
}

// writeCookie writes a cookie file for ps_port and returns its path.
func writeCookie(t *testing.T, cookie string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cookie")
	if err := os.WriteFile(p, []byte(cookie+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomCookie() string {
	var b [12]byte
	rand.Read(b[:])
	return "C" + strings.ToUpper(hexenc.EncodeToString(b[:]))
}

// psNode is a running "ps_port node".
type psNode struct {
	t      *testing.T
	name   string
	cookie string
	cmd    *exec.Cmd
	stderr *syncBuffer
	waited chan struct{}
	err    error
}

// nodeOpts says how startNode runs ps_port node.
type nodeOpts struct {
	cookie string   // default: a random one
	flags  []string // extra flags (default --allow-any)
	host   string   // the node's host part (default 127.0.0.1)
	netns  string   // run inside this network namespace (ip netns exec)
	env    []string // extra environment
	asUser string   // run as this user (setpriv), e.g. "nobody"
	// tag is put in the environment as PS_REL_TAG (harness_leaks_test.go),
	// so every child carries it.
	tag string
	// cookieInEnv passes the cookie in PS_PORT_COOKIE (with no
	// ~/.erlang.cookie) instead of --cookie-file.
	cookieInEnv bool
	// setup is called on the command last before it starts (working
	// directory, stdin; nil stdin is /dev/null).
	setup func(cmd *exec.Cmd)
}

// startPsNode starts ps_port node with the cookie and extra flags (none:
// --allow-any) and waits until it is up.
func startPsNode(t *testing.T, cookie string, extra ...string) *psNode {
	t.Helper()
	return startNode(t, nodeOpts{cookie: cookie, flags: extra})
}

// startNode starts ps_port node and waits until it is up. Cleanup stops it
// (SIGTERM, then SIGKILL) and logs its stderr when the test failed.
func startNode(t *testing.T, o nodeOpts) *psNode {
	t.Helper()
	if o.host == "" {
		o.host = "127.0.0.1"
	}
	if o.cookie == "" {
		o.cookie = randomCookie()
	}
	if len(o.flags) == 0 {
		o.flags = []string{"--allow-any"}
	}
	var argv []string
	bin, cookieFile := psPortBinary(t), ""
	if o.asUser != "" {
		bin, cookieFile = publicBinary(t), userCookie(t, o.asUser, o.cookie)
		u, err := user.Lookup(o.asUser)
		if err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "setpriv", "--reuid", u.Uid, "--regid", u.Gid, "--clear-groups", "--")
	} else if !o.cookieInEnv {
		cookieFile = writeCookie(t, o.cookie)
	}
	if o.netns != "" {
		argv = append([]string{"ip", "netns", "exec", o.netns}, argv...)
	}
	if o.tag != "" || o.netns != "" {
		// epmd first, without the tag: ps_port would start it with its
		// own environment, and it would outlive the test as a tagged
		// process.
		epmd := []string{"epmd", "-daemon"}
		if o.netns != "" {
			epmd = append([]string{"ip", "netns", "exec", o.netns}, epmd...)
		}
		if out, err := exec.Command(epmd[0], epmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(epmd, " "), err, out)
		}
	}
	name := uniqueNameAt("ps", o.host)
	argv = append(argv, bin, "node", "--name", name)
	if !o.cookieInEnv {
		argv = append(argv, "--cookie-file", cookieFile)
	}
	argv = append(argv, o.flags...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if o.tag != "" || len(o.env) > 0 || o.cookieInEnv {
		cmd.Env = append(os.Environ(), o.env...)
		if o.tag != "" {
			cmd.Env = append(cmd.Env, relTagEnv+"="+o.tag)
		}
		if o.cookieInEnv {
			cmd.Env = append(cmd.Env, "PS_PORT_COOKIE="+o.cookie, "HOME="+t.TempDir())
		}
	}
	n := &psNode{t: t, name: name, cookie: o.cookie, cmd: cmd, stderr: &syncBuffer{}, waited: make(chan struct{})}
	cmd.Stderr = n.stderr
	if o.setup != nil {
		o.setup(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.err = cmd.Wait(); close(n.waited) }()
	t.Cleanup(func() {
		n.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("ps_port node stderr:\n%s", n.stderr.String())
		}
	})
	waitFor(t, 15*time.Second, func() string { return fmt.Sprintf("ps_port node not up:\n%s", n.stderr) }, func() bool {
		select {
		case <-n.waited:
			t.Fatalf("ps_port node exited: %v\n%s", n.err, n.stderr.String())
		default:
		}
		return strings.Contains(n.stderr.String(), " is up")
	})
	return n
}

// pid is the OS pid of ps_port node itself (setpriv and ip netns exec
// exec it, so it is the pid started).
func (n *psNode) pid() int { return n.cmd.Process.Pid }

// stop sends SIGTERM and waits; SIGKILL after timeout.
func (n *psNode) stop(timeout time.Duration) time.Duration {
	start := time.Now()
	select {
	case <-n.waited:
		return 0
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.waited:
	case <-time.After(timeout):
		n.t.Errorf("ps_port node did not stop within %v of SIGTERM; killing it", timeout)
		n.cmd.Process.Kill()
		<-n.waited
	}
	return time.Since(start)
}

// rssKiB is ps_port's resident set size.
func (n *psNode) rssKiB(t *testing.T) int { return rssOf(t, n.pid()) }

// publicBinary copies ps_port and ps_port_node where any user may run them
// (t.TempDir and the package's build directory are 0700) and returns the
// path of ps_port.
func publicBinary(t *testing.T) string {
	t.Helper()
	publicOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ps_port_rel_pub")
		if err != nil {
			publicErr = err
			return
		}
		os.Chmod(dir, 0o755)
		// Both binaries: "ps_port node" execs ps_port_node beside it.
		for _, name := range []string{"ps_port", "ps_port_node"} {
			src, err := os.ReadFile(filepath.Join(filepath.Dir(psPortBinary(t)), name))
			if err != nil {
				publicErr = err
				return
			}
			if publicErr = os.WriteFile(filepath.Join(dir, name), src, 0o755); publicErr != nil {
				return
			}
		}
		publicPath = filepath.Join(dir, "ps_port")
	})
	if publicErr != nil {
		t.Fatal(publicErr)
	}
	return publicPath
}

var (
	publicOnce sync.Once
	publicPath string
	publicErr  error
)

// userCookie writes a cookie file that only user may read, in a directory
// anyone may enter, and returns its path.
func userCookie(t *testing.T, user, cookie string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ps_port_rel_cookie")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, "cookie")
	if err := os.WriteFile(p, []byte(cookie+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", user, p).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v %s", p, err, out)
	}
	return p
}

var (
	driverMu   sync.Mutex
	driverDirs = map[string]string{}
)

// nodeDriver compiles node_driver.erl with the host's erlc once and returns
// the directory of its .beam. A missing erlc fails the test: these tests
// never skip.
func nodeDriver(t *testing.T) string {
	t.Helper()
	return erlModule(t, []string{"erl"}, "node_driver.erl")
}

// relDriver compiles reliability_driver.erl with the host's erlc once.
func relDriver(t *testing.T) string {
	t.Helper()
	return erlModule(t, []string{"erl"}, "reliability_driver.erl")
}

// erlModule compiles the module src (in this directory) for the
// Erlang/OTP that the command erl runs: once per command and module, by the
// erlc beside that erl (erlcFor), so every owner loads a .beam of its own
// release. It returns the directory of the .beam.
func erlModule(t *testing.T, erl []string, src string) string {
	t.Helper()
	erlc := erlcFor(erl)
	key := strings.Join(erlc, " ") + " " + src
	driverMu.Lock()
	defer driverMu.Unlock()
	if dir, ok := driverDirs[key]; ok {
		return dir
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		t.Fatal(err)
	}
	// In /tmp: a chroot made by scripts/otp-root.sh sees the host's /tmp.
	dir, err := os.MkdirTemp("/tmp", strings.TrimSuffix(src, ".erl"))
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string(nil), erlc[1:]...), "-o", dir, abs)
	out, err := exec.Command(erlc[0], args...).CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("%s: %v\n%s(node tests need Erlang/OTP: apt-get install erlang-base erlang-dev)", key, err, out)
	}
	driverDirs[key] = dir
	return dir
}

// erlcFor is the Erlang compiler beside the command erl: the command up to
// its last word named erl, with erlc there instead ("erl" → "erlc";
// "scripts/otp-root.sh sid run -- erl -proto_dist inet_tls" → "... -- erlc").
func erlcFor(erl []string) []string {
	for i := len(erl) - 1; i >= 0; i-- {
		if filepath.Base(erl[i]) == "erl" {
			c := append([]string(nil), erl[:i+1]...)
			c[i] += "c"
			return c
		}
	}
	return []string{"erlc"}
}

// erlNode is an erl node running node_driver.
type erlNode struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	waited chan struct{}
}

// erlCommand is how startErl runs erl. The suite for another release
// (otproot_test.go) points it at that release's chroot while it runs node
// tests there.
var erlCommand = []string{"erl"}

// erlOpts says how startErlNode runs erl.
type erlOpts struct {
	cmd         []string // the command that runs erl (default erlCommand; erl with reliability)
	host        string   // the node's host part (default 127.0.0.1)
	ticktime    int      // net_ticktime in seconds (0: OTP's default)
	env         []string // extra environment
	reliability bool     // reliability_driver on the code path too
}

// startErl starts "erl -name ... -setcookie cookie" running node_driver,
// talking to the ps_port node psName.
func startErl(t *testing.T, cookie, psName string) *erlNode {
	t.Helper()
	return startErlNode(t, cookie, psName, erlOpts{})
}

// startErlWith is startErl with erl run as the command erl (e.g. inside a
// chroot: scripts/otp-root.sh sid run -- erl).
func startErlWith(t *testing.T, erl []string, cookie, psName string) *erlNode {
	t.Helper()
	return startErlNode(t, cookie, psName, erlOpts{cmd: erl})
}

// startErlNode starts an erl node running node_driver that talks to
// psName, and waits until it is ready. An empty cookie leaves it to
// $HOME/.erlang.cookie. Cleanup closes its stdin (it halts) and kills it
// 5 s later.
func startErlNode(t *testing.T, cookie, psName string, o erlOpts) *erlNode {
	t.Helper()
	switch {
	case o.cmd != nil:
	case o.reliability:
		// The reliability suite's owners run the host's OTP always.
		o.cmd = []string{"erl"}
	default:
		o.cmd = erlCommand
	}
	if o.host == "" {
		o.host = "127.0.0.1"
	}
	name := uniqueNameAt("erl", o.host)
	args := append(append([]string(nil), o.cmd[1:]...), "-name", name, "-noshell", "-pa", erlModule(t, o.cmd, "node_driver.erl"))
	if o.reliability {
		args = append(args, "-pa", erlModule(t, o.cmd, "reliability_driver.erl"))
	}
	if cookie != "" { // else ~/.erlang.cookie (HOME in o.env)
		args = append(args, "-setcookie", cookie)
	}
	if o.ticktime > 0 {
		args = append(args, "-kernel", "net_ticktime", strconv.Itoa(o.ticktime))
	}
	args = append(args, "-s", "node_driver", "main", "-extra", psName)
	cmd := exec.Command(o.cmd[0], args...)
	if len(o.env) > 0 {
		cmd.Env = append(os.Environ(), o.env...)
	}
	e := &erlNode{t: t, name: name, cmd: cmd, lines: make(chan string, 1024), stderr: &syncBuffer{}, waited: make(chan struct{})}
	var err error
	if e.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = e.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting erl (node tests need Erlang/OTP on PATH): %v", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			e.lines <- sc.Text()
		}
		close(e.lines)
	}()
	go func() { cmd.Wait(); close(e.waited) }()
	t.Cleanup(func() {
		e.stdin.Close()
		select {
		case <-e.waited:
		case <-time.After(5 * time.Second):
			e.cmd.Process.Kill()
			<-e.waited
		}
		if t.Failed() && e.stderr.String() != "" {
			t.Logf("erl stderr:\n%s", e.stderr.String())
		}
	})
	select {
	case l := <-e.lines:
		if l != "ready" {
			t.Fatalf("erl said %q instead of ready\n%s", l, e.stderr.String())
		}
	case <-time.After(20*time.Second + testSlack()):
		t.Fatalf("erl not ready after 20s (+ slack)\n%s", e.stderr.String())
	}
	return e
}

// eval evaluates one Erlang expression sequence (the final '.' optional)
// and returns its value as printed by ~0tp.
func (e *erlNode) eval(expr string) string {
	e.t.Helper()
	return e.evalTimeout(expr, 60*time.Second)
}

func (e *erlNode) evalTimeout(expr string, timeout time.Duration) string {
	e.t.Helper()
	expr = strings.TrimSpace(expr)
	if !strings.HasSuffix(expr, ".") {
		expr += "."
	}
	if strings.Contains(expr, "\n") {
		expr = strings.ReplaceAll(expr, "\n", " ")
	}
	if _, err := io.WriteString(e.stdin, expr+"\n"); err != nil {
		e.t.Fatalf("writing to erl: %v", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-e.lines:
			if !ok {
				e.t.Fatalf("erl exited while evaluating %s\n%s", expr, e.stderr.String())
			}
			switch {
			case strings.HasPrefix(l, "=> "):
				return l[3:]
			case strings.HasPrefix(l, "!! "):
				e.t.Fatalf("erl: %s raised %s", expr, l[3:])
			default:
				e.t.Logf("erl: %s", l)
			}
		case <-timer.C:
			e.t.Fatalf("erl: no answer to %s within %v", expr, timeout)
		}
	}
}

// expect evaluates expr and fails unless it prints want.
func (e *erlNode) expect(expr, want string) {
	e.t.Helper()
	if got := e.eval(expr); got != want {
		e.t.Fatalf("%s\n got: %s\nwant: %s", expr, got, want)
	}
}

// evalInt evaluates expr, which must print an integer.
func (e *erlNode) evalInt(expr string) int {
	e.t.Helper()
	s := e.eval(expr)
	n, err := strconv.Atoi(s)
	if err != nil {
		e.t.Fatalf("%s: want an integer, got %s", expr, s)
	}
	return n
}

// kill SIGKILLs the erl node.
func (e *erlNode) kill() {
	e.cmd.Process.Kill()
	<-e.waited
}

// erlStr quotes s as an Erlang string literal (on one line: erl reads an
// expression a line).
func erlStr(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// erlBin quotes s as an Erlang binary literal.
func erlBin(s string) string { return "<<" + erlStr(s) + ">>" }

// nodePair starts a ps_port node (flags extra, default --allow-any) and an
// erl node with the same cookie.
func nodePair(t *testing.T, extra ...string) (*psNode, *erlNode) {
	t.Helper()
	ps := startPsNode(t, randomCookie(), extra...)
	return ps, startErl(t, ps.cookie, ps.name)
}
