package procctl

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"unsafe"

	"golang.org/x/sys/unix"
)

// Taking a tree down costs O(1) per child plus one listing of this
// program's own children per batch, never a scan of every process:
//
//   - The child leads its own session and process group (Setsid), so one
//     signal to the group reaches everything it started that did not leave
//     the group. The group is signalled through the child's pidfd
//     (pidfd_send_signal with PIDFD_SIGNAL_PROCESS_GROUP, Linux 6.9+), which
//     names the group by the child's struct pid, not its number: it stays
//     right after the child has been reaped and its pid recycled.
//   - A process that left the group (setsid, setpgid) is still a
//     descendant: once its parents are dead it is reparented to this
//     program, the subreaper, and shows up in its main thread's children
//     list (/proc/self/task/PID/children), which holds orphans only.
//     Each such orphan is claimed by the marker it inherited (MarkerEnv), or
//     with Spec.Sweep by the one child this program runs. Orphans are
//     listed, reaped and signalled in rounds (orphanRounds) that every
//     terminating child shares: 1 000 terminations at once cost a handful
//     of rounds, not 1 000 scans.
//   - The tree is gone when the group is empty and a round that started
//     after that finds no orphan of the child alive: every member was dead
//     by then, so every escapee below it had already been reparented here.

// phaseCount asks a round only to count a child's orphans.
const phaseCount = syscall.Signal(0)

// groupSignal sends sig to the child's process group (which it leads) and
// reports whether the group had any member (zombies included). sig 0 only
// asks.
func (c *Child) groupSignal(sig syscall.Signal) bool {
	if pgroupSignals() {
		rc, err := c.pidfd.SyscallConn()
		if err != nil {
			return false
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.PidfdSendSignal(int(fd), sig, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
		}); err != nil {
			return false // the pidfd is closed: the tree was finished with
		}
		return serr != unix.ESRCH
	}
	// Before Linux 6.9 the group can only be named by number. Until the
	// child is reaped its pid cannot be reused; after that the number
	// stays reserved only while the group has a member, so a signal sent
	// once it emptied could, after a full cycle of pids, reach a group of
	// the same number.
	return unix.Kill(-c.pid, sig) != unix.ESRCH
}

var (
	pgroupOnce sync.Once
	pgroupOK   bool
)

// pgroupSignals reports whether pidfd_send_signal takes
// PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9+), probed once on this program's
// own pidfd with signal 0.
func pgroupSignals() bool {
	pgroupOnce.Do(func() {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		err = unix.PidfdSendSignal(fd, 0, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
		pgroupOK = err == nil || err == unix.ESRCH || err == unix.EPERM
	})
	return pgroupOK
}

// treeGone reports whether nothing of the child's tree is left: its group
// is empty and a round that started after that found no orphan of it.
func (c *Child) treeGone(sig syscall.Signal) bool {
	empty := !c.groupSignal(sig)
	return rounds.run(c, sig) == 0 && empty
}

// startTermination SIGTERMs the group and the orphans of the child already
// reparented here, once.
func (c *Child) startTermination() {
	if c.termSent.CompareAndSwap(false, true) {
		c.groupSignal(syscall.SIGTERM)
		rounds.run(c, syscall.SIGTERM)
	}
}

// killTree SIGKILLs the child's containment, group and orphans until
// nothing of the tree is left. Orphans are found only after their parents
// have died, so it goes in rounds, a millisecond apart at first.
func (c *Child) killTree() {
	c.killPlacement()
	start := time.Now()
	for backoff := time.Millisecond; !c.treeGone(syscall.SIGKILL); backoff = min(2*backoff, 10*time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			c.logf("the tree of child %d survives SIGKILL for %v; giving up on it", c.pid, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(backoff)
	}
}

// stopLeftovers runs after the child itself has exited and been reaped:
// what it left behind gets SIGTERM (unless termination already sent it),
// then SIGKILL at the termination deadline.
func (c *Child) stopLeftovers() {
	defer rounds.forget(c)
	if c.treeGone(phaseCount) {
		// The usual case: one signal and one round.
		c.killPlacement()
		return
	}
	deadline := time.Now().Add(c.spec.DelayToSIGKILL)
	if d := c.killDeadline.Load(); d != 0 {
		deadline = time.Unix(0, d)
	}
	c.startTermination()
	for backoff := time.Millisecond; time.Now().Before(deadline); backoff = min(2*backoff, 10*time.Millisecond) {
		if c.treeGone(phaseCount) {
			c.killPlacement()
			return
		}
		time.Sleep(min(backoff, time.Until(deadline)))
	}
	c.killTree()
}

func (c *Child) killPlacement() {
	if c.spec.Placement != nil {
		if err := c.spec.Placement.Kill(); err != nil {
			c.logf("killing the cgroup of child %d: %v", c.pid, err)
		}
	}
}

var (
	subreaperOnce sync.Once
	isSubreaper   atomic.Bool
)

// BecomeSubreaper makes this program the reaper of every orphan its children
// leave (PR_SET_CHILD_SUBREAPER), so double-forked daemons stay findable and
// can be killed, and starts reaping those orphans when they exit. Call it
// once at startup in a program that will not start processes any other way
// (os/exec's Wait would race with the orphan reaper).
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	isSubreaper.Store(true)
	subreaperOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		go func() {
			for range ch {
				reapOrphans()
			}
		}()
	})
	return nil
}

// reapOrphans reaps zombie children of this program that no Child owns.
// Most SIGCHLDs are a Child's own exit, which its supervise reaps: when no
// child of this program is a zombie by now, there is nothing to reap and
// no need to list them (an orphan that dies later sends its own SIGCHLD).
func reapOrphans() {
	registry.Lock()
	defer registry.Unlock()
	if !zombieWaiting() {
		return
	}
	for _, pid := range orphanPids() {
		reapIfDead(pid)
	}
}

// zombieWaiting reports whether a child of this program has exited and
// not been reaped yet (or cannot tell), without reaping it.
func zombieWaiting() bool {
	_, waiting := firstZombie()
	return waiting
}

// firstZombie is a child of this program that has exited and not been
// reaped (pid 0 with waiting true: cannot tell).
func firstZombie() (pid int, waiting bool) {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	for err == unix.EINTR {
		err = unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	}
	switch {
	case err == unix.ECHILD:
		return 0, false // no children at all
	case err != nil:
		return 0, true
	case info == (unix.Siginfo{}):
		return 0, false // none has exited
	}
	return int(siginfoPid(&info)), true
}

// reapIfDead reaps orphan pid if it has exited and reports whether it did.
// The caller holds registry's lock: orphans are reaped only under it, so
// while it is held an orphan's pid cannot be reused.
func reapIfDead(pid int) bool {
	var ws syscall.WaitStatus
	if wpid, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); wpid != pid {
		return false
	}
	delete(registry.markers, pid)
	return true
}

// siginfoPid is si_pid of a waitid(2) result: the first field of the union
// after si_signo, si_errno and si_code, aligned as a pointer (x/sys/unix
// does not export it).
func siginfoPid(info *unix.Siginfo) int32 {
	const ptr = unsafe.Sizeof(uintptr(0))
	const off = (3*4 + ptr - 1) &^ (ptr - 1)
	return *(*int32)(unsafe.Add(unsafe.Pointer(info), off))
}
