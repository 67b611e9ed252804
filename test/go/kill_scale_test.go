package blackbox

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
	"golang.org/x/sys/unix"
)

// The shape of issue 11's kill scenario: a child with a grandchild in its
// process group. The child reports the grandchild's pid.
const sleeperScript = "sleep 600 & echo $!; wait"

// procHandle tells whether a process has exited without trusting a pid that
// may have been recycled (pid_max is 32768 on the CI machine).
type procHandle struct {
	pid, fd int
}

func openHandle(t *testing.T, pid int) procHandle {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return procHandle{pid, fd}
}

// exited reports whether the process has exited (a zombie counts).
func (h procHandle) exited() bool {
	fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 1
}

// waitAllExited waits until every process has exited, failing the test
// after limit plus testSlack, and returns how long it took from since.
func waitAllExited(t *testing.T, hs []procHandle, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for _, h := range hs {
		for !h.exited() {
			if time.Since(since) > limit+testSlack() {
				left := 0
				for _, h := range hs {
					if !h.exited() {
						left++
					}
				}
				t.Fatalf("%d of %d processes still running %v (+ slack) after the kill (pid %d, for one)", left, len(hs), limit, h.pid)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return time.Since(since)
}

// TestSharedThousandStoppedAtOnce: one ps_port --shared with 1 000 children,
// each with a grandchild, and 1 000 owners gone at once (the shim sends
// {stop, id} for each): every child and grandchild is gone and every owner
// gets its exit frame. The bound is generous; the figure is logged (and
// measured by bench/kill.sh).
func TestSharedThousandStoppedAtOnce(t *testing.T) {
	n := int64(scaleN(t, 1000))
	sp := startShared(t)
	var hs []procHandle
	for id := int64(1); id <= n; id++ {
		sp.open(id, "sh", []string{"-c", sleeperScript})
	}
	for id := int64(1); id <= n; id++ {
		hs = append(hs, openHandle(t, sp.started(id)))
		f := sp.next(id, 30*time.Second)
		if len(f) != 3 || f[0] != atom("stdout") {
			t.Fatalf("child %d: want its grandchild's pid, got %v", id, f)
		}
		out := f[2].([]byte)
		sp.sendTerm(etf.Tuple{atom("ack"), id, int64(len(out))})
		gpid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("child %d wrote %q", id, out)
		}
		hs = append(hs, openHandle(t, gpid))
	}
	t0 := time.Now()
	for id := int64(1); id <= n; id++ {
		sp.sendTerm(etf.Tuple{atom("stop"), id})
	}
	took := waitAllExited(t, hs, t0, time.Minute)
	for id := int64(1); id <= n; id++ {
		// SIGTERM, or SIGKILL when a loaded machine let delay_to_sigkill
		// pass before sh ran its SIGTERM.
		if o := sp.collect(id, false, time.Minute); !equal(o.exit, signal(15)) && !equal(o.exit, signal(9)) {
			t.Errorf("child %d: exit %v, want {signal, 15} (or 9)", id, o.exit)
		}
	}
	t.Logf("%d children and %d grandchildren gone %v after %d stops", n, n, took, n)
	if code := sp.waitExit(30 * time.Second); code != 0 {
		t.Errorf("ps_port --shared exit code %d", code)
	}
}

// TestIsolatedManyClosedAtOnce: one ps_port --packet per child (isolated:
// true), each child with a grandchild, every port closed at the same
// moment (owners killed at once). Each ps_port takes its own tree down
// without scanning /proc, so they do not slow each other down. 300 and not
// 1 000 ps_ports: each Go runtime takes several threads, and the CI
// machine's pid_max is 32768, shared with the suites running beside this
// one; bench/kill.sh runs 1 000.
func TestIsolatedManyClosedAtOnce(t *testing.T) {
	n := scaleN(t, 300)
	ports := make([]*portProc, n)
	var hs []procHandle
	for i := range ports {
		ports[i] = startPort(t, "--packet", "--", "sh", "-c", sleeperScript)
	}
	for _, p := range ports {
		hs = append(hs, openHandle(t, p.started()))
		hs = append(hs, openHandle(t, p.nextPid(30*time.Second)))
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stdin.Close()
		}()
	}
	wg.Wait()
	took := waitAllExited(t, hs, t0, time.Minute)
	t.Logf("%d children and %d grandchildren gone %v after their %d ports closed", n, n, took, n)
	for _, p := range ports {
		if code := p.exitCode(30 * time.Second); code != 0 {
			t.Errorf("ps_port exit code %d; stderr: %s", code, p.stderr)
		}
	}
}

// scaleN is PS_KILL_N when set (bench/kill.sh), else def.
func scaleN(t *testing.T, def int) int {
	if s := os.Getenv("PS_KILL_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PS_KILL_N=%q: want a positive number", s)
		}
		return n
	}
	return def
}
