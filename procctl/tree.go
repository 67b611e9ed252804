package procctl

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stdioSet holds both ends of the child's standard streams while it starts.
type stdioSet struct {
	child                    [3]*os.File // the child's ends
	stdinW, stdoutR, stderrR *os.File    // ps_port's ends
	owned                    []*os.File  // child ends to close after the fork
}

func (s *stdioSet) open(spec Spec) error {
	var err error
	devNull := func(flag int) (*os.File, error) {
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err == nil {
			s.owned = append(s.owned, f)
		}
		return f, err
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			// A large pipe means fewer wake-ups per MiB streamed.
			unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 1<<20)
		}
		return r, w, err
	}
	switch spec.Stdin {
	case Pipe:
		var r *os.File
		if r, s.stdinW, err = os.Pipe(); err != nil {
			return fmt.Errorf("stdin pipe: %w", err)
		}
		s.child[0] = r
		s.owned = append(s.owned, r)
	case Inherit:
		s.child[0] = os.Stdin
	default:
		if s.child[0], err = devNull(os.O_RDONLY); err != nil {
			return err
		}
	}
	switch spec.Stdout {
	case Pipe:
		var w *os.File
		if s.stdoutR, w, err = pipe(); err != nil {
			return fmt.Errorf("stdout pipe: %w", err)
		}
		s.child[1] = w
		s.owned = append(s.owned, w)
	case Inherit:
		s.child[1] = os.Stdout
	default:
		if s.child[1], err = devNull(os.O_WRONLY); err != nil {
			return err
		}
	}
	switch spec.Stderr {
	case Pipe:
		var w *os.File
		if s.stderrR, w, err = pipe(); err != nil {
			return fmt.Errorf("stderr pipe: %w", err)
		}
		s.child[2] = w
		s.owned = append(s.owned, w)
	case Inherit:
		s.child[2] = os.Stderr
	case ToStdout:
		s.child[2] = s.child[1]
	default:
		if s.child[2], err = devNull(os.O_WRONLY); err != nil {
			return err
		}
	}
	return nil
}

func (s *stdioSet) childFds() []uintptr {
	return []uintptr{s.child[0].Fd(), s.child[1].Fd(), s.child[2].Fd()}
}

func (s *stdioSet) closeChildEnds() {
	for _, f := range s.owned {
		f.Close()
	}
}

func (s *stdioSet) closeParentEnds() {
	for _, f := range []*os.File{s.stdinW, s.stdoutR, s.stderrR} {
		if f != nil {
			f.Close()
		}
	}
}

// members lists the live processes of the child's tree: its process group and
// session, its descendants, and with Spec.Sweep every other descendant of this
// program that belongs to no other live child.
func (c *Child) members() []int {
	procs := scanProcs()
	self := os.Getpid()
	set := make(map[int]bool)
	for _, p := range procs {
		if p.pid != self && (p.pgrp == c.pid || p.session == c.pid) {
			set[p.pid] = true
		}
	}
	for pid := range descendants(procs, c.pid) {
		set[pid] = true
	}
	if c.marker != "" {
		for pid := range c.markedOrphans(procs, self) {
			set[pid] = true
		}
	}
	if c.spec.Sweep {
		others := make(map[int]bool)
		registry.Lock()
		for pid := range registry.children {
			if pid != c.pid {
				others[pid] = true
				for d := range descendants(procs, pid) {
					others[d] = true
				}
			}
		}
		registry.Unlock()
		for pid := range descendants(procs, self) {
			if !others[pid] {
				set[pid] = true
			}
		}
	}
	zombie := make(map[int]bool)
	for _, p := range procs {
		if p.zombie {
			zombie[p.pid] = true
		}
	}
	out := make([]int, 0, len(set))
	for pid := range set {
		if !zombie[pid] {
			out = append(out, pid)
		}
	}
	return out
}

// signalAll sends sig to the child's group and to every member of its tree.
func (c *Child) signalAll(sig syscall.Signal) {
	members := c.members()
	unix.Kill(-c.pid, sig)
	for _, pid := range members {
		unix.Kill(pid, sig)
	}
}

// killAll SIGKILLs the tree until nothing of it is left. The tree is listed
// before anything is killed (a dying parent would hand its children to the
// subreaper, out of reach of the walk from the child), and listed again
// until a scan finds nothing, since a process can fork between a scan and
// its kill.
func (c *Child) killAll() {
	for i := 0; ; i++ {
		left := c.members()
		unix.Kill(-c.pid, syscall.SIGKILL)
		for _, pid := range left {
			unix.Kill(pid, syscall.SIGKILL)
		}
		c.killPlacement()
		if len(left) == 0 {
			break
		}
		reapOrphans()
		if i > 1000 {
			fmt.Fprintf(os.Stderr, "ps_port: %d processes of child %d survive SIGKILL: %v\n", len(left), c.pid, left)
			break
		}
		time.Sleep(time.Millisecond)
	}
	reapOrphans()
}

// stopLeftovers runs after the child itself has exited: what it left behind
// gets SIGTERM, then SIGKILL at the termination deadline.
func (c *Child) stopLeftovers() {
	if c.nothingLeft() {
		// The usual case, found without reading every process's stat.
		c.killPlacement()
		return
	}
	if left := c.members(); len(left) > 0 {
		deadline := time.Now().Add(c.spec.DelayToSIGKILL)
		if d := c.killDeadline.Load(); d != 0 {
			deadline = time.Unix(0, d)
		}
		c.signalAll(syscall.SIGTERM)
		for time.Now().Before(deadline) && len(c.members()) > 0 {
			reapOrphans()
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.killAll()
}

func (c *Child) killPlacement() {
	if c.spec.Placement != nil {
		if err := c.spec.Placement.Kill(); err != nil {
			fmt.Fprintf(os.Stderr, "ps_port: killing the cgroup of child %d: %v\n", c.pid, err)
		}
	}
}

// nothingLeft reports, for a child that has been reaped, whether its tree is
// certainly empty. With this program a subreaper, every process the child
// started (its group and session hold nothing else) is a descendant of this
// program, below the child's orphans that were reparented here. So when every
// direct child of this program is another live Child, nothing of this one is
// left. Anything else (an orphan, a zombie not yet reaped, no way to tell)
// answers false and the caller scans /proc.
func (c *Child) nothingLeft() bool {
	if !isSubreaper.Load() {
		return false
	}
	registry.Lock()
	defer registry.Unlock()
	kids, ok := ownChildren()
	if !ok {
		return false
	}
	for _, pid := range kids {
		if pid == c.pid || registry.children[pid] == nil {
			return false
		}
	}
	return true
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
func reapOrphans() {
	self := os.Getpid()
	registry.Lock()
	defer registry.Unlock()
	if kids, ok := ownChildren(); ok {
		for _, pid := range kids {
			if registry.children[pid] == nil {
				var ws syscall.WaitStatus
				syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			}
		}
		return
	}
	for _, p := range scanProcs() {
		if p.ppid == self && p.zombie && registry.children[p.pid] == nil {
			var ws syscall.WaitStatus
			syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
		}
	}
}
