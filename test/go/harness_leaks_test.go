package blackbox

// Leak counters, for the tests that must leave nothing behind (the
// reliability suite, reliability_*_test.go, above all): every process a
// test started, however it left its parent, and the cgroup directories a
// run may leave (file descriptors, threads and memory: harness_proc_test.go).
//
// Every process a test starts through ps_port carries PS_REL_TAG=<tag> in
// its environment (ps_port's own environment, or --env / the env option), so
// a scan of /proc/*/environ finds each one, including daemons that left the
// process group and session, whoever their parent is now.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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
	for _, p := range procScan() {
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
	for _, p := range procScan() {
		if (p.state == 'Z' || p.state == 'X') && want[p.ppid] {
			out = append(out, p.pid)
		}
	}
	return out
}

// relWaitUntagged waits until no live process but those in except carries
// tag and returns how long that took; it fails the test (listing the
// survivors, then killing them) after timeout + testSlack.
func relWaitUntagged(t *testing.T, tag string, timeout time.Duration, except ...int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		live := relTaggedExcept(tag, except...)
		if len(live) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout+testSlack() {
			t.Errorf("%d processes tagged %s still alive %v (+ slack) later: %s", len(live), tag, timeout, describe(live))
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

// relControllers are the hierarchies a group of the suite may appear in.
var relControllers = []string{"memory", "pids", "cpu", "unified"}

// needCgroups fails the test unless this host can run cgroup tests: they
// need root and the cgroup v1 controllers named (CI runs as root on a
// hybrid v1 host).
func needCgroups(t *testing.T, controllers ...string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("cgroup tests need root (CI runs as root); run the others with -skip Cgroup")
	}
	for _, ctl := range controllers {
		if _, err := os.Stat(groupDir(ctl, "cgroup.procs")); err != nil {
			t.Fatalf("no cgroup v1 %s controller at %s: %v", ctl, groupDir(ctl, ""), err)
		}
	}
}

// groupDir is the directory of the group path in a v1 hierarchy (or
// "unified").
func groupDir(controller, path string) string {
	return filepath.Join("/sys/fs/cgroup", controller, path)
}

// cgroupPath returns a unique group path, BASE/child, for a test that
// checks itself that both are gone (assertGroupGone).
func cgroupPath(t *testing.T) string {
	t.Helper()
	needCgroups(t, "memory")
	return "ps_port_bb_" + relTag()[3:] + "/child"
}

// assertGroupGone fails the test if the group path or its parent is left
// in any hierarchy, and removes what it finds.
func assertGroupGone(t *testing.T, path string) {
	t.Helper()
	for _, ctl := range relControllers {
		for _, p := range []string{path, filepath.Dir(path)} {
			if _, err := os.Stat(groupDir(ctl, p)); err == nil {
				t.Errorf("cgroup directory %s left behind", groupDir(ctl, p))
				os.Remove(groupDir(ctl, p))
			}
		}
	}
}

// relCgroupBase returns a fresh cgroup base path for a test; it fails the
// test when the host cannot run cgroup tests, and removes whatever is left
// under the base when the test ends (after the test looked at it).
func relCgroupBase(t *testing.T) string {
	t.Helper()
	needCgroups(t, "memory", "pids")
	base := "ps_port_rel_" + relTag()[3:]
	t.Cleanup(func() {
		for _, ctl := range relControllers {
			relRemoveTree(groupDir(ctl, base))
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
		root := groupDir(ctl, base)
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != root {
				left = append(left, p)
			}
			return nil
		})
	}
	return left
}

// relWaitGroupsGone waits until no directory is left below base; it fails
// the test after timeout + testSlack.
func relWaitGroupsGone(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout + testSlack())
	for {
		left := relGroupsLeft(base)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cgroup directories left %v (+ slack) after: %v", timeout, left)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// relGroupDirsUnder counts the group directories directly below base in a
// v1 hierarchy.
func relGroupDirsUnder(ctl, base string) int {
	ents, _ := os.ReadDir(groupDir(ctl, base))
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}

// relNode is the usual start of a reliability test: a fresh tag (whatever
// carries it is killed at cleanup), a ps_port node carrying it with flags
// (none: --allow-any; withBase adds --cgroup-base base, a fresh base
// removed at cleanup) and an erl node with reliability_driver loaded.
type relNode struct {
	tag, base string
	ps        *psNode
	e         *erlNode
}

func startRelNode(t *testing.T, withBase bool, flags ...string) relNode {
	t.Helper()
	r := relNode{tag: relTag()}
	t.Cleanup(func() { relKillTagged(r.tag) })
	if len(flags) == 0 {
		flags = []string{"--allow-any"}
	}
	if withBase {
		r.base = relCgroupBase(t)
		flags = append(append([]string(nil), flags...), "--cgroup-base", r.base)
	}
	r.ps = startNode(t, nodeOpts{tag: r.tag, flags: flags})
	r.e = startErlNode(t, r.ps.cookie, r.ps.name, erlOpts{reliability: true})
	return r
}
