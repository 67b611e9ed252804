package procctl

import (
	"bytes"
	"os"
	"strconv"
	"syscall"

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
// is reaped (reapIfDead). The caller holds registry's lock.
func orphanMarker(pid int) string {
	m, ok := registry.markers[pid]
	if !ok {
		m = markerOf(pid)
		registry.markers[pid] = m
	}
	return m
}

// markerOf is MarkerEnv's value in pid's environment, or "".
func markerOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	prefix := []byte(MarkerEnv + "=")
	for _, e := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(e, prefix); ok {
			return string(v)
		}
	}
	return ""
}
