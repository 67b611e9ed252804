package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// v2Builtin are v1 controller names whose function cgroup v2 has built in
// (or does through eBPF): they are accepted and enable nothing.
var v2Builtin = map[string]bool{
	"cpuacct": true, "devices": true, "freezer": true,
	"net_cls": true, "net_prio": true, "perf_event": true,
}

// v2Renamed maps v1 controller names to their v2 successors.
var v2Renamed = map[string]string{"blkio": "io"}

// v2Controllers maps the controllers asked for to the ones to enable in
// cgroup.subtree_control on v2.
func v2Controllers(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "name=") {
			return nil, fmt.Errorf("cgroup: controller %q: named hierarchies exist only on cgroup v1, and this host is cgroup v2", n)
		}
		if v2Builtin[n] {
			continue
		}
		if r, ok := v2Renamed[n]; ok {
			n = r
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// v2Group is a group's backend in a cgroup2 tree: the only one on a v2
// host, the controller-less one (for CLONE_INTO_CGROUP and cgroup.kill) on
// a hybrid host.
type v2Group struct {
	root       string   // the cgroup2 mount
	path       string   // the group's path below root
	dir        string   // root/path
	created    []string // directories create made, outermost first
	mgr        *cgroup2.Manager
	memory     bool // the memory controller is enabled for it
	hybrid     bool // root is a hybrid host's controller-less tree
	noKillFile bool // tests: behave as on a kernel without cgroup.kill
}

func newV2Group(o options, path string) *v2Group {
	return &v2Group{
		root: o.unifiedRoot, path: path, dir: filepath.Join(o.unifiedRoot, path),
		hybrid: o.mode == cgroups.Hybrid, noKillFile: o.noKillFile,
	}
}

func (v *v2Group) label() string {
	if v.hybrid {
		return "unified:/" + v.path
	}
	return "cgroup2:/" + v.path
}

// create makes the group in the cgroup2 tree and enables the given
// controllers for it in its parents' cgroup.subtree_control.
func (v *v2Group) create(enable []string) error {
	if !isFS(v.root, unix.CGROUP2_SUPER_MAGIC) {
		return fmt.Errorf("cgroup: %s is not a cgroup2 mount", v.root)
	}
	if len(enable) > 0 {
		b, err := os.ReadFile(filepath.Join(v.root, "cgroup.controllers"))
		if err != nil {
			return fmt.Errorf("cgroup: read %s/cgroup.controllers: %s", v.root, errnoText(err))
		}
		available := strings.Fields(string(b))
		for _, c := range enable {
			if !slices.Contains(available, c) {
				list := strings.Join(available, ", ")
				if list == "" {
					list = "none"
				}
				return fmt.Errorf("cgroup: controller %q is not available on this cgroup v2 host (%s); available: %s", c, v.root, list)
			}
		}
	}
	if err := makeGroupDir(v.root, v.path, &v.created); err != nil {
		return createError(v.label(), err, "", v.path, true)
	}
	mgr, err := cgroup2.NewManager(v.root, "/"+v.path, &cgroup2.Resources{})
	if err != nil {
		return createError(v.label(), err, "", v.path, true)
	}
	v.mgr = mgr
	if len(enable) > 0 {
		if err := mgr.ToggleControllers(enable, cgroup2.Enable); err != nil {
			hint := ""
			if isErrno(err, unix.EBUSY) {
				hint = "; a parent group has processes of its own (cgroup v2 allows controllers only for groups without them): use a base group that holds no processes"
			}
			return withCause(err, "cgroup: enable %s for %s: %s%s", strings.Join(enable, ","), v.label(), errDetail(err), hint)
		}
	}
	v.memory = slices.Contains(enable, "memory")
	return nil
}

// createWithSets makes the group on a cgroup v2 host and writes the
// settings.
func (v *v2Group) createWithSets(spec Spec) error {
	enable, err := v2Controllers(spec.Controllers)
	if err != nil {
		return err
	}
	for _, s := range spec.Sets {
		if s.Controller != "cgroup" && !asked(spec.Controllers, s.Controller) {
			return fmt.Errorf("cgroup: setting %s: controller %s was not asked for; add --controller %s",
				s, s.Controller, s.Controller)
		}
	}
	sets, err := translateV2(spec.Sets)
	if err != nil {
		return err
	}
	if err := v.create(enable); err != nil {
		return err
	}
	for _, s := range sets {
		if err := writeSet(filepath.Join(v.dir, s.Key), s, v.label()); err != nil {
			return err
		}
	}
	return nil
}

func (v *v2Group) members(self int, into map[int]bool) error {
	if v.mgr == nil {
		return nil // not created
	}
	procs, err := v.mgr.Procs(true)
	if err != nil {
		return withCause(err, "cgroup: list processes of %s: %s", v.label(), errnoText(err))
	}
	for _, p := range procs {
		if int(p) != self {
			into[int(p)] = true
		}
	}
	return nil
}

func (v *v2Group) populated() (bool, error) {
	n, ok, err := readKey(filepath.Join(v.dir, "cgroup.events"), "populated")
	if err != nil {
		return false, withCause(err, "cgroup: read %s/cgroup.events: %s", v.label(), errnoText(err))
	}
	return ok && n != 0, nil
}

func (v *v2Group) killFile() (bool, error) {
	if v.noKillFile {
		return false, nil
	}
	err := writeFile(filepath.Join(v.dir, "cgroup.kill"), "1")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil // kernel older than 5.14
	case err != nil:
		return false, fmt.Errorf("cgroup: kill %s: write cgroup.kill: %s", v.label(), errnoText(err))
	}
	return true, nil
}

func (v *v2Group) oomKills() (uint64, bool, error) {
	if !v.memory {
		return 0, false, nil
	}
	n, err := readOOMKills(filepath.Join(v.dir, "memory.events"), v.label())
	return n, true, err
}

func (v *v2Group) freezeFile() string {
	if _, err := os.Stat(filepath.Join(v.dir, "cgroup.freeze")); err == nil {
		return filepath.Join(v.dir, "cgroup.freeze")
	}
	return ""
}

func (v *v2Group) dirs() (leaves, parents []string) {
	return []string{v.dir}, v.created
}

// remove deletes the group's directories; on a hybrid host also the
// mirrored parents no other group uses (removeEmptyParents).
func (v *v2Group) remove(timeout time.Duration) error {
	if err := removeDirs(&v.created, v.dir, v.label(), timeout); err != nil {
		return err
	}
	if v.hybrid {
		removeEmptyParents(v.dir, v.root)
	}
	return nil
}

// translateV2 rewrites the v1 keys that have a v2 equivalent (see the
// package comment) and keeps the order of the settings.
func translateV2(sets []Set) ([]Set, error) {
	var out []Set
	quota, period, cpuMax := "", "", -1
	for _, s := range sets {
		switch s.Key {
		case "memory.limit_in_bytes":
			v := s.Value
			if v == "-1" {
				v = "max"
			}
			out = append(out, Set{Controller: "memory", Key: "memory.max", Value: v})
		case "cpu.cfs_quota_us", "cpu.cfs_period_us":
			if s.Key == "cpu.cfs_quota_us" {
				quota = s.Value
			} else {
				period = s.Value
			}
			if cpuMax < 0 {
				cpuMax = len(out)
				out = append(out, Set{Controller: "cpu", Key: "cpu.max"})
			}
		case "cpu.shares":
			n, err := strconv.ParseUint(s.Value, 10, 64)
			if err != nil || n < 2 || n > 262144 {
				return nil, fmt.Errorf("cgroup: setting %s: cpu.shares must be an integer from 2 to 262144", s)
			}
			w := cgroup2.ConvertCPUSharesToCgroupV2Value(n)
			out = append(out, Set{Controller: "cpu", Key: "cpu.weight", Value: strconv.FormatUint(w, 10)})
		default:
			out = append(out, s)
		}
	}
	if cpuMax >= 0 {
		if quota == "" || quota == "-1" {
			quota = "max"
		} else if n, err := strconv.ParseInt(quota, 10, 64); err != nil || n <= 0 {
			return nil, fmt.Errorf("cgroup: setting cpu.cfs_quota_us=%s: want a positive number of microseconds or -1", quota)
		}
		if period == "" {
			period = "100000"
		} else if n, err := strconv.ParseInt(period, 10, 64); err != nil || n <= 0 {
			return nil, fmt.Errorf("cgroup: setting cpu.cfs_period_us=%s: want a positive number of microseconds", period)
		}
		out[cpuMax].Value = quota + " " + period
	}
	return out, nil
}
