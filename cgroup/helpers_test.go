package cgroup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

const testBase = "ps_port_test"

// helperEnv makes the test binary act as a child process instead of
// running tests (see TestMain).
const helperEnv = "PS_PORT_CGROUP_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
	case "alloc":
		allocAndTouch(200 << 20)
		os.Exit(0)
	default:
		os.Exit(3)
	}
	before := leftovers()
	for _, d := range before {
		preexisting[d] = true
	}
	code := m.Run()
	if after := leftovers(); len(after) > len(before) {
		fmt.Fprintf(os.Stderr, "FAIL: tests left cgroup directories behind: %v\n", after)
		code = 1
	}
	os.Exit(code)
}

// preexisting holds the testBase directories that existed before the
// tests ran (left by a crashed run); they are not expected to go away.
var preexisting = map[string]bool{}

// allocAndTouch allocates n bytes and writes to every page, keeping it all.
func allocAndTouch(n int) {
	var keep [][]byte
	for got := 0; got < n; got += 1 << 20 {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	fmt.Println(len(keep))
}

// leftovers lists testBase directories in every cgroup tree of the host.
func leftovers() []string {
	var out []string
	for _, root := range allTrees() {
		p := filepath.Join(root, testBase)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func allTrees() []string {
	var out []string
	entries, _ := os.ReadDir(sysfsCgroup)
	for _, e := range entries {
		p := filepath.Join(sysfsCgroup, e.Name())
		if isFS(p, unix.CGROUP_SUPER_MAGIC) || isFS(p, unix.CGROUP2_SUPER_MAGIC) {
			out = append(out, p)
		}
	}
	if isFS(sysfsCgroup, unix.CGROUP2_SUPER_MAGIC) {
		out = append(out, sysfsCgroup)
	}
	return out
}

// requireHost fails the test unless it runs as root on a host with the v1
// memory controller, which the tests need (they are not skipped).
func requireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("these tests create cgroups and must run as root (euid is %d): run `sudo go test -race ./cgroup/`", os.Geteuid())
	}
	if !isFS(filepath.Join(sysfsCgroup, "memory"), unix.CGROUP_SUPER_MAGIC) {
		t.Fatalf("these tests need the cgroup v1 memory controller mounted at %s/memory (mode %v); this host has: %v",
			sysfsCgroup, cgroups.Mode(), allTrees())
	}
}

func randomPath(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return testBase + "/" + hex.EncodeToString(b)
}

func testOptions(t *testing.T) options {
	t.Helper()
	o, err := hostOptions()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// mustCreate creates a group and registers a cleanup that kills it, reaps
// the given children and deletes it.
func mustCreate(t *testing.T, spec Spec, o options) (*Group, *[]int) {
	t.Helper()
	g, err := create(spec, o)
	if err != nil {
		t.Fatalf("create %+v: %v", spec, err)
	}
	var pids []int
	t.Cleanup(func() {
		if err := g.Kill(); err != nil {
			t.Errorf("cleanup kill: %v", err)
		}
		for _, p := range pids {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p, &ws, 0, nil)
		}
		if err := g.Delete(); err != nil {
			t.Errorf("cleanup delete: %v", err)
		}
	})
	return g, &pids
}

// groupDirs returns every directory the group lives in, computed from the
// host layout rather than from the Group.
func groupDirs(o options, controllers []string, path string) []string {
	var out []string
	for _, c := range controllers {
		out = append(out, filepath.Join(o.v1Root, strings.TrimPrefix(c, "name="), path))
	}
	if o.unifiedRoot != "" {
		out = append(out, filepath.Join(o.unifiedRoot, path))
	}
	return out
}

func assertExist(t *testing.T, dirs []string) {
	t.Helper()
	for _, d := range dirs {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			t.Errorf("group directory %s missing: %v", d, err)
		}
	}
}

// assertGone checks that the group's directories and their testBase parent
// are gone.
func assertGone(t *testing.T, dirs []string) {
	t.Helper()
	for _, d := range dirs {
		for _, p := range []string{d, filepath.Dir(d)} {
			if preexisting[p] {
				continue
			}
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still exists after Delete (err %v)", p, err)
			}
		}
	}
}

// forkInGroup starts argv the way procctl does: on a locked OS thread that
// enters the group, forks (cloning into the cgroup2 group when there is
// one) and leaves. It checks that the thread is back where it was.
func forkInGroup(t *testing.T, g *Group, pids *[]int, argv []string, env ...string) int {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if !filepath.IsAbs(argv[0]) {
		if argv[0], err = exec.LookPath(argv[0]); err != nil {
			t.Fatal(err)
		}
	}
	before := readText(t, "/proc/thread-self/cgroup")
	leave, err := g.EnterThread()
	if err != nil {
		t.Fatalf("EnterThread: %v", err)
	}
	sys := &syscall.SysProcAttr{Setpgid: true}
	if fd := g.CgroupFD(); fd >= 0 {
		sys.UseCgroupFD, sys.CgroupFD = true, fd
	}
	pid, ferr := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Env:   append(os.Environ(), env...),
		Files: []uintptr{devnull.Fd(), devnull.Fd(), os.Stderr.Fd()},
		Sys:   sys,
	})
	lerr := leave()
	after := readText(t, "/proc/thread-self/cgroup")
	if ferr != nil {
		t.Fatalf("fork %v: %v", argv, ferr)
	}
	*pids = append(*pids, pid)
	if lerr != nil {
		t.Fatalf("leave: %v", lerr)
	}
	if after != before {
		t.Fatalf("forker thread not back in its groups:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	return pid
}

func readText(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// procGroups parses /proc/PID/cgroup into controller-list → path ("" is
// the cgroup2 line).
func procGroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(readText(t, fmt.Sprintf("/proc/%d/cgroup", pid)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out
}

// waitProcs polls until the group has at least n processes.
func waitProcs(t *testing.T, g *Group, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs, err := g.Procs()
		if err != nil {
			t.Fatalf("Procs: %v", err)
		}
		if len(procs) >= n {
			return procs
		}
		if time.Now().After(deadline) {
			t.Fatalf("group has %d processes %v, want at least %d", len(procs), procs, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procIdentity is a pid with its start time, to tell a process from a
// later one that reuses its pid.
type procIdentity struct {
	pid   int
	start string
}

// identify returns the start time and state of pid, ok false when gone.
func identify(pid int) (start, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", "", false
	}
	return f[19], f[0], true // starttime is field 22, state field 3
}

func identities(pids []int) []procIdentity {
	var out []procIdentity
	for _, p := range pids {
		if start, _, ok := identify(p); ok {
			out = append(out, procIdentity{p, start})
		}
	}
	return out
}

// alive returns the processes of ids that still run (zombies count as
// dead: they have released everything but their exit status).
func alive(ids []procIdentity) []int {
	var out []int
	for _, id := range ids {
		start, state, ok := identify(id.pid)
		if ok && start == id.start && state != "Z" && state != "X" {
			out = append(out, id.pid)
		}
	}
	return out
}

func reap(t *testing.T, pid int) syscall.WaitStatus {
	t.Helper()
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("wait4 %d: %v", pid, err)
		}
		return ws
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
