package blackbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

func TestCgroupMemoryLimitApplied(t *testing.T) {
	t.Parallel()
	path := cgroupPath(t)
	p := startPort(t, "--packet", "-c", "memory", "-c", "cpu", "-g", path,
		"-s", "memory.limit_in_bytes=67108864", "-s", "cpu.cfs_period_us=100000", "-s", "cpu.cfs_quota_us=50000",
		"--", "sh", "-c", "cat /proc/self/cgroup; cat")
	pid := p.started()
	limit, err := os.ReadFile(filepath.Join(groupDir("memory", path), "memory.limit_in_bytes"))
	if err != nil || strings.TrimSpace(string(limit)) != "67108864" {
		t.Errorf("memory.limit_in_bytes = %q, %v", limit, err)
	}
	quota, _ := os.ReadFile(filepath.Join(groupDir("cpu", path), "cpu.cfs_quota_us"))
	if strings.TrimSpace(string(quota)) != "50000" {
		t.Errorf("cpu.cfs_quota_us = %q", quota)
	}
	procs, _ := os.ReadFile(filepath.Join(groupDir("memory", path), "cgroup.procs"))
	if !strings.Contains(string(procs), strconv.Itoa(pid)) {
		t.Errorf("child %d not in the memory group: cgroup.procs = %q", pid, procs)
	}
	p.send(atom("eof"))
	o := p.collect(true, 5*time.Second)
	// The child saw itself in the group from its first instruction on.
	if !bytes.Contains(o.stdout, []byte(":memory:/"+path+"\n")) {
		t.Errorf("child's /proc/self/cgroup does not show the group:\n%s", o.stdout)
	}
	if !equal(o.exit, status(0)) {
		t.Errorf("exit %v", o.exit)
	}
	assertGroupGone(t, path) // gone when the exit frame arrives, before the port closes
	p.exitCode(5 * time.Second)
}

func TestCgroupMemoryHogIsOOMKilledAndReported(t *testing.T) {
	t.Parallel()
	path := cgroupPath(t)
	p := startPort(t, "--packet", "-c", "memory", "-g", path, "-s", "memory.limit_in_bytes=33554432",
		"--", "sh", "-c", `x=$(head -c 200000000 /dev/zero | tr '\0' a); echo survived ${#x}`)
	p.started()
	o := p.collect(true, 30*time.Second)
	if !equal(o.exit, signal(9)) {
		t.Errorf("exit %v, want {signal, 9}; stdout %q", o.exit, o.stdout)
	}
	oom := false
	for _, f := range o.others {
		if tu, ok := etf.MatchTuple(f, "oom_killed", 2); ok && tu[1].(int64) >= 1 {
			oom = true
		}
	}
	if !oom {
		t.Errorf("no {oom_killed, N} frame before the exit; other frames: %v", o.others)
	}
	assertGroupGone(t, path) // gone when the exit frame arrives, before the port closes
	p.exitCode(5 * time.Second)
}

func TestCgroupForkALotAllDie(t *testing.T) {
	t.Parallel()
	path := cgroupPath(t)
	// 30 children that each fork a grandchild, all ignoring SIGTERM, some
	// escaping the session.
	script := `trap '' TERM; for i in $(seq 1 30); do (trap '' TERM; setsid sleep 1000 & sleep 1000) & done; echo forked; wait`
	p := startPort(t, "--packet", "-c", "pids", "-g", path, "--delay-to-sigkill", "100", "--", "sh", "-c", script)
	p.started()
	if f := p.next(10 * time.Second); !equal(f, etf.Tuple{atom("stdout"), []byte("forked\n")}) {
		t.Fatalf("want forked, got %v", f)
	}
	var members []int
	deadline := time.Now().Add(5*time.Second + testSlack())
	for len(members) < 61 && time.Now().Before(deadline) {
		procs, _ := os.ReadFile(filepath.Join(groupDir("pids", path), "cgroup.procs"))
		members = members[:0]
		for _, f := range strings.Fields(string(procs)) {
			n, _ := strconv.Atoi(f)
			members = append(members, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(members) < 61 {
		t.Fatalf("only %d processes in the group, want 61 (sh, 30 children, 30 grandchildren)", len(members))
	}
	p.send(atom("stop"))
	o := p.collect(true, 5*time.Second)
	if !equal(o.exit, signal(9)) {
		t.Errorf("exit %v, want SIGKILL after the delay", o.exit)
	}
	for _, pid := range members {
		if alive(pid) {
			t.Errorf("process %d of the group survived", pid)
		}
	}
	assertGroupGone(t, path) // gone when the exit frame arrives, before the port closes
	p.exitCode(5 * time.Second)
}

func TestCgroupPathEscapingIsRefused(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"../escape", "/abs", "a/../../b"} {
		p := startPort(t, "--packet", "-c", "memory", "-g", path, "--", "true")
		f := p.next(5 * time.Second)
		if tu, ok := etf.MatchTuple(f, "spawn_error", 3); !ok || tu[1] != etf.Atom("badcgroup") {
			t.Errorf("%q: want {spawn_error, badcgroup, _}, got %v", path, f)
		}
		if code := p.exitCode(5 * time.Second); code != 4 {
			t.Errorf("%q: exit code %d, want 4", path, code)
		}
	}
}

// A ps_port killed with SIGKILL cannot delete its cgroup; the next ps_port
// under the same base reclaims it: kills what is left and removes it. (Any
// ps_port that starts meanwhile, another test's, may be the one: it finds
// the dead ps_port's entry, see predecessor_test.go.)
func TestCgroupLeftByKilledPsPortIsReclaimed(t *testing.T) {
	t.Parallel()
	path := cgroupPath(t)
	base := filepath.Dir(path)
	script := `(setsid sh -c 'echo $$; exec sleep 1000' &); exec sleep 1000`
	p := startPort(t, "--packet", "-c", "memory", "-g", path, "--", "sh", "-c", script)
	child := p.started()
	daemon := p.nextPid(5 * time.Second)
	p.cmd.Process.Kill()
	waitGone(t, child, 2*time.Second) // parent-death signal
	q := startPort(t, "--packet", "-c", "memory", "-g", base+"/next", "--", "true")
	q.started()
	q.collect(true, 5*time.Second)
	q.exitCode(5 * time.Second)
	waitGone(t, daemon, time.Second)
	assertGroupGone(t, path)
}
