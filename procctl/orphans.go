package procctl

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KillUnclaimed SIGKILLs the orphans reparented to this program (the
// subreaper) that no child claims, with their process groups, and returns
// their pids. An orphan is claimed when it is a Child itself or its
// environment carries the marker (MarkerEnv) of a running Child, or one
// for which claimed reports true (a Child that has exited and whose tree is
// not gone yet). A process that dropped the marker
// from its environment and left its parent's session would escape every
// Child's termination (and --max-children) when no cgroup holds it; this
// is the bound: it lives until the next call. Its own children become
// orphans when it dies, and the next call finds them. Without
// BecomeSubreaper, or where the kernel does not list a process's
// children, it does nothing.
func KillUnclaimed(claimed func(marker string) bool) []int {
	if !isSubreaper.Load() {
		return nil
	}
	killed := killUnclaimed(claimed)
	if len(killed) > 0 {
		reapOrphans()
	}
	return killed
}

// killUnclaimed does KillUnclaimed's work under the reaper's lock, as
// orphanRounds does: orphans are reaped only under it, so no pid signalled
// here can have been reused. The listing is orphanPids', O(orphans) however
// many children run, and the set of running markers is built only when an
// orphan with a marker is found.
func killUnclaimed(claimed func(marker string) bool) []int {
	registry.Lock()
	defer registry.Unlock()
	var running map[string]bool
	var killed []int
	for _, pid := range orphanPids() {
		if reapIfDead(pid) {
			continue
		}
		if m := orphanMarker(pid); m != "" {
			if running == nil {
				running = make(map[string]bool, len(registry.children))
				for _, c := range registry.children {
					running[c.marker] = true
				}
			}
			if running[m] || claimed(m) {
				continue
			}
		}
		unix.Kill(-pid, syscall.SIGKILL) // its group, when it leads one (setsid)
		unix.Kill(pid, syscall.SIGKILL)
		killed = append(killed, pid)
	}
	return killed
}

// orphanMarker is orphan pid's marker, read once and kept until the orphan
// is reaped (reapIfDead). A marker that could not be read (the orphan was
// in the middle of an exec for longer than markerOf waits) is not kept, so
// the next round reads it again. The caller holds registry's lock.
func orphanMarker(pid int) string {
	m, ok := registry.markers[pid]
	if !ok {
		var known bool
		if m, known = markerOf(pid); known {
			registry.markers[pid] = m
		}
	}
	return m
}

// execWait bounds how long markerOf waits for an exec to finish.
const execWait = 200 * time.Millisecond

// markerOf is MarkerEnv's value in pid's environment, or "". known is false
// when readEnviron could not tell it.
func markerOf(pid int) (marker string, known bool) {
	b, known := readEnviron(pid)
	return envMarker(b), known
}

// readEnviron reads pid's environment whole, as /proc/PID/environ shows it:
// NUL-terminated entries. It is nil, known, when pid is gone, a zombie or a
// kernel thread (whose environ file does not open: ESRCH).
// known is false when it could not be read whole for execWait: pid was
// exec'ing all along.
//
// While execve(2) runs, /proc/PID/environ reads empty (the new memory is in
// place, its environment not yet), or cut short: the file reads the memory
// of the image that was there when it was opened, a page per read(2), and
// once that image is gone a read gives end of file. The marker comes last
// (withMarker), so a daemon that a shell starts with "exec", read then,
// looked unmarked and its Child's termination passed it by. So a read counts
// only when it is as long as the environment's bounds in /proc/PID/stat,
// read before and after it, say, and they agree: no exec crossed it.
// Bounds that enclose nothing are taken for an empty environment when
// three reads show them.
func readEnviron(pid int) (environ []byte, known bool) {
	path := "/proc/" + strconv.Itoa(pid) + "/environ"
	deadline := time.Now().Add(execWait)
	pause := 50 * time.Microsecond
	for empty := 0; ; {
		before, ok := environBounds(pid)
		if !ok {
			return nil, true // a zombie, or gone
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, true
		}
		after, _ := environBounds(pid)
		if before == after && (before == envUnknown || before.end != 0 && uint64(len(b)) == before.end-before.start) {
			// Empty bounds are also what an exec shows while it copies
			// the environment's addresses; an empty environment shows
			// them each time.
			if len(b) > 0 || before == envUnknown || empty == 2 {
				return b, true
			}
			empty++
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

// envMarker is MarkerEnv's value in an environment as /proc/PID/environ
// shows it, or "".
func envMarker(environ []byte) string {
	prefix := []byte(MarkerEnv + "=")
	for _, e := range bytes.Split(environ, []byte{0}) {
		if v, ok := bytes.CutPrefix(e, prefix); ok {
			return string(v)
		}
	}
	return ""
}

// envBounds are the addresses of a process's environment: fields 50 and 51
// of /proc/PID/stat. end is 0 while an exec is under way. A new image's
// stack, where the environment is, is placed at random, so they change
// with each exec.
type envBounds struct{ start, end uint64 }

// envUnknown stands for bounds this kernel does not show (before 3.5).
var envUnknown = envBounds{1, 0}

// environBounds reads pid's envBounds; ok is false when pid is a zombie or
// gone.
func environBounds(pid int) (bounds envBounds, ok bool) {
	var buf [1024]byte // the whole line: the bounds are near its end
	st, ok := readStat(pid, buf[:])
	if !ok || st.zombie {
		return envBounds{}, false
	}
	return st.env, true
}
