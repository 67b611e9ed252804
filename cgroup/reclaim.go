package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/internal/stderrlog"
	"golang.org/x/sys/unix"
)

// A group is leased while it exists: Create holds an exclusive flock on a
// lease file naming the group's directories, and Delete releases it. The
// kernel drops the lock when the holder dies, however it dies, so a lease
// that can be locked belongs to a ps_port that was killed (SIGKILL, OOM,
// power cut of the BEAM). The next Create under the same base reclaims it:
// kills what is still in the group and removes its directories.

// leaseDir holds the lease files; /run is a tmpfs that a reboot empties,
// together with the cgroups themselves.
var leaseDir = "/run/ps_port/cgroups"

// lease is a held lease file.
type lease struct {
	f    *os.File
	path string
}

func leaseName(groupPath string) string { return url.PathEscape(groupPath) }

// takeLease writes and locks the lease of a group: its own directories
// (leaves) and the parents it created, outermost first. The file is
// written under a temporary name and renamed once locked, so a reclaimer
// never sees an unlocked or half-written lease.
func takeLease(groupPath string, leaves, parents []string) (*lease, error) {
	if err := os.MkdirAll(leaseDir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: lease directory: %w", err)
	}
	tmp, err := os.CreateTemp(leaseDir, ".new-*")
	if err != nil {
		return nil, fmt.Errorf("cgroup: lease for %s: %w", groupPath, err)
	}
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("cgroup: lock lease for %s: %w", groupPath, err)
	}
	fmt.Fprintf(tmp, "pid %d\n", os.Getpid())
	for _, d := range parents {
		fmt.Fprintf(tmp, "parent %s\n", d)
	}
	for _, d := range leaves {
		fmt.Fprintf(tmp, "leaf %s\n", d)
	}
	path := filepath.Join(leaseDir, leaseName(groupPath))
	if err := os.Rename(tmp.Name(), path); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("cgroup: lease for %s: %w", groupPath, err)
	}
	return &lease{f: tmp, path: path}, nil
}

// release removes the lease: unlink first, then unlock, so a reclaimer that
// locks it afterwards sees an unlinked file and leaves it alone.
func (l *lease) release() {
	if l == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
}

// reclaimStale reclaims every abandoned lease of a group under base (the
// parent of a group being created) and reports how many it reclaimed.
func reclaimStale(base string, o options, logf func(string, ...any)) int {
	entries, err := os.ReadDir(leaseDir)
	if err != nil {
		return 0
	}
	prefix := leaseName(base + "/")
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if reclaim(filepath.Join(leaseDir, e.Name()), o, logf) {
			n++
		}
	}
	return n
}

// ReclaimAbandoned reclaims every group, under any base, whose ps_port died
// without deleting it (its lease is no longer locked): kills what is still
// in it and removes its directories. It returns how many it reclaimed, and
// reports each to logf (stderr, as ps_port's own line, when nil).
func ReclaimAbandoned(logf func(format string, args ...any)) int {
	logf = stderrlog.Or(logf)
	o, err := hostOptions()
	if err != nil {
		return 0
	}
	entries, err := os.ReadDir(leaseDir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && reclaim(filepath.Join(leaseDir, e.Name()), o, logf) {
			n++
		}
	}
	return n
}

// reclaim takes over the lease at path if its holder is gone, and then
// empties and removes the group's directories; logf hears of it.
func reclaim(path string, o options, logf func(string, ...any)) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false // held: its ps_port lives
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Nlink == 0 {
		return false // released by its owner while we looked
	}
	b, _ := os.ReadFile(path)
	var leaves, parents []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		kind, dir, _ := strings.Cut(sc.Text(), " ")
		if !strings.HasPrefix(dir, "/") {
			continue
		}
		switch kind {
		case "leaf":
			leaves = append(leaves, dir)
		case "parent":
			parents = append(parents, dir)
		}
	}
	// Only the leaves are emptied: a parent may hold live sibling groups.
	for _, dir := range leaves {
		killDir(dir, o.killTimeout)
	}
	for _, dir := range leaves {
		if removeSubgroups(dir, o.deleteTimeout) == nil {
			rmdirBusy(dir, o.deleteTimeout)
		}
		if o.unifiedRoot != "" && strings.HasPrefix(dir, o.unifiedRoot+"/") && o.v1Root != "" {
			removeEmptyParents(dir, o.unifiedRoot)
		}
	}
	for i := len(parents) - 1; i >= 0; i-- {
		unix.Rmdir(parents[i]) // stays when still in use
	}
	os.Remove(path)
	logf("reclaimed cgroup %s left by a ps_port that died", strings.Join(leaves, ", "))
	return true
}

// killDir SIGKILLs every process in dir and its subgroups until none is
// left or timeout passes.
func killDir(dir string, timeout time.Duration) {
	// cgroup2 kills the whole subtree at once; v1 has no such file.
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		pids := procsBelow(dir)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func procsBelow(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}
