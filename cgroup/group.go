package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/protonstream/ps_port/internal/stderrlog"
	"golang.org/x/sys/unix"
)

// ErrDeleted is returned by methods that need the group's directories after
// Delete removed them.
var ErrDeleted = errors.New("cgroup: group already deleted")

// options says where the hierarchies are; tests inject their own to run the
// v2 and pure-v1 code paths on this hybrid host.
type options struct {
	mode        cgroups.CGMode
	v1Root      string // directory holding one mount per v1 hierarchy (Legacy, Hybrid)
	unifiedRoot string // cgroup2 mount (Hybrid: the controller-less one; Unified: the only one)

	killTimeout   time.Duration // Kill gives up after this long
	deleteTimeout time.Duration // Delete retries EBUSY this long per directory
	noKillFile    bool          // tests: behave as on a kernel without cgroup.kill
}

const sysfsCgroup = "/sys/fs/cgroup"

func hostOptions() (options, error) {
	o := options{
		mode:          cgroups.Mode(),
		killTimeout:   2 * time.Second,
		deleteTimeout: time.Second,
	}
	switch o.mode {
	case cgroups.Legacy:
		o.v1Root = sysfsCgroup
	case cgroups.Hybrid:
		o.v1Root = sysfsCgroup
		o.unifiedRoot = filepath.Join(sysfsCgroup, "unified")
	case cgroups.Unified:
		o.unifiedRoot = sysfsCgroup
	default:
		return o, fmt.Errorf("cgroup: no cgroup filesystem is mounted at %s; mount one (cgroup2, or one cgroup v1 mount per controller) or run without --group", sysfsCgroup)
	}
	return o, nil
}

// Group is a created control group: the same relative path in every v1
// hierarchy asked for and, on hybrid and v2 hosts, in the cgroup2 tree. It
// implements procctl.Placement. Its methods may be called from several
// goroutines, but Delete must come after the last fork that used
// EnterThread or CgroupFD.
//
// Each hierarchy is a backend with the same verbs (v1Group in v1.go,
// v2Group in v2.go); a hybrid group has both, and the verbs here apply
// them in turn.
type Group struct {
	path string
	opts options

	v1       *v1Group  // the v1 groups; nil on v2
	v2       *v2Group  // the cgroup2 group; nil on pure v1 or when unusable
	backends []backend // v1 then v2, those the group has

	freezer string // file to freeze the group with during Kill, "" for none

	// threadMu is held from EnterThread until leave, so Kill never freezes
	// the group while the forker thread is inside (frozen, it would hold
	// its runtime P and could stall the whole Go program).
	threadMu sync.Mutex

	mu      sync.Mutex
	fd      int // cgroup2 directory fd for CLONE_INTO_CGROUP, -1 for none
	deleted bool
	lease   *lease // nil when no lease could be taken
}

// backend is a group's directories in one kind of hierarchy.
type backend interface {
	// members adds every pid in the group and its subgroups but self to
	// into: true when it is in the cgroup2 group, false otherwise.
	members(self int, into map[int]bool) error
	// populated reports whether the group still has live tasks, where the
	// hierarchy says so (cgroup.events); false where it does not.
	populated() (bool, error)
	// killFile SIGKILLs every member at once (cgroup.kill) and reports
	// whether it could; false where there is no such file.
	killFile() (bool, error)
	// oomKills is the group's count of OOM kills; ok is false without a
	// memory controller in this hierarchy.
	oomKills() (n uint64, ok bool, err error)
	// freezeFile is the file that freezes the group, "" for none.
	freezeFile() string
	// dirs are the group's own directories and the parents it made
	// (outermost first), for its lease.
	dirs() (leaves, parents []string)
	// remove deletes the directories the group made; a leaf the kernel
	// refuses is a *dirError. What was removed is forgotten, so it may be
	// called again.
	remove(timeout time.Duration) error
}

// Create creates the group described by spec on the host's cgroup mode
// (cgroups.Mode()), writes spec.Sets in order, and returns it. On failure it
// removes whatever it had created.
func Create(spec Spec) (*Group, error) {
	o, err := hostOptions()
	if err != nil {
		return nil, err
	}
	return create(spec, o)
}

func create(spec Spec, o options) (*Group, error) {
	spec, err := normalized(spec)
	if err != nil {
		return nil, err
	}
	// Groups that ps_ports killed before they could delete them are
	// reclaimed by the next group under the same base (see reclaim.go).
	logf := stderrlog.Or(spec.Logf)
	reclaim(filepath.Join(leaseDir, leaseName(spec.Path)), o, logf)
	if base := path.Dir(spec.Path); base != "." {
		reclaimStale(base, o, logf)
	}
	// A concurrent Delete of a sibling group may remove a shared parent
	// between our mkdir of it (EEXIST) and of the next level (ENOENT).
	for attempt := 0; ; attempt++ {
		g, err := createOnce(spec, o)
		if err == nil || attempt == 8 || !(errors.Is(err, fs.ErrNotExist) && errors.Is(err, errMkdir)) {
			return g, err
		}
	}
}

// errMkdir marks errors from making directories (see create's retry).
var errMkdir = errors.New("mkdir")

func createOnce(spec Spec, o options) (g *Group, err error) {
	g = &Group{path: spec.Path, opts: o, fd: -1}
	defer func() {
		if err != nil {
			g.rollback()
			g = nil
		}
	}()
	if err := g.createBackends(spec, o); err != nil {
		return g, err
	}
	for _, b := range g.backends {
		if f := b.freezeFile(); f != "" {
			g.freezer = f
			break
		}
	}
	if g.v2 != nil {
		fd, err := unix.Open(g.v2.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return g, fmt.Errorf("cgroup: open %s: %s", g.v2.dir, errnoText(err))
		}
		g.fd = fd
	}
	leaves, parents := g.leaseDirs()
	if g.lease, err = takeLease(g.path, leaves, parents); err != nil {
		// Still contained and limited; only a ps_port killed before Delete
		// would leave the group behind for good.
		stderrlog.Or(spec.Logf)("%v; the group cannot be reclaimed if ps_port is killed", err)
		err = nil
	}
	return g, nil
}

// leaseDirs are the group's directories in every hierarchy (leaves) and
// the ones above them it made (parents, outermost first), for its lease.
func (g *Group) leaseDirs() (leaves, parents []string) {
	for _, b := range g.backends {
		l, p := b.dirs()
		leaves, parents = append(leaves, l...), append(parents, p...)
	}
	parents = slices.DeleteFunc(parents, func(d string) bool { return slices.Contains(leaves, d) })
	return leaves, parents
}

// createBackends makes the group in each hierarchy the host's mode has,
// with spec's limits.
func (g *Group) createBackends(spec Spec, o options) error {
	switch o.mode {
	case cgroups.Legacy, cgroups.Hybrid:
		if len(spec.Controllers) == 0 && o.mode == cgroups.Legacy {
			return fmt.Errorf("cgroup: group %s: this cgroup v1 host needs at least one controller (--controller); mounted: %s",
				spec.Path, strings.Join(mountedV1(o.v1Root), ", "))
		}
		g.v1 = &v1Group{path: spec.Path}
		g.backends = append(g.backends, g.v1)
		if err := g.v1.create(o.v1Root, spec.Controllers); err != nil {
			return err
		}
		if o.mode == cgroups.Hybrid {
			if err := g.createUnified(); err != nil {
				return err
			}
		}
		return g.v1.writeSets(spec.Sets)
	case cgroups.Unified:
		g.v2 = newV2Group(o, spec.Path)
		g.backends = append(g.backends, g.v2)
		return g.v2.createWithSets(spec)
	default:
		return fmt.Errorf("cgroup: unsupported cgroup mode %v", o.mode)
	}
}

// createUnified adds the group in the controller-less cgroup2 tree of a
// hybrid host, for CLONE_INTO_CGROUP and cgroup.kill. If that tree is not
// writable (read-only, or not ours to change) the group works as on pure v1.
func (g *Group) createUnified() error {
	v2 := newV2Group(g.opts, g.path)
	g.v2 = v2
	g.backends = append(g.backends, v2)
	err := v2.create(nil)
	if err != nil && isErrno(err, unix.EACCES, unix.EPERM, unix.EROFS) && len(g.v1.hs) > 0 {
		if v2.remove(g.opts.deleteTimeout) == nil {
			g.v2, g.backends = nil, g.backends[:len(g.backends)-1]
			return nil
		}
	}
	return err
}

// rollback undoes a failed Create.
func (g *Group) rollback() {
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = g.deleteLocked()
}

// Path returns the group's path relative to the hierarchy roots.
func (g *Group) Path() string { return g.path }

// CgroupFD returns an open directory fd of the group's cgroup2 directory for
// clone3(CLONE_INTO_CGROUP), or -1 on a pure v1 host. The fd belongs to the
// group and is closed by Delete.
func (g *Group) CgroupFD() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fd
}

func (g *Group) isDeleted() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.deleted
}

// members returns every pid in the group, in any hierarchy and any
// subgroup, except the calling process; true marks those in the cgroup2
// group.
func (g *Group) members() (pids map[int]bool, err error) {
	self := os.Getpid()
	pids = map[int]bool{}
	for _, b := range g.backends {
		if err := b.members(self, pids); err != nil {
			return nil, err
		}
	}
	return pids, nil
}

// Procs returns every process in the group, in any hierarchy (including
// subgroups its members made), sorted, except the calling process.
func (g *Group) Procs() ([]int, error) {
	if g.isDeleted() {
		return nil, ErrDeleted
	}
	m, err := g.members()
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// populated reports whether any hierarchy that knows still counts live
// tasks in the group.
func (g *Group) populated() (bool, error) {
	for _, b := range g.backends {
		if busy, err := b.populated(); err != nil || busy {
			return busy, err
		}
	}
	return false, nil
}

// killFiles SIGKILLs the members of every hierarchy with a kill file and
// reports whether any had one.
func (g *Group) killFiles() (bool, error) {
	any := false
	for _, b := range g.backends {
		ok, err := b.killFile()
		if err != nil {
			return any, err
		}
		any = any || ok
	}
	return any, nil
}

// Kill SIGKILLs every process in the group and returns when none is left,
// or an error after a bounded time (2 s) naming the survivors. It does not
// reap: the children's exit statuses stay with their parents. Killing a
// deleted group is a no-op.
func (g *Group) Kill() error {
	if g.isDeleted() {
		return nil
	}
	deadline := time.Now().Add(g.opts.killTimeout)
	useKillFile := true // until no hierarchy has one
	delay := 200 * time.Microsecond
	for {
		if useKillFile {
			var err error
			if useKillFile, err = g.killFiles(); err != nil {
				return err
			}
		}
		pids, err := g.members()
		if err == nil {
			var busy bool
			busy, err = g.populated()
			if err == nil && len(pids) == 0 && !busy {
				return nil
			}
		}
		if err != nil {
			// A subgroup a member made may vanish while it is listed.
			if !errors.Is(err, fs.ErrNotExist) || time.Now().After(deadline) {
				return err
			}
			backoff(&delay, 10*time.Millisecond)
			continue
		}
		if time.Now().After(deadline) {
			left := slices.Sorted(maps.Keys(pids))
			return fmt.Errorf("cgroup: kill %s: processes %v still in the group after %s (stuck in uninterruptible sleep? see /proc/PID/stack)",
				g.path, left, g.opts.killTimeout)
		}
		if useKillFile {
			// cgroup.kill covers the cgroup2 members; signal only those that
			// left the cgroup2 group but stayed in a v1 one.
			for pid, inV2 := range pids {
				if !inV2 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		} else if err := g.killRound(pids); err != nil {
			return err
		}
		backoff(&delay, 10*time.Millisecond)
	}
}

// killRound SIGKILLs the members once, inside a freeze when the group has a
// freezer and no forker thread is inside, so that no member can fork a new
// one between the listing and the signals.
func (g *Group) killRound(pids map[int]bool) error {
	if g.freezer == "" || !g.threadMu.TryLock() {
		for pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		return nil
	}
	defer g.threadMu.Unlock()
	frozen, thawed := "1", "0"
	if filepath.Base(g.freezer) == "freezer.state" {
		frozen, thawed = "FROZEN", "THAWED"
	}
	if err := writeFile(g.freezer, frozen); err != nil {
		return fmt.Errorf("cgroup: kill %s: freeze via %s: %s", g.path, g.freezer, errnoText(err))
	}
	g.waitFrozen(50 * time.Millisecond)
	if fresh, err := g.members(); err == nil {
		pids = fresh
	}
	for pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	if err := writeFile(g.freezer, thawed); err != nil {
		return fmt.Errorf("cgroup: kill %s: thaw via %s: %s; processes stay frozen until you write %s to it",
			g.path, g.freezer, errnoText(err), thawed)
	}
	return nil
}

// waitFrozen polls until the freeze has taken effect, or for at most limit.
func (g *Group) waitFrozen(limit time.Duration) {
	deadline := time.Now().Add(limit)
	delay := 100 * time.Microsecond
	for time.Now().Before(deadline) {
		if filepath.Base(g.freezer) == "freezer.state" {
			b, err := os.ReadFile(g.freezer)
			if err != nil || strings.TrimSpace(string(b)) == "FROZEN" {
				return
			}
		} else {
			n, ok, err := readKey(filepath.Join(filepath.Dir(g.freezer), "cgroup.events"), "frozen")
			if err != nil || ok && n == 1 {
				return
			}
		}
		backoff(&delay, 5*time.Millisecond)
	}
}

// OOMKills returns how many processes the kernel's OOM killer killed in the
// group: "oom_kill" of memory.oom_control on v1, of memory.events on v2. It
// is 0 when the group has no memory controller. Read it before Delete.
func (g *Group) OOMKills() (uint64, error) {
	if g.isDeleted() {
		return 0, ErrDeleted
	}
	for _, b := range g.backends {
		if n, ok, err := b.oomKills(); ok || err != nil {
			return n, err
		}
	}
	return 0, nil
}

// Delete removes every directory Create made (the v1 groups and the cgroup2
// group, with any subgroups the members made, and the parents Create had to
// make when no other group uses them). The kernel refuses for a moment after
// the last task died, so it retries briefly. Call Kill first. Delete is
// idempotent; it closes the CgroupFD.
func (g *Group) Delete() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.deleteLocked()
}

func (g *Group) deleteLocked() error {
	if g.deleted {
		return nil
	}
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
	var errs []error
	for _, b := range g.backends {
		if err := b.remove(g.opts.deleteTimeout); err != nil {
			var de *dirError
			if errors.As(err, &de) {
				err = g.deleteError(de.label, de.err)
			}
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	g.lease.release()
	g.lease = nil
	g.deleted = true
	return nil
}

// dirError is a group's own directory that could not be removed.
type dirError struct {
	label string
	err   error
}

func (e *dirError) Error() string {
	return fmt.Sprintf("cgroup: delete %s: %s", e.label, errnoText(e.err))
}
func (e *dirError) Unwrap() error { return e.err }

// removeDirs removes *dirs (outermost first, the group's own directory leaf
// last) from the inside out, and forgets each one removed. Only leaf is
// retried on EBUSY (for timeout); a parent that is busy belongs to other
// groups as well and stays, with its own parents.
func removeDirs(dirs *[]string, leaf, label string, timeout time.Duration) error {
	for len(*dirs) > 0 {
		last := len(*dirs) - 1
		dir := (*dirs)[last]
		if dir == leaf {
			err := removeSubgroups(dir, timeout)
			if err == nil {
				err = rmdirBusy(dir, timeout)
			}
			if err != nil {
				return &dirError{label: label, err: err}
			}
		} else if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
			if isErrno(err, unix.EBUSY, unix.ENOTEMPTY, unix.EEXIST) {
				*dirs = nil
				return nil
			}
			return fmt.Errorf("cgroup: delete parent %s of %s: %s", dir, label, errnoText(err))
		}
		*dirs = (*dirs)[:last]
	}
	return nil
}

// removeEmptyParents removes the empty ancestors of dir below root. On a
// hybrid host the controller-less cgroup2 tree only mirrors the v1 groups
// for tracking and cgroup.kill; its directories are ps_port's own, and the
// last group under a base removes the mirrored base even when another,
// overlapping group created it. A parent still in use stays (EBUSY), and a
// concurrent Create that loses its parent this way retries.
func removeEmptyParents(dir, root string) {
	for p := filepath.Dir(dir); strings.HasPrefix(p, root+"/"); p = filepath.Dir(p) {
		if err := unix.Rmdir(p); err != nil && err != unix.ENOENT {
			return
		}
	}
}

// readOOMKills reads the "oom_kill" line of file (memory.oom_control on v1,
// memory.events on v2) of the group label.
func readOOMKills(file, label string) (uint64, error) {
	n, ok, err := readKey(file, "oom_kill")
	if err != nil {
		return 0, fmt.Errorf("cgroup: read %s/%s: %s", label, filepath.Base(file), errnoText(err))
	}
	if !ok {
		return 0, fmt.Errorf("cgroup: %s has no oom_kill line; the kernel is too old (needs 4.13+) to count OOM kills", file)
	}
	return n, nil
}

func (g *Group) deleteError(label string, err error) error {
	msg := fmt.Sprintf("cgroup: delete %s: %s", label, errnoText(err))
	if isErrno(err, unix.EBUSY) {
		if pids, perr := g.members(); perr == nil && len(pids) > 0 {
			msg += fmt.Sprintf("; processes %v are still inside: call Kill first", slices.Sorted(maps.Keys(pids)))
		} else {
			msg += "; the kernel still holds exiting tasks, try again"
		}
	}
	return errors.New(msg)
}
