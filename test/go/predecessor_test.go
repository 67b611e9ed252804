package blackbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// killPsPort SIGKILLs a ps_port and waits until its direct child is gone
// (parent-death signal). The grandchild is then an orphan of init that
// only the next ps_port can find, by its marker: any ps_port that starts
// from now on, this test's or another suite's, may be the one.
func killPsPort(t *testing.T, p *portProc, child procHandle) {
	t.Helper()
	p.cmd.Process.Kill()
	<-p.waited
	waitAllExited(t, []procHandle{child}, time.Now(), 5*time.Second)
}

// startNext starts a ps_port that runs `true` to the end: the successor
// that finds its predecessor dead.
func startNext(t *testing.T) {
	t.Helper()
	q := startPort(t, "--packet", "--", "true")
	q.started()
	q.collect(true, 10*time.Second)
	q.exitCode(10 * time.Second)
}

// A ps_port SIGKILLed with grandchildren running and no cgroup: its child
// dies with it (parent-death signal), the grandchild in the child's group
// and a double-forked daemon in a session of its own are killed by the
// next ps_port, which finds them by the dead ps_port's instance id.
func TestKilledPsPortsLeftoversKilledByTheNext(t *testing.T) {
	t.Parallel()
	script := `(setsid sh -c 'echo $$; exec sleep 600' &); sleep 600 & echo $!; wait`
	p := startPort(t, "--packet", "--", "sh", "-c", script)
	child := openHandle(t, p.started())
	var left []procHandle
	for len(left) < 2 {
		out := p.nextOutput(10 * time.Second)
		for _, s := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("child wrote %q", out)
			}
			left = append(left, openHandle(t, pid))
		}
	}
	killPsPort(t, p, child)
	t0 := time.Now()
	startNext(t)
	took := waitAllExited(t, left, t0, 5*time.Second)
	t.Logf("the grandchild and the daemon gone %v after the next ps_port started", took)
}

// The same with the child in a cgroup: the leftover group is removed too,
// whether the next to start is a ps_port or a ps_port_lean. ps_port_lean
// links no cgroup backend: once its own child is done, it has ps_port
// beside it ("ps_port reclaim-cgroups") remove the abandoned group.
func TestKilledPsPortsCgroupRemovedByTheNext(t *testing.T) {
	for _, next := range []string{"ps_port", "ps_port_lean"} {
		t.Run(next, func(t *testing.T) {
			t.Parallel()
			path := cgroupPath(t)
			p := startPort(t, "--packet", "-c", "memory", "-g", path, "--", "sh", "-c", sleeperScript)
			child := openHandle(t, p.started())
			gc := openHandle(t, p.nextPid(10*time.Second))
			killPsPort(t, p, child)
			t0 := time.Now()
			q := startPortOf(t, filepath.Join(filepath.Dir(psPort), next), "--packet", "--", "true")
			q.started()
			q.collect(true, 10*time.Second)
			if code := q.exitCode(10 * time.Second); code != 0 {
				t.Fatalf("%s exited with %d (stderr %q)", next, code, q.stderr.String())
			}
			took := waitAllExited(t, []procHandle{gc}, t0, 5*time.Second)
			for _, dir := range []string{groupDir("memory", path), groupDir("memory", filepath.Dir(path))} {
				for deadline := time.Now().Add(5*time.Second + testSlack()); ; time.Sleep(5 * time.Millisecond) {
					if _, err := os.Stat(dir); os.IsNotExist(err) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("cgroup %s left by the killed ps_port is still there (%s's stderr %q)", dir, next, q.stderr.String())
					}
				}
			}
			t.Logf("the grandchild gone %v after %s started; its cgroup removed", took, next)
		})
	}
}

// ps_port --shared SIGKILLed with children that have grandchildren: the
// next --shared (the application restarts it at once) kills them all.
func TestKilledSharedPsPortsLeftoversKilledByTheNext(t *testing.T) {
	t.Parallel()
	sp := startShared(t)
	var children, left []procHandle
	for id := int64(1); id <= 3; id++ {
		sp.open(id, "sh", []string{"-c", sleeperScript})
		children = append(children, openHandle(t, sp.started(id)))
		f := sp.next(id, 10*time.Second)
		if len(f) != 3 || f[0] != atom("stdout") {
			t.Fatalf("child %d: want its grandchild's pid, got %v", id, f)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(f[2].([]byte))))
		if err != nil {
			t.Fatalf("child %d wrote %q", id, f[2])
		}
		left = append(left, openHandle(t, pid))
	}
	sp.cmd.Process.Kill()
	<-sp.waited
	waitAllExited(t, children, time.Now(), 5*time.Second)
	t0 := time.Now()
	next := startShared(t)
	next.open(1, "true", nil)
	next.started(1)
	took := waitAllExited(t, left, t0, 5*time.Second)
	t.Logf("3 grandchildren gone %v after the next ps_port --shared started", took)
	next.collect(1, true, 10*time.Second)
	next.waitExit(10 * time.Second)
}

// A live ps_port's children are never touched by a successor sweeping a
// dead one's, and its entry stays.
func TestLivePsPortsChildrenUntouchedBySweep(t *testing.T) {
	t.Parallel()
	live := startPort(t, "--packet", "--", "sh", "-c", sleeperScript)
	liveChild := openHandle(t, live.started())
	liveGC := openHandle(t, live.nextPid(10*time.Second))

	dead := startPort(t, "--packet", "--", "sh", "-c", sleeperScript)
	deadChild := openHandle(t, dead.started())
	deadGC := openHandle(t, dead.nextPid(10*time.Second))
	killPsPort(t, dead, deadChild)
	startNext(t)
	waitAllExited(t, []procHandle{deadGC}, time.Now(), 5*time.Second)

	if liveChild.exited() || liveGC.exited() {
		t.Fatalf("the live ps_port's child or grandchild was killed by the sweep")
	}
	entries, _ := filepath.Glob("/run/ps_port/live/" + strconv.Itoa(live.cmd.Process.Pid) + ".*")
	if len(entries) != 1 {
		t.Errorf("the live ps_port's state entry: %v, want one", entries)
	}
	live.cmd.Process.Signal(syscall.SIGTERM)
	live.collect(true, 10*time.Second)
	waitAllExited(t, []procHandle{liveChild, liveGC}, time.Now(), 5*time.Second)
	if code := live.exitCode(10 * time.Second); code != 0 {
		t.Errorf("live ps_port exit code %d", code)
	}
	if entries, _ := filepath.Glob("/run/ps_port/live/" + strconv.Itoa(live.cmd.Process.Pid) + ".*"); len(entries) != 0 {
		t.Errorf("a ps_port that exited cleanly left its state entry: %v", entries)
	}
}
