package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// v1Hierarchy is the group's directory in one v1 hierarchy. Controllers
// mounted together (e.g. "cpu,cpuacct") share one.
type v1Hierarchy struct {
	names   []string // controllers asked for that live here, e.g. ["cpu", "cpuacct"]
	sub     cgroup1.Subsystem
	mount   string   // the hierarchy's root directory, symlinks resolved
	dir     string   // the group's directory: mount/path
	created []string // directories Create made, outermost first
}

func (h *v1Hierarchy) label(path string) string {
	return strings.Join(h.names, ",") + ":/" + path
}

// has reports whether controller c lives in this hierarchy.
func (h *v1Hierarchy) has(c string) bool { return asked(h.names, c) }

// v1Group is a group's backend on cgroup v1: its directory in the
// hierarchy of every controller asked for.
type v1Group struct {
	path string
	hs   []*v1Hierarchy // one per distinct v1 hierarchy
	cg   cgroup1.Cgroup // the library's handle over hs; nil when hs is empty
}

// hierarchy returns the v1 hierarchy of controller c, or nil.
func (v *v1Group) hierarchy(c string) *v1Hierarchy {
	for _, h := range v.hs {
		if h.has(c) {
			return h
		}
	}
	return nil
}

func (v *v1Group) members(self int, into map[int]bool) error {
	for _, h := range v.hs {
		procs, err := v.cg.Processes(h.sub.Name(), true)
		if err != nil {
			return withCause(err, "cgroup: list processes of %s: %s", h.label(v.path), errnoText(err))
		}
		for _, p := range procs {
			if _, seen := into[p.Pid]; !seen && p.Pid != self {
				into[p.Pid] = false
			}
		}
	}
	return nil
}

// populated: v1 has no cgroup.events; members tells.
func (v *v1Group) populated() (bool, error) { return false, nil }

// killFile: v1 has no cgroup.kill.
func (v *v1Group) killFile() (bool, error) { return false, nil }

func (v *v1Group) oomKills() (uint64, bool, error) {
	h := v.hierarchy("memory")
	if h == nil {
		return 0, false, nil
	}
	n, err := readOOMKills(filepath.Join(h.dir, "memory.oom_control"), h.label(v.path))
	return n, true, err
}

func (v *v1Group) freezeFile() string {
	if h := v.hierarchy("freezer"); h != nil {
		return filepath.Join(h.dir, "freezer.state")
	}
	return ""
}

func (v *v1Group) dirs() (leaves, parents []string) {
	for _, h := range v.hs {
		leaves = append(leaves, h.dir)
		parents = append(parents, h.created...)
	}
	return leaves, parents
}

func (v *v1Group) remove(timeout time.Duration) error {
	var errs []error
	for _, h := range v.hs {
		if err := removeDirs(&h.created, h.dir, h.label(v.path), timeout); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isFS reports whether dir is the root or a directory of a file system
// with the given magic number.
func isFS(dir string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && int64(st.Type) == magic
}

// mountedV1 lists the v1 hierarchies mounted below root.
func mountedV1(root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return []string{"none (" + errnoText(err) + ")"}
	}
	var out []string
	for _, e := range entries {
		if isFS(filepath.Join(root, e.Name()), unix.CGROUP_SUPER_MAGIC) {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// v1Subsystem returns containerd's subsystem for controller name under root;
// unknown names and "name=X" hierarchies get a plain named one.
func v1Subsystem(root, name string) (cgroup1.Subsystem, error) {
	switch cgroup1.Name(name) {
	case cgroup1.Memory:
		return cgroup1.NewMemory(root), nil
	case cgroup1.Cpu:
		return cgroup1.NewCpu(root), nil
	case cgroup1.Cpuacct:
		return cgroup1.NewCpuacct(root), nil
	case cgroup1.Cpuset:
		return cgroup1.NewCpuset(root), nil // copies cpuset.cpus/mems from the parent
	case cgroup1.Pids:
		return cgroup1.NewPids(root), nil
	case cgroup1.Freezer:
		return cgroup1.NewFreezer(root), nil
	case cgroup1.Blkio:
		return cgroup1.NewBlkio(root), nil
	case cgroup1.Devices:
		return cgroup1.NewDevices(root), nil
	case cgroup1.Hugetlb:
		return cgroup1.NewHugetlb(root)
	case cgroup1.NetCLS:
		return cgroup1.NewNetCls(root), nil
	case cgroup1.NetPrio:
		return cgroup1.NewNetPrio(root), nil
	case cgroup1.PerfEvent:
		return cgroup1.NewPerfEvent(root), nil
	case cgroup1.Rdma:
		return cgroup1.NewRdma(root), nil
	}
	return cgroup1.NewNamed(root, cgroup1.Name(strings.TrimPrefix(name, "name="))), nil
}

// create makes the group in the v1 hierarchy (mounted below root) of every
// controller asked for.
func (v *v1Group) create(root string, controllers []string) error {
	var subs []cgroup1.Subsystem
	for _, name := range controllers {
		mount := filepath.Join(root, strings.TrimPrefix(name, "name="))
		if !isFS(mount, unix.CGROUP_SUPER_MAGIC) {
			return fmt.Errorf("cgroup: controller %q is not mounted at %s; mounted v1 controllers: %s",
				name, mount, strings.Join(mountedV1(root), ", "))
		}
		real, err := filepath.EvalSymlinks(mount)
		if err != nil {
			return fmt.Errorf("cgroup: controller %q: %s", name, errnoText(err))
		}
		if i := slices.IndexFunc(v.hs, func(h *v1Hierarchy) bool { return h.mount == real }); i >= 0 {
			v.hs[i].names = append(v.hs[i].names, name)
			continue
		}
		sub, err := v1Subsystem(root, name)
		if err != nil {
			return fmt.Errorf("cgroup: controller %q: %s", name, errnoText(err))
		}
		subs = append(subs, sub)
		v.hs = append(v.hs, &v1Hierarchy{
			names: []string{name},
			sub:   sub,
			mount: real,
			dir:   filepath.Join(real, v.path),
		})
	}
	for _, h := range v.hs {
		if err := makeGroupDir(h.mount, v.path, &h.created); err != nil {
			return createError(h.label(v.path), err, h.names[0], v.path, false)
		}
	}
	if len(subs) == 0 {
		return nil
	}
	// Empty resources: settings are written as plain files afterwards
	// (cgroup1.New panics on nil).
	cg, err := cgroup1.New(cgroup1.StaticPath("/"+v.path), &specs.LinuxResources{},
		cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil }))
	if err != nil {
		return createError(strings.Join(controllers, ",")+":/"+v.path, err, controllers[0], v.path, false)
	}
	v.cg = cg
	return nil
}

// createError explains a failure to create the group directory label.
func createError(label string, err error, controller, path string, v2 bool) error {
	base, _, _ := strings.Cut(path, "/")
	hint := ""
	switch {
	case isErrno(err, unix.EEXIST):
		var pe *fs.PathError
		dir := label
		if errors.As(err, &pe) {
			dir = pe.Path
		}
		hint = fmt.Sprintf("; the group already exists and another run may be using it: pick another group path, or kill its processes and rmdir %s", dir)
	case isErrno(err, unix.EACCES, unix.EPERM) && v2:
		hint = fmt.Sprintf("; delegate the base to your user (chown -R $USER %s/%s) or run as root", sysfsCgroup, base)
	case isErrno(err, unix.EACCES, unix.EPERM):
		hint = fmt.Sprintf("; create the base with `cgcreate -a $USER -t $USER -g %s:%s` or run as root", controller, base)
	case isErrno(err, unix.EROFS):
		hint = "; the cgroup file system is mounted read-only (in a container?): mount it read-write or run without --group"
	}
	return &causeError{
		msg:    fmt.Sprintf("cgroup: create %s: %s%s", label, errDetail(err), hint),
		causes: []error{err, errMkdir},
	}
}

// writeSets writes each setting into its controller's group, in order.
func (v *v1Group) writeSets(sets []Set) error {
	for _, s := range sets {
		h := v.hierarchy(s.Controller)
		if h == nil {
			return fmt.Errorf("cgroup: setting %s: controller %s was not asked for; add --controller %s",
				s, s.Controller, s.Controller)
		}
		if err := writeSet(filepath.Join(h.dir, s.Key), s, h.label(v.path)); err != nil {
			return err
		}
	}
	return nil
}

// writeSet writes one setting and explains a failure.
func writeSet(file string, s Set, label string) error {
	err := writeFile(file, s.Value)
	if err == nil {
		return nil
	}
	hint := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint = fmt.Sprintf("; %s has no file %s (list the valid keys with ls %s)", label, s.Key, filepath.Dir(file))
	case isErrno(err, unix.EINVAL, unix.ERANGE):
		hint = "; the kernel rejected the value"
	case isErrno(err, unix.EBUSY):
		hint = "; the value conflicts with the group's current state or its parent's"
	case isErrno(err, unix.EACCES, unix.EPERM):
		hint = "; run as root or own the group's files"
	}
	return withCause(err, "cgroup: set %s=%s in %s: %s%s", s.Key, s.Value, label, errnoText(err), hint)
}

// threadGroups parses /proc/thread-self/cgroup: for each v1 hierarchy line
// its controller list and the calling thread's path in it.
func threadGroups() ([][2]string, error) {
	f, err := os.Open("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && parts[1] != "" {
			out = append(out, [2]string{parts[1], parts[2]})
		}
	}
	return out, sc.Err()
}

// origin returns the directory of the calling thread's current group in h.
func (h *v1Hierarchy) origin(lines [][2]string) (string, error) {
	for _, l := range lines {
		for _, c := range strings.Split(l[0], ",") {
			if h.has(c) {
				dir := filepath.Join(h.mount, l[1])
				if _, err := os.Stat(filepath.Join(dir, "tasks")); err != nil {
					return "", fmt.Errorf("cgroup: the calling thread's %s group %s is not reachable at %s (%s); is the hierarchy mounted from a different root?",
						c, l[1], dir, errnoText(err))
				}
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("cgroup: /proc/thread-self/cgroup has no line for %s", strings.Join(h.names, ","))
}

// EnterThread moves the calling OS thread into the group's v1 groups, so a
// child it forks starts inside them, and returns leave, which moves the
// thread back where it came from. The caller must hold runtime.LockOSThread
// until leave has returned, and must call leave (exactly once; more calls
// are no-ops). On v2 (and for the cgroup2 part of a hybrid group) there is
// nothing to enter: use CgroupFD.
func (g *Group) EnterThread() (leave func() error, err error) {
	if g.isDeleted() {
		return nil, ErrDeleted
	}
	if g.v1 == nil || len(g.v1.hs) == 0 {
		return func() error { return nil }, nil
	}
	return g.v1.enterThread(&g.threadMu)
}

// enterThread is EnterThread for the v1 groups; threadMu is held from the
// move in until leave.
func (v *v1Group) enterThread(threadMu *sync.Mutex) (leave func() error, err error) {
	tid := strconv.Itoa(unix.Gettid())
	lines, err := threadGroups()
	if err != nil {
		return nil, fmt.Errorf("cgroup: enter %s: read /proc/thread-self/cgroup: %s", v.path, errnoText(err))
	}
	origins := make([]string, len(v.hs))
	for i, h := range v.hs {
		if origins[i], err = h.origin(lines); err != nil {
			return nil, err
		}
	}
	threadMu.Lock()
	restorePids, err := v.bumpPidsMax()
	if err != nil {
		threadMu.Unlock()
		return nil, err
	}
	moveBack := func(n int) error {
		var errs []error
		for i := n - 1; i >= 0; i-- {
			if err := writeFile(filepath.Join(origins[i], "tasks"), tid); err != nil {
				errs = append(errs, fmt.Errorf("cgroup: move thread %s back to %s: %s; later children of this thread would start in %s",
					tid, origins[i], errnoText(err), v.hs[i].label(v.path)))
			}
		}
		return errors.Join(append(errs, restorePids())...)
	}
	for i, h := range v.hs {
		if err := writeFile(filepath.Join(h.dir, "tasks"), tid); err != nil {
			err = withCause(err, "cgroup: move thread %s into %s: %s", tid, h.label(v.path), errnoText(err))
			err = errors.Join(err, moveBack(i))
			threadMu.Unlock()
			return nil, err
		}
	}
	var once sync.Once
	return func() error {
		err := error(nil)
		once.Do(func() {
			err = moveBack(len(v.hs))
			threadMu.Unlock()
		})
		return err
	}, nil
}

// bumpPidsMax raises a numeric pids.max of the group by one while the
// forker thread is inside: the thread counts against the limit, and with
// pids.max=1 the fork would fail with EAGAIN (measured on kernel 6.18). The
// returned func puts the limit back. For the few microseconds between the
// child's exec and leave, the child could start one process more than the
// limit.
func (v *v1Group) bumpPidsMax() (restore func() error, err error) {
	restore = func() error { return nil }
	h := v.hierarchy("pids")
	if h == nil {
		return restore, nil
	}
	file := filepath.Join(h.dir, "pids.max")
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cgroup: enter %s: read pids.max: %s", h.label(v.path), errnoText(err))
	}
	old := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(old, 10, 64)
	if err != nil {
		return restore, nil // "max"
	}
	if err := writeFile(file, strconv.FormatInt(n+1, 10)); err != nil {
		return nil, fmt.Errorf("cgroup: enter %s: raise pids.max to %d for the forker thread: %s", h.label(v.path), n+1, errnoText(err))
	}
	return func() error {
		if err := writeFile(file, old); err != nil {
			return fmt.Errorf("cgroup: put pids.max of %s back to %s: %s", h.label(v.path), old, errnoText(err))
		}
		return nil
	}, nil
}
