package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

func TestParseSet(t *testing.T) {
	good := map[string]Set{
		"memory.limit_in_bytes=268435456": {Controller: "memory", Key: "memory.limit_in_bytes", Value: "268435456"},
		"cpu.cfs_quota_us=-1":             {Controller: "cpu", Key: "cpu.cfs_quota_us", Value: "-1"},
		"cpuset.cpus=0-1":                 {Controller: "cpuset", Key: "cpuset.cpus", Value: "0-1"},
		"memory.high=a=b":                 {Controller: "memory", Key: "memory.high", Value: "a=b"},
	}
	for in, want := range good {
		got, err := ParseSet(in)
		if err != nil || got != want {
			t.Errorf("ParseSet(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "memory.limit_in_bytes", "=1", "memory=1", ".x=1", "memory.=1",
		"memory/x.y=1", "../memory.x=1", "..=1", "memory.limit_in_bytes=",
		"memory.x=1\n2", "mem ory.x=1", "memory.x\x00=1",
	} {
		if s, err := ParseSet(in); err == nil {
			t.Errorf("ParseSet(%q) = %+v, want an error", in, s)
		} else if !strings.HasPrefix(err.Error(), "cgroup: setting") {
			t.Errorf("ParseSet(%q): error %q does not say what failed", in, err)
		}
	}
	if err := (Set{Controller: "cpu", Key: "memory.x", Value: "1"}).Validate(); err == nil {
		t.Error("a Set whose controller is not its key's prefix was accepted")
	}
}

func TestBadSpecs(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	for _, p := range []string{"../x", "/abs", "a//b", "", ".", "a/./b", "a/..", "a/", "x/../../y", "a\x00b", "a\nb"} {
		_, err := create(Spec{Controllers: []string{"memory"}, Path: p}, o)
		if err == nil || !strings.Contains(err.Error(), "group path") {
			t.Errorf("path %q: got %v, want a group path error", p, err)
		}
	}
	for _, c := range []string{"", "mem/ory", "..", "cpu,cpuacct"} {
		_, err := create(Spec{Controllers: []string{c}, Path: testBase + "/x"}, o)
		if err == nil || !strings.Contains(err.Error(), "not a controller name") {
			t.Errorf("controller %q: got %v", c, err)
		}
	}
	assertGone(t, groupDirs(o, []string{"memory"}, testBase+"/x"))
}

func TestCreateLimitsAndDelete(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	path := randomPath(t)
	ctrls := []string{"memory", "cpu"}
	var sets []Set
	for _, s := range []string{"memory.limit_in_bytes=67108864", "cpu.cfs_period_us=50000", "cpu.cfs_quota_us=25000"} {
		set, err := ParseSet(s)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, set)
	}
	g, err := Create(Spec{Controllers: ctrls, Path: path, Sets: sets})
	if err != nil {
		t.Fatal(err)
	}
	dirs := groupDirs(o, ctrls, path)
	assertExist(t, dirs)
	if g.Path() != path {
		t.Errorf("Path() = %q, want %q", g.Path(), path)
	}
	for file, want := range map[string]string{
		"memory/" + path + "/memory.limit_in_bytes": "67108864",
		"cpu/" + path + "/cpu.cfs_period_us":        "50000",
		"cpu/" + path + "/cpu.cfs_quota_us":         "25000",
	} {
		if got := readText(t, filepath.Join(o.v1Root, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if (cgroups.Mode() == cgroups.Hybrid) != (g.CgroupFD() >= 0) {
		t.Errorf("CgroupFD() = %d on mode %v", g.CgroupFD(), cgroups.Mode())
	}
	if n, err := g.OOMKills(); err != nil || n != 0 {
		t.Errorf("OOMKills() = %d, %v on a fresh group", n, err)
	}
	if procs, err := g.Procs(); err != nil || len(procs) != 0 {
		t.Errorf("Procs() = %v, %v on a fresh group", procs, err)
	}
	if err := g.Kill(); err != nil {
		t.Errorf("Kill on an empty group: %v", err)
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, dirs)
	if g.CgroupFD() != -1 {
		t.Errorf("CgroupFD() = %d after Delete", g.CgroupFD())
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := g.Procs(); !errors.Is(err, ErrDeleted) {
		t.Errorf("Procs after Delete: %v", err)
	}
	if _, err := g.EnterThread(); !errors.Is(err, ErrDeleted) {
		t.Errorf("EnterThread after Delete: %v", err)
	}
	if err := g.Kill(); err != nil {
		t.Errorf("Kill after Delete: %v", err)
	}
}

func TestCreateErrors(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	path := randomPath(t)
	t.Run("exists", func(t *testing.T) {
		spec := Spec{Controllers: []string{"memory", "cpu"}, Path: path}
		g, _ := mustCreate(t, spec, o)
		_, err := create(spec, o)
		if err == nil || !strings.Contains(err.Error(), "EEXIST") {
			t.Fatalf("creating an existing group: %v", err)
		}
		t.Log(err)
		assertExist(t, groupDirs(o, spec.Controllers, path))
		if err := g.Delete(); err != nil {
			t.Fatal(err)
		}
	})
	cases := []struct {
		spec Spec
		want []string // substrings of the error
	}{
		{Spec{Controllers: []string{"memory"}, Sets: []Set{{Controller: "memory", Key: "memory.no_such_key", Value: "1"}}},
			[]string{"memory.no_such_key=1", "memory:/" + path, "ENOENT"}},
		{Spec{Controllers: []string{"memory"}, Sets: []Set{{Controller: "memory", Key: "memory.limit_in_bytes", Value: "lots"}}},
			[]string{"memory.limit_in_bytes=lots", "EINVAL"}},
		{Spec{Controllers: []string{"memory", "cpu"}, Sets: []Set{{Controller: "memory", Key: "memory.limit_in_bytes", Value: "1048576"}, {Controller: "pids", Key: "pids.max", Value: "1"}}},
			[]string{"pids.max=1", "--controller pids"}},
		{Spec{Controllers: []string{"memory", "no_such_controller"}},
			[]string{`"no_such_controller" is not mounted`, "memory", "cpu"}},
	}
	for _, c := range cases {
		c.spec.Path = path
		g, err := create(c.spec, o)
		if err == nil {
			g.Delete()
			t.Errorf("create %+v succeeded, want an error", c.spec)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("create %+v: error %q lacks %q", c.spec, err, w)
			}
		}
		t.Logf("%v", err)
		if strings.Contains(err.Error(), "EINVAL") && !errors.Is(err, unix.EINVAL) {
			t.Errorf("%v does not unwrap to EINVAL", err)
		}
		assertGone(t, groupDirs(o, []string{"memory", "cpu"}, path))
	}
}

// TestEnterThreadForkKillDelete is the procctl path on this host: a child
// forked from a thread inside the group starts in every group.
func TestEnterThreadForkKillDelete(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	path := randomPath(t)
	ctrls := []string{"memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio", "devices", "name=systemd"}
	var present []string
	for _, c := range ctrls {
		if isFS(filepath.Join(o.v1Root, strings.TrimPrefix(c, "name=")), unix.CGROUP_SUPER_MAGIC) {
			present = append(present, c)
		}
	}
	g, pids := mustCreate(t, Spec{Controllers: present, Path: path,
		Sets: []Set{{Controller: "memory", Key: "memory.limit_in_bytes", Value: "67108864"}}}, o)
	pid := forkInGroup(t, g, pids, []string{"sleep", "30"})

	in := procGroups(t, pid)
	for _, c := range present {
		if got := in[c]; got != "/"+path {
			t.Errorf("child's %s group is %q, want /%s (all: %v)", c, got, path, in)
		}
	}
	if o.mode == cgroups.Hybrid {
		if got := in[""]; got != "/"+path {
			t.Errorf("child's unified group is %q, want /%s", got, path)
		}
	}
	procs, err := g.Procs()
	if err != nil || !reflect.DeepEqual(procs, []int{pid}) {
		t.Errorf("Procs() = %v, %v; want [%d]", procs, err, pid)
	}
	start := time.Now()
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Kill took %v", time.Since(start))
	if ws := reap(t, pid); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("child status %v, want killed by SIGKILL", ws)
	}
	start = time.Now()
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Delete took %v", time.Since(start))
	assertGone(t, groupDirs(o, present, path))
}

// TestKillManyChildren: a child that forked 50 more inside the group; Kill
// leaves none alive.
func TestKillManyChildren(t *testing.T) {
	requireHost(t)
	for _, mode := range []string{"host", "legacy+freezer", "legacy", "no-cgroup.kill"} {
		t.Run(mode, func(t *testing.T) {
			o := testOptions(t)
			ctrls := []string{"memory", "pids"}
			switch mode {
			case "legacy+freezer":
				o.mode, o.unifiedRoot = cgroups.Legacy, ""
				ctrls = append(ctrls, "freezer")
			case "legacy":
				o.mode, o.unifiedRoot = cgroups.Legacy, ""
			case "no-cgroup.kill":
				o.noKillFile = true
			}
			path := randomPath(t)
			g, pids := mustCreate(t, Spec{Controllers: ctrls, Path: path}, o)
			sh := forkInGroup(t, g, pids, []string{"sh", "-c", "for i in $(seq 50); do sleep 30 & done; wait"})
			procs := waitProcs(t, g, 51)
			ids := identities(procs)
			start := time.Now()
			if err := g.Kill(); err != nil {
				t.Fatal(err)
			}
			t.Logf("Kill of %d processes took %v", len(procs), time.Since(start))
			if left := alive(ids); len(left) > 0 {
				t.Errorf("alive after Kill: %v", left)
			}
			if p, err := g.Procs(); err != nil || len(p) != 0 {
				t.Errorf("Procs() after Kill = %v, %v", p, err)
			}
			reap(t, sh)
			start, retries := time.Now(), rmdirRetries.Load()
			if err := g.Delete(); err != nil {
				t.Fatal(err)
			}
			t.Logf("Delete took %v, %d EBUSY retries", time.Since(start), rmdirRetries.Load()-retries)
			assertGone(t, groupDirs(o, ctrls, path))
		})
	}
}

func TestOOMKill(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	path := randomPath(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	g, pids := mustCreate(t, Spec{Controllers: []string{"memory"}, Path: path,
		Sets: []Set{{Controller: "memory", Key: "memory.limit_in_bytes", Value: "33554432"}}}, o)
	pid := forkInGroup(t, g, pids, []string{self, "-test.run=^$"}, helperEnv+"=alloc")
	ws := reap(t, pid)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("allocating child: status %v (exit %d), want killed by SIGKILL", ws, ws.ExitStatus())
	}
	n, err := g.OOMKills()
	if err != nil || n < 1 {
		t.Errorf("OOMKills() = %d, %v; want >= 1", n, err)
	}
	t.Logf("child killed by %v, OOMKills() = %d", ws.Signal(), n)
}

// TestV2Paths runs the cgroup v2 code (clone into the group, cgroup.kill,
// cgroup.freeze, delete) against the controller-less unified tree.
func TestV2Paths(t *testing.T) {
	requireHost(t)
	unified := filepath.Join(sysfsCgroup, "unified")
	if !isFS(unified, unix.CGROUP2_SUPER_MAGIC) {
		t.Fatalf("no cgroup2 mount at %s to test the v2 paths with", unified)
	}
	for _, noKillFile := range []bool{false, true} {
		name := "cgroup.kill"
		if noKillFile {
			name = "freeze+signal"
		}
		t.Run(name, func(t *testing.T) {
			o := options{mode: cgroups.Unified, unifiedRoot: unified, killTimeout: 2 * time.Second,
				deleteTimeout: time.Second, noKillFile: noKillFile}
			path := randomPath(t)
			g, pids := mustCreate(t, Spec{Controllers: []string{"cpuacct", "freezer"}, Path: path,
				Sets: []Set{{Controller: "cgroup", Key: "cgroup.max.descendants", Value: "5"}}}, o)
			dir := filepath.Join(unified, path)
			if got := readText(t, filepath.Join(dir, "cgroup.max.descendants")); got != "5" {
				t.Errorf("cgroup.max.descendants = %q", got)
			}
			if g.CgroupFD() < 0 {
				t.Fatal("no CgroupFD on v2")
			}
			if g.freezer != filepath.Join(dir, "cgroup.freeze") {
				t.Errorf("freezer = %q", g.freezer)
			}
			if n, err := g.OOMKills(); err != nil || n != 0 {
				t.Errorf("OOMKills() = %d, %v without a memory controller", n, err)
			}
			pid := forkInGroup(t, g, pids, []string{"sh", "-c", "for i in $(seq 20); do sleep 30 & done; wait"})
			if got := procGroups(t, pid)[""]; got != "/"+path {
				t.Errorf("child's cgroup2 group is %q, want /%s", got, path)
			}
			if got := procGroups(t, os.Getpid())[""]; got == "/"+path {
				t.Error("the test process itself landed in the group")
			}
			procs := waitProcs(t, g, 21)
			ids := identities(procs)
			if err := g.Kill(); err != nil {
				t.Fatal(err)
			}
			if left := alive(ids); len(left) > 0 {
				t.Errorf("alive after Kill: %v", left)
			}
			if ws := reap(t, pid); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("child status %v, want killed by SIGKILL", ws)
			}
			if err := g.Delete(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, []string{dir})
		})
	}
	t.Run("errors", func(t *testing.T) {
		o := options{mode: cgroups.Unified, unifiedRoot: unified, killTimeout: time.Second, deleteTimeout: time.Second}
		path := randomPath(t)
		for _, c := range []struct {
			spec Spec
			want string
		}{
			{Spec{Controllers: []string{"memory"}}, `"memory" is not available`},
			{Spec{Controllers: []string{"name=systemd"}}, "named hierarchies"},
			{Spec{Sets: []Set{{Controller: "memory", Key: "memory.max", Value: "1"}}}, "--controller memory"},
			{Spec{Sets: []Set{{Controller: "cgroup", Key: "cgroup.no_such_file", Value: "1"}}}, "ENOENT"},
		} {
			c.spec.Path = path
			if _, err := create(c.spec, o); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("create %+v: %v, want an error with %q", c.spec, err, c.want)
			}
		}
		assertGone(t, []string{filepath.Join(unified, path)})
	})
}

func TestCreateErrorChain(t *testing.T) {
	err := createError("memory:/a/b", &os.PathError{Op: "mkdir", Path: "/x/a/b", Err: unix.ENOENT}, "memory", "a/b", false)
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, errMkdir) {
		t.Errorf("%v: lost its cause, so create would not retry", err)
	}
	err = createError("memory:/a/b", &os.PathError{Op: "mkdir", Path: "/x/a", Err: unix.EACCES}, "memory", "a/b", false)
	if want := "cgcreate -a $USER -t $USER -g memory:a"; !strings.Contains(err.Error(), want) {
		t.Errorf("%v: no hint %q", err, want)
	}
}

func TestTranslateV2(t *testing.T) {
	sets := func(kv ...string) []Set {
		var out []Set
		for _, s := range kv {
			set, err := ParseSet(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, set)
		}
		return out
	}
	for _, c := range []struct {
		in, want []Set
	}{
		{sets("memory.limit_in_bytes=67108864"), sets("memory.max=67108864")},
		{sets("memory.limit_in_bytes=-1"), sets("memory.max=max")},
		{sets("pids.max=10", "cpu.cfs_quota_us=25000", "memory.high=1000", "cpu.cfs_period_us=50000"),
			[]Set{{Controller: "pids", Key: "pids.max", Value: "10"}, {Controller: "cpu", Key: "cpu.max", Value: "25000 50000"}, {Controller: "memory", Key: "memory.high", Value: "1000"}}},
		{sets("cpu.cfs_quota_us=-1"), []Set{{Controller: "cpu", Key: "cpu.max", Value: "max 100000"}}},
		{sets("cpu.cfs_period_us=20000"), []Set{{Controller: "cpu", Key: "cpu.max", Value: "max 20000"}}},
		{sets("cpu.shares=1024"), sets("cpu.weight=100")},
		{sets("cpu.shares=2", "cpu.shares=262144"), sets("cpu.weight=1", "cpu.weight=10000")},
		{sets("io.max=8:0 rbps=1"), sets("io.max=8:0 rbps=1")},
	} {
		got, err := translateV2(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("translateV2(%v) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range [][]Set{sets("cpu.shares=0"), sets("cpu.shares=x"), sets("cpu.cfs_quota_us=0"), sets("cpu.cfs_period_us=-5")} {
		if got, err := translateV2(in); err == nil {
			t.Errorf("translateV2(%v) = %v, want an error", in, got)
		}
	}
	got, err := v2Controllers([]string{"cpu", "cpuacct", "memory", "blkio", "freezer", "devices", "cpu"})
	if err != nil || !slices.Equal(got, []string{"cpu", "memory", "io"}) {
		t.Errorf("v2Controllers = %v, %v", got, err)
	}
}

// TestKillSparesForkerThread: while the forker thread is inside the v1
// groups the process's pid shows in their cgroup.procs; Kill must neither
// signal nor freeze it, and still kill the child it just forked.
func TestKillSparesForkerThread(t *testing.T) {
	requireHost(t)
	for _, legacy := range []bool{false, true} {
		o := testOptions(t)
		if legacy {
			o.mode, o.unifiedRoot = cgroups.Legacy, ""
		}
		path := randomPath(t)
		ctrls := []string{"memory", "freezer"}
		g, pids := mustCreate(t, Spec{Controllers: ctrls, Path: path}, o)
		func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			leave, err := g.EnterThread()
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := leave(); err != nil {
					t.Fatal(err)
				}
				if err := leave(); err != nil {
					t.Errorf("second leave: %v", err)
				}
			}()
			procsFile := filepath.Join(o.v1Root, "freezer", path, "cgroup.procs")
			if got := readText(t, procsFile); got != itoa(os.Getpid()) {
				t.Errorf("cgroup.procs while inside = %q, want our pid %d", got, os.Getpid())
			}
			sys := &syscall.SysProcAttr{}
			if fd := g.CgroupFD(); fd >= 0 {
				sys.UseCgroupFD, sys.CgroupFD = true, fd
			}
			pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "30"}, &syscall.ProcAttr{Sys: sys})
			if err != nil {
				t.Fatal(err)
			}
			*pids = append(*pids, pid)
			done := make(chan error, 1)
			go func() { done <- g.Kill() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Kill while the forker thread is inside: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Kill hangs while the forker thread is inside")
			}
			if ws := reap(t, pid); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("child status %v, want killed by SIGKILL", ws)
			}
			if got := readText(t, procsFile); got != itoa(os.Getpid()) {
				t.Errorf("cgroup.procs after Kill = %q, want only our pid %d", got, os.Getpid())
			}
			if got := readText(t, filepath.Join(o.v1Root, "freezer", path, "freezer.state")); got != "THAWED" {
				t.Errorf("freezer.state = %q", got)
			}
		}()
		if err := g.Delete(); err != nil {
			t.Fatal(err)
		}
		assertGone(t, groupDirs(o, ctrls, path))
	}
}

// TestNamedHierarchyByDirName: "systemd" works like "name=systemd".
func TestNamedHierarchyByDirName(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	if !isFS(filepath.Join(o.v1Root, "systemd"), unix.CGROUP_SUPER_MAGIC) {
		t.Fatalf("no name=systemd hierarchy at %s/systemd on this host", o.v1Root)
	}
	path := randomPath(t)
	g, pids := mustCreate(t, Spec{Controllers: []string{"systemd"}, Path: path}, o)
	pid := forkInGroup(t, g, pids, []string{"sleep", "30"})
	if got := procGroups(t, pid)["name=systemd"]; got != "/"+path {
		t.Errorf("child's name=systemd group is %q, want /%s", got, path)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	reap(t, pid)
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, groupDirs(o, []string{"systemd"}, path))
}

// TestPidsMaxOne: the forker thread does not use up pids.max; a group
// limited to one process can still get its child.
func TestPidsMaxOne(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	path := randomPath(t)
	g, pids := mustCreate(t, Spec{Controllers: []string{"pids"}, Path: path,
		Sets: []Set{{Controller: "pids", Key: "pids.max", Value: "1"}}}, o)
	pid := forkInGroup(t, g, pids, []string{"sleep", "30"})
	if got := readText(t, filepath.Join(o.v1Root, "pids", path, "pids.max")); got != "1" {
		t.Errorf("pids.max after leave = %q, want 1", got)
	}
	if got := readText(t, filepath.Join(o.v1Root, "pids", path, "pids.current")); got != "1" {
		t.Errorf("pids.current = %q, want 1", got)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	reap(t, pid)
}

// TestDeleteBusy: Delete of a group with a live member fails, says why, and
// works after Kill.
func TestDeleteBusy(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	o.deleteTimeout = 50 * time.Millisecond
	path := randomPath(t)
	ctrls := []string{"memory", "cpu"}
	g, pids := mustCreate(t, Spec{Controllers: ctrls, Path: path}, o)
	pid := forkInGroup(t, g, pids, []string{"sleep", "30"})
	err := g.Delete()
	if err == nil || !strings.Contains(err.Error(), "call Kill first") || !strings.Contains(err.Error(), itoa(pid)) {
		t.Errorf("Delete with a live member: %v", err)
	}
	if g.CgroupFD() != -1 {
		t.Error("CgroupFD still open after a Delete attempt")
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	reap(t, pid)
	// The short timeout was for the refusal above; emptying the group after
	// a reap can take longer than 50 ms on a loaded machine.
	g.opts.deleteTimeout = 5 * time.Second
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, groupDirs(o, ctrls, path))
}

// TestSharedParent: the base directory Create made stays while another
// group uses it and goes with the last one.
func TestSharedParent(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	a, b := randomPath(t), randomPath(t)
	ctrls := []string{"memory"}
	ga, _ := mustCreate(t, Spec{Controllers: ctrls, Path: a}, o)
	gb, _ := mustCreate(t, Spec{Controllers: ctrls, Path: b}, o)
	if err := ga.Delete(); err != nil {
		t.Fatal(err)
	}
	assertExist(t, groupDirs(o, ctrls, b))
	// gb did not create the base, so it leaves it; a leftover base would be
	// reported by TestMain, so remove it the way ga would have.
	if err := gb.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, d := range groupDirs(o, ctrls, testBase) {
		if !preexisting[d] {
			os.Remove(d)
		}
	}
	assertGone(t, groupDirs(o, ctrls, b))
}

// TestConcurrentSiblings: groups under one base created and deleted at the
// same time (a Delete may remove the base another Create is about to use).
func TestConcurrentSiblings(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	ctrls := []string{"memory", "cpu"}
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		go func() {
			for i := 0; i < 25; i++ {
				g, err := create(Spec{Controllers: ctrls, Path: randomPath(t)}, o)
				if err != nil {
					errs <- err
					return
				}
				if err := g.Delete(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < 8; w++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// A base made by a group that was not the last to go stays behind.
	for _, d := range groupDirs(o, ctrls, testBase) {
		if preexisting[d] {
			continue
		}
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover base %s: %v", d, err)
		}
	}
}

// placement is procctl.Placement, restated so these tests do not depend on
// procctl building.
type placement interface {
	EnterThread() (leave func() error, err error)
	CgroupFD() int
	Kill() error
}

var _ placement = (*Group)(nil)

// Two groups under a user's base (made as cgcreate does), overlapping in
// time and deleted in creation order: the first made the base's mirror in
// the unified tree, the second deletes last; no mirror may stay behind.
func TestOverlappingGroupsLeaveNoUnifiedBase(t *testing.T) {
	requireHost(t)
	base := randomPath(t) + "_overlap"
	userBase := filepath.Join(sysfsCgroup, "memory", base)
	if err := os.MkdirAll(userBase, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Remove(userBase)
		os.Remove(filepath.Dir(userBase))
	}()
	a, err := Create(Spec{Controllers: []string{"memory"}, Path: base + "/a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Create(Spec{Controllers: []string{"memory"}, Path: base + "/b"})
	if err != nil {
		a.Delete()
		t.Fatal(err)
	}
	if err := a.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(userBase); err != nil {
		t.Errorf("the user's base %s was removed: %v", userBase, err)
	}
	if dir := filepath.Join(sysfsCgroup, "unified", base); exists(dir) {
		t.Errorf("%s left behind", dir)
		os.Remove(dir)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// The group of a ps_port that died (its lease unlocked, its directories
// still there) is reclaimed by the next Create of that path, which says so
// to its Spec.Logf, not to stderr: the caller decides where lines go.
func TestReclaimReportsToSpecLogf(t *testing.T) {
	requireHost(t)
	o := testOptions(t)
	path := randomPath(t)
	dead, err := create(Spec{Controllers: []string{"memory"}, Path: path}, o)
	if err != nil {
		t.Fatal(err)
	}
	if dead.lease == nil {
		t.Fatalf("no lease was taken for %s", path)
	}
	// What the kernel does to a killed ps_port's lock.
	dead.lease.f.Close()
	if dead.fd >= 0 {
		unix.Close(dead.fd)
	}
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	g, err := create(Spec{Controllers: []string{"memory"}, Path: path, Logf: logf}, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Delete(); err != nil {
		t.Error(err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "reclaimed cgroup ") || !strings.Contains(logged[0], path) {
		t.Errorf("Spec.Logf got %q, want one line saying the group at %s was reclaimed", logged, path)
	}
}
