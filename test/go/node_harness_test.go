package blackbox

// Helpers for node_test.go: a ps_port node and a real erl node driven
// through node_driver.erl.

import (
	"bufio"
	"crypto/rand"
	hexenc "encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// psPortBinary builds ps_port once for the node tests.
func psPortBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ps_port_node_bin")
		if err != nil {
			binErr = err
			return
		}
		p := filepath.Join(dir, "ps_port")
		// ps_port node execs ps_port_node from ps_port's directory.
		out, err := exec.Command("go", "build", "-o", dir+"/", "../../cmd/ps_port", "../../cmd/ps_port_node").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building ps_port: %v\n%s", err, out)
			return
		}
		binPath = p
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// nodeBuf is a goroutine-safe buffer for a child's stderr.
type nodeBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *nodeBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *nodeBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// waitProcGone waits until pid is gone and fails the test after timeout.
func waitProcGone(t *testing.T, pid int, timeout time.Duration) time.Duration {
	t.Helper()
	return waitAllGone(t, []int{pid}, timeout)
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
	return nodeDriverFor(t, []string{"erl"})
}

// nodeDriverFor is nodeDriver for the Erlang/OTP that the command erl runs:
// node_driver.erl is compiled once per command, by the erlc beside that erl
// (erlcFor), so every owner loads a .beam of its own release.
func nodeDriverFor(t *testing.T, erl []string) string {
	t.Helper()
	erlc := erlcFor(erl)
	key := strings.Join(erlc, " ")
	driverMu.Lock()
	defer driverMu.Unlock()
	if dir, ok := driverDirs[key]; ok {
		return dir
	}
	src, err := filepath.Abs("node_driver.erl")
	if err != nil {
		t.Fatal(err)
	}
	// In /tmp: a chroot made by scripts/otp-root.sh sees the host's /tmp.
	dir, err := os.MkdirTemp("/tmp", "node_driver")
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string(nil), erlc[1:]...), "-o", dir, src)
	out, err := exec.Command(erlc[0], args...).CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("%s node_driver.erl: %v\n%s(node tests need Erlang/OTP: apt-get install erlang-base erlang-dev)", key, err, out)
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

func uniqueName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "_" + hexenc.EncodeToString(b[:]) + "@127.0.0.1"
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
	cmd    *exec.Cmd
	stderr *nodeBuf
	waited chan struct{}
	err    error
}

// startPsNode starts ps_port node with the cookie and extra flags (none:
// --allow-any) and waits until it is up.
func startPsNode(t *testing.T, cookie string, extra ...string) *psNode {
	t.Helper()
	return startPsNodeWith(t, cookie, nil, extra...)
}

// startPsNodeWith is startPsNode with stdin (nil: /dev/null).
func startPsNodeWith(t *testing.T, cookie string, stdin io.Reader, extra ...string) *psNode {
	t.Helper()
	return startPsNodeCmd(t, cookie, func(cmd *exec.Cmd) { cmd.Stdin = stdin }, extra...)
}

// startPsNodeCmd is startPsNode with setup called on the command before it
// starts (working directory, environment, credentials, stdin).
func startPsNodeCmd(t *testing.T, cookie string, setup func(cmd *exec.Cmd), extra ...string) *psNode {
	t.Helper()
	if len(extra) == 0 {
		extra = []string{"--allow-any"}
	}
	name := uniqueName("ps")
	args := append([]string{"node", "--name", name, "--cookie-file", writeCookie(t, cookie)}, extra...)
	n := &psNode{t: t, name: name, cmd: exec.Command(psPortBinary(t), args...), stderr: &nodeBuf{}, waited: make(chan struct{})}
	n.cmd.Stderr = n.stderr
	if setup != nil {
		setup(n.cmd)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.err = n.cmd.Wait(); close(n.waited) }()
	t.Cleanup(func() {
		n.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("ps_port node stderr:\n%s", n.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(n.stderr.String(), " is up") {
		select {
		case <-n.waited:
			t.Fatalf("ps_port node exited: %v\n%s", n.err, n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ps_port node not up after 15s:\n%s", n.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

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
func (n *psNode) rssKiB(t *testing.T) int {
	return rssOf(t, n.cmd.Process.Pid)
}

func rssOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// erlNode is an erl node running node_driver.
type erlNode struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *nodeBuf
	waited chan struct{}
}

// erlCommand is how startErl runs erl. The suite for another release
// (otproot_test.go) points it at that release's chroot while it runs node
// tests there.
var erlCommand = []string{"erl"}

// startErl starts "erl -name ... -setcookie cookie" running node_driver,
// talking to the ps_port node psName.
func startErl(t *testing.T, cookie, psName string) *erlNode {
	t.Helper()
	return startErlWith(t, erlCommand, cookie, psName)
}

// startErlWith is startErl with erl run as the command erl (e.g. inside a
// chroot: scripts/otp-root.sh sid run -- erl).
func startErlWith(t *testing.T, erl []string, cookie, psName string) *erlNode {
	t.Helper()
	dir := nodeDriverFor(t, erl)
	name := uniqueName("erl")
	args := append(append([]string(nil), erl[1:]...), "-name", name, "-setcookie", cookie, "-noshell", "-pa", dir,
		"-s", "node_driver", "main", "-extra", psName)
	cmd := exec.Command(erl[0], args...)
	e := &erlNode{t: t, name: name, cmd: cmd, lines: make(chan string, 1024), stderr: &nodeBuf{}, waited: make(chan struct{})}
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
	case <-time.After(20 * time.Second):
		t.Fatalf("erl not ready after 20s\n%s", e.stderr.String())
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

// descendantsOf lists pid and every process below it, from /proc.
func descendantsOf(pid int) []int {
	parent := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+2:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[pp] = append(parent[pp], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, parent[out[i]]...)
	}
	return out
}

// waitAllGone waits until none of pids is alive; it returns how long that took.
func waitAllGone(t *testing.T, pids []int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var left []int
		for _, p := range pids {
			if procAlive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("processes %v still alive after %v", left, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// killAll SIGKILLs pids that are still alive (test cleanup for failures).
func killAll(pids []int) {
	for _, p := range pids {
		if procAlive(p) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}
