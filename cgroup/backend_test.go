package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Each backend is tested on its own here, through the options (the
// hierarchy roots) a Group would hand it; Group's tests cover them
// together (hybrid is both).

// startIn starts sleep and moves it into the group directory dir by its
// procs file, as a member would be after its start. It returns the command,
// reaped at cleanup.
func startIn(t *testing.T, procsFile string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err := writeFile(procsFile, itoa(cmd.Process.Pid)); err != nil {
		t.Fatalf("moving pid %d into %s: %v", cmd.Process.Pid, procsFile, err)
	}
	return cmd
}

func members(t *testing.T, b backend) map[int]bool {
	t.Helper()
	m := map[int]bool{}
	if err := b.members(os.Getpid(), m); err != nil {
		t.Fatalf("members: %v", err)
	}
	return m
}

func TestV1Backend(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	v := &v1Group{path: randomPath(t)}
	if err := v.create(o.v1Root, []string{"memory", "pids"}); err != nil {
		t.Fatal(err)
	}
	defer v.remove(o.deleteTimeout)
	if err := v.writeSets([]Set{{Controller: "pids", Key: "pids.max", Value: "7"}}); err != nil {
		t.Fatal(err)
	}
	if err := v.writeSets([]Set{{Controller: "cpu", Key: "cpu.shares", Value: "2"}}); err == nil {
		t.Error("a setting of a controller not asked for was taken")
	}
	leaves, _ := v.dirs()
	if len(leaves) != 2 {
		t.Fatalf("dirs: leaves %v, want one per hierarchy (memory, pids)", leaves)
	}
	assertExist(t, leaves)
	if got := readText(t, filepath.Join(v.hierarchy("pids").dir, "pids.max")); got != "7" {
		t.Errorf("pids.max = %q, want 7", got)
	}

	cmd := startIn(t, filepath.Join(v.hierarchy("memory").dir, "cgroup.procs"))
	if m := members(t, v); len(m) != 1 || m[cmd.Process.Pid] {
		t.Errorf("members = %v, want only %d, outside cgroup2 (false)", m, cmd.Process.Pid)
	}
	if n, ok, err := v.oomKills(); !ok || err != nil || n != 0 {
		t.Errorf("oomKills = %d, %v, %v; want 0 from memory.oom_control", n, ok, err)
	}
	if ok, err := v.killFile(); ok || err != nil {
		t.Errorf("killFile = %v, %v; v1 has none", ok, err)
	}
	if busy, err := v.populated(); busy || err != nil {
		t.Errorf("populated = %v, %v; v1 does not say", busy, err)
	}
	if f := v.freezeFile(); f != "" {
		t.Errorf("freezeFile = %q without the freezer controller", f)
	}
	enterAndLeave(t, v)

	if err := v.remove(o.deleteTimeout); err == nil {
		t.Error("remove of a group with a member succeeded")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := v.remove(o.deleteTimeout); err != nil {
		t.Fatal(err)
	}
	assertGone(t, leaves)
	if err := v.remove(o.deleteTimeout); err != nil {
		t.Errorf("a second remove: %v", err)
	}
}

func TestV2Backend(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	if o.unifiedRoot == "" {
		t.Fatalf("this test needs a cgroup2 tree (hybrid or v2 host); this host's mode is %v", o.mode)
	}
	for _, noKillFile := range []bool{false, true} {
		o.noKillFile = noKillFile
		v := newV2Group(o, randomPath(t))
		if err := v.create(nil); err != nil {
			t.Fatal(err)
		}
		leaves, _ := v.dirs()
		if len(leaves) != 1 || leaves[0] != filepath.Join(o.unifiedRoot, v.path) {
			t.Errorf("dirs: leaves %v", leaves)
		}
		assertExist(t, leaves)

		cmd := startIn(t, filepath.Join(v.dir, "cgroup.procs"))
		if m := members(t, v); len(m) != 1 || !m[cmd.Process.Pid] {
			t.Errorf("members = %v, want only %d, in cgroup2 (true)", m, cmd.Process.Pid)
		}
		if busy, err := v.populated(); !busy || err != nil {
			t.Errorf("populated = %v, %v with a member", busy, err)
		}
		if _, ok, err := v.oomKills(); ok || err != nil {
			t.Errorf("oomKills: ok %v, err %v; the memory controller is not enabled", ok, err)
		}
		if f := v.freezeFile(); f != filepath.Join(v.dir, "cgroup.freeze") {
			t.Errorf("freezeFile = %q", f)
		}

		killed, err := v.killFile()
		if err != nil || killed == noKillFile {
			t.Fatalf("killFile = %v, %v with noKillFile %v", killed, err, noKillFile)
		}
		if !killed {
			cmd.Process.Kill()
		}
		ws := reap(t, cmd.Process.Pid)
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the member ended with %v, want SIGKILL", ws)
		}
		deadline := time.Now().Add(10 * time.Second)
		for busy, _ := v.populated(); busy && time.Now().Before(deadline); busy, _ = v.populated() {
			time.Sleep(time.Millisecond)
		}
		if m := members(t, v); len(m) != 0 {
			t.Errorf("members after the kill: %v", m)
		}
		if err := v.remove(o.deleteTimeout); err != nil {
			t.Fatal(err)
		}
		assertGone(t, leaves)
		if len(v.created) != 0 {
			t.Errorf("directories not removed: %v", v.created)
		}
	}
}

// enterAndLeave moves this OS thread into v's groups and back.
func enterAndLeave(t *testing.T, v *v1Group) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var mu sync.Mutex
	leave, err := v.enterThread(&mu)
	if err != nil {
		t.Fatalf("enterThread: %v", err)
	}
	inside := readText(t, "/proc/thread-self/cgroup")
	if err := leave(); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if !strings.Contains(inside, ":/"+v.path+"\n") {
		t.Errorf("the thread was not moved into %s:\n%s", v.path, inside)
	}
	if strings.Contains(readText(t, "/proc/thread-self/cgroup"), v.path) {
		t.Errorf("the thread is still in %s after leave", v.path)
	}
	if !mu.TryLock() {
		t.Error("leave did not release the thread lock")
	}
}
