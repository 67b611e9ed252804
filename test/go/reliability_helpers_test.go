package blackbox

// Helpers of the reliability suite (reliability_*_test.go): finding every
// process a test started, however it left its parent, and counting what a
// run may leave behind (processes, zombies, file descriptors, cgroup
// directories, memory).
//
// Every process a test starts through ps_port carries PS_REL_TAG=<tag> in
// its environment (ps_port's own environment, or --env / the env option), so
// a scan of /proc/*/environ finds each one, including daemons that left the
// process group and session, whoever their parent is now.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const relTagEnv = "PS_REL_TAG"

// relTag is a fresh tag for PS_REL_TAG.
func relTag() string {
	var b [6]byte
	rand.Read(b[:])
	return "rel" + hex.EncodeToString(b[:])
}

// relProc is one line of /proc/PID/stat.
type relProc struct {
	pid, ppid int
	state     byte
	comm      string
}

// relScan lists every process visible in /proc.
func relScan() []relProc {
	ents, _ := os.ReadDir("/proc")
	out := make([]relProc, 0, len(ents))
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || end+2 >= len(s) {
			continue
		}
		f := strings.Fields(s[end+2:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, relProc{pid: pid, ppid: ppid, state: f[0][0], comm: s[open+1 : end]})
	}
	return out
}

// relHasEnv reports whether pid's environment (as it was at exec) holds kv.
func relHasEnv(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, e := range bytes.Split(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// relTagged lists the live (not zombie) processes carrying tag, and the
// zombies carrying it separately.
func relTagged(tag string) (live, zombies []int) {
	kv := relTagEnv + "=" + tag
	for _, p := range relScan() {
		if p.state == 'Z' || p.state == 'X' {
			// A zombie's environ is empty; count it when its parent is tagged
			// or is one of ours (checked by the caller through relZombiesOf).
			continue
		}
		if relHasEnv(p.pid, kv) {
			live = append(live, p.pid)
		}
	}
	sort.Ints(live)
	return live, nil
}

// relZombiesOf lists zombies whose parent is one of parents.
func relZombiesOf(parents ...int) []int {
	want := map[int]bool{}
	for _, p := range parents {
		want[p] = true
	}
	var out []int
	for _, p := range relScan() {
		if (p.state == 'Z' || p.state == 'X') && want[p.ppid] {
			out = append(out, p.pid)
		}
	}
	return out
}

// relWaitUntagged waits until no live process but those in except carries
// tag and returns how long that took; it fails the test (listing the
// survivors) after timeout.
func relWaitUntagged(t *testing.T, tag string, timeout time.Duration, except ...int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		live := relTaggedExcept(tag, except...)
		if len(live) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Errorf("%d processes tagged %s still alive %v later: %s", len(live), tag, timeout, relDescribe(live))
			relKill(live)
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// relTaggedExcept is relTagged without the pids in except.
func relTaggedExcept(tag string, except ...int) []int {
	live, _ := relTagged(tag)
	var out []int
	for _, p := range live {
		skip := false
		for _, x := range except {
			skip = skip || p == x
		}
		if !skip {
			out = append(out, p)
		}
	}
	return out
}

// relWaitAllGone is waitAllGone polling every 10 ms (cheaper while many
// processes are being killed on a 2-core machine; 10 ms resolution).
func relWaitAllGone(t *testing.T, pids []int, timeout time.Duration) time.Duration {
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
			t.Fatalf("still alive after %v: %s", timeout, relDescribe(left))
		}
		pids = left
		time.Sleep(10 * time.Millisecond)
	}
}

// relKillTagged SIGKILLs whatever still carries tag (cleanup after a failure).
func relKillTagged(tag string) {
	live, _ := relTagged(tag)
	relKill(live)
}

func relKill(pids []int) {
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// relDescribe names processes for a failure message: "pid(comm, ppid)".
func relDescribe(pids []int) string {
	byPid := map[int]relProc{}
	for _, p := range relScan() {
		byPid[p.pid] = p
	}
	var parts []string
	for _, pid := range pids {
		p := byPid[pid]
		parts = append(parts, fmt.Sprintf("%d(%s, ppid %d, %c)", pid, p.comm, p.ppid, p.state))
	}
	return strings.Join(parts, " ")
}

// relFDs counts the open file descriptors of pid.
func relFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of %d: %v", pid, err)
	}
	return len(ents)
}

// relThreads is the number of threads of pid.
func relThreads(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(ents)
}

// relControllers are the hierarchies a group of the suite may appear in.
var relControllers = []string{"memory", "pids", "cpu", "unified"}

// relCgroupBase returns a fresh cgroup base path for a test; it fails the
// test when the host cannot run cgroup tests, and removes whatever is left
// under the base when the test ends (after the test looked at it).
func relCgroupBase(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("cgroup tests need root (CI runs as root)")
	}
	for _, ctl := range []string{"memory", "pids"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctl, "cgroup.procs")); err != nil {
			t.Fatalf("no cgroup v1 %s controller: %v", ctl, err)
		}
	}
	base := "ps_port_rel_" + relTag()[3:]
	t.Cleanup(func() {
		for _, ctl := range relControllers {
			relRemoveTree(filepath.Join("/sys/fs/cgroup", ctl, base))
		}
	})
	return base
}

// relRemoveTree removes a cgroup directory and the groups below it.
func relRemoveTree(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			relRemoveTree(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

// relGroupsLeft lists the cgroup directories below base in every hierarchy
// (base itself is not counted: the test may have made it).
func relGroupsLeft(base string) []string {
	var left []string
	for _, ctl := range relControllers {
		root := filepath.Join("/sys/fs/cgroup", ctl, base)
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != root {
				left = append(left, p)
			}
			return nil
		})
	}
	return left
}

// relWaitGroupsGone waits until no directory is left below base.
func relWaitGroupsGone(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := relGroupsLeft(base)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cgroup directories left %v after: %v", timeout, left)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// relGroupDirsUnder counts the group directories directly below base in a
// v1 hierarchy.
func relGroupDirsUnder(ctl, base string) int {
	ents, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", ctl, base))
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}

// relPublicBinary copies ps_port where any user may run it (t.TempDir and
// the package's build directory are 0700) and returns its path.
func relPublicBinary(t *testing.T) string {
	t.Helper()
	relPublicOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ps_port_rel_pub")
		if err != nil {
			relPublicErr = err
			return
		}
		os.Chmod(dir, 0o755)
		// Both binaries: "ps_port node" execs ps_port_node beside it.
		for _, name := range []string{"ps_port", "ps_port_node"} {
			src, err := os.ReadFile(filepath.Join(filepath.Dir(psPortBinary(t)), name))
			if err != nil {
				relPublicErr = err
				return
			}
			if relPublicErr = os.WriteFile(filepath.Join(dir, name), src, 0o755); relPublicErr != nil {
				return
			}
		}
		relPublicPath = filepath.Join(dir, "ps_port")
	})
	if relPublicErr != nil {
		t.Fatal(relPublicErr)
	}
	return relPublicPath
}

var (
	relPublicOnce sync.Once
	relPublicPath string
	relPublicErr  error
)

// relNodeOpts says how relStartNode runs ps_port node.
type relNodeOpts struct {
	host   string   // the node's host part (default 127.0.0.1)
	netns  string   // run inside this network namespace (ip netns exec)
	flags  []string // extra flags (default --allow-any)
	env    []string // extra environment
	cookie string   // default: a random one
	asUser string   // run as this user (setpriv), e.g. "nobody"
	// cookieInEnv passes the cookie in PS_PORT_COOKIE (with no
	// ~/.erlang.cookie) instead of --cookie-file.
	cookieInEnv bool
}

// relStartNode starts ps_port node and waits until it is up. Its
// environment carries PS_REL_TAG=tag, so every child does.
func relStartNode(t *testing.T, tag string, o relNodeOpts) *psNode {
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
	bin := psPortBinary(t)
	cookieFile := writeCookie(t, o.cookie)
	var argv []string
	if o.asUser != "" {
		bin = relPublicBinary(t)
		dir, _ := os.MkdirTemp("", "ps_port_rel_cookie")
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o755)
		cookieFile = filepath.Join(dir, "cookie")
		os.WriteFile(cookieFile, []byte(o.cookie+"\n"), 0o600)
		out, err := exec.Command("chown", o.asUser, cookieFile).CombinedOutput()
		if err != nil {
			t.Fatalf("chown %s: %v %s", cookieFile, err, out)
		}
		u, err := user.Lookup(o.asUser)
		if err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "setpriv", "--reuid", u.Uid, "--regid", u.Gid, "--clear-groups", "--")
	}
	if o.netns != "" {
		argv = append([]string{"ip", "netns", "exec", o.netns}, argv...)
	}
	// epmd first, without the tag: ps_port would start it with its own
	// environment, and it would outlive the test as a tagged process.
	epmd := []string{"epmd", "-daemon"}
	if o.netns != "" {
		epmd = append([]string{"ip", "netns", "exec", o.netns}, epmd...)
	}
	if out, err := exec.Command(epmd[0], epmd[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", strings.Join(epmd, " "), err, out)
	}
	name := "ps_" + relTag()[3:] + "@" + o.host
	argv = append(argv, bin, "node", "--name", name)
	if !o.cookieInEnv {
		argv = append(argv, "--cookie-file", cookieFile)
	}
	argv = append(argv, o.flags...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), relTagEnv+"="+tag), o.env...)
	if o.cookieInEnv {
		cmd.Env = append(cmd.Env, "PS_PORT_COOKIE="+o.cookie, "HOME="+t.TempDir())
	}
	n := &psNode{t: t, name: name, cmd: cmd, stderr: &nodeBuf{}, waited: make(chan struct{})}
	cmd.Stderr = n.stderr
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

// pid is the OS pid of ps_port node itself (setpriv and ip netns exec
// exec it, so it is the pid started).
func (n *psNode) pid() int { return n.cmd.Process.Pid }

var (
	relDriverOnce sync.Once
	relDriverDir  string
	relDriverErr  error
)

// relDriver compiles reliability_driver.erl once.
func relDriver(t *testing.T) string {
	t.Helper()
	relDriverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reliability_driver")
		if err != nil {
			relDriverErr = err
			return
		}
		out, err := exec.Command("erlc", "-o", dir, "reliability_driver.erl").CombinedOutput()
		if err != nil {
			relDriverErr = fmt.Errorf("erlc reliability_driver.erl: %v\n%s", err, out)
			return
		}
		relDriverDir = dir
	})
	if relDriverErr != nil {
		t.Fatal(relDriverErr)
	}
	return relDriverDir
}

// relErlOpts says how relStartErl runs erl.
type relErlOpts struct {
	host     string // the node's host part (default 127.0.0.1)
	ticktime int    // net_ticktime in seconds (0: OTP's default)
	env      []string
}

// relStartErl starts an erl node running node_driver (with
// reliability_driver on its code path) that talks to psName. An empty
// cookie leaves it to $HOME/.erlang.cookie.
func relStartErl(t *testing.T, cookie, psName string, o relErlOpts) *erlNode {
	t.Helper()
	if o.host == "" {
		o.host = "127.0.0.1"
	}
	name := "erl_" + relTag()[3:] + "@" + o.host
	args := []string{"-name", name, "-noshell", "-pa", nodeDriver(t), "-pa", relDriver(t)}
	if cookie != "" { // else ~/.erlang.cookie (HOME in o.env)
		args = append(args, "-setcookie", cookie)
	}
	if o.ticktime > 0 {
		args = append(args, "-kernel", "net_ticktime", strconv.Itoa(o.ticktime))
	}
	args = append(args, "-s", "node_driver", "main", "-extra", psName)
	cmd := exec.Command("erl", args...)
	cmd.Env = append(os.Environ(), o.env...)
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
		t.Fatalf("starting erl: %v", err)
	}
	go relLines(out, e.lines)
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

func relLines(r io.Reader, lines chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		lines <- sc.Text()
	}
	close(lines)
}

// relInts parses an Erlang list of integers as printed by ~0tp.
func relInts(t *testing.T, s string) []int {
	t.Helper()
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		t.Fatalf("want a list of integers, got %s", s)
	}
	var out []int
	for _, f := range strings.Split(strings.Trim(s, "[]"), ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("want a list of integers, got %s", s)
		}
		out = append(out, n)
	}
	return out
}

// relRSS is pid's resident set size in KiB (0 when it is gone).
func relRSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

// relRSSParts is pid's anonymous and file-backed RSS, for the log.
func relRSSParts(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var parts []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "RssFile:") {
			parts = append(parts, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(parts, ", ")
}

// relSettledRSS samples pid's RSS for up to d and returns the lowest
// value seen: the Go runtime gives memory back to the OS gradually (its
// scavenger), so one sample right after a burst says little.
func relSettledRSS(pid int, d time.Duration) int {
	low := relRSS(pid)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		if r := relRSS(pid); r > 0 && r < low {
			low = r
		}
	}
	return low
}
