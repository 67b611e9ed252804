package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

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

// createCgroup2 makes the group in the cgroup2 tree and enables the given
// controllers for it in its parents' cgroup.subtree_control.
func (g *Group) createCgroup2(enable []string) error {
	root := g.opts.unifiedRoot
	if !isFS(root, unix.CGROUP2_SUPER_MAGIC) {
		return fmt.Errorf("cgroup: %s is not a cgroup2 mount", root)
	}
	if len(enable) > 0 {
		b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil {
			return fmt.Errorf("cgroup: read %s/cgroup.controllers: %s", root, errnoText(err))
		}
		available := strings.Fields(string(b))
		for _, c := range enable {
			if !slices.Contains(available, c) {
				list := strings.Join(available, ", ")
				if list == "" {
					list = "none"
				}
				return fmt.Errorf("cgroup: controller %q is not available on this cgroup v2 host (%s); available: %s", c, root, list)
			}
		}
	}
	g.v2Dir = filepath.Join(root, g.path)
	if err := makeGroupDir(root, g.path, &g.v2Created); err != nil {
		return createError(g.v2Label(), err, "", g.path, true)
	}
	mgr, err := cgroup2.NewManager(root, "/"+g.path, &cgroup2.Resources{})
	if err != nil {
		return createError(g.v2Label(), err, "", g.path, true)
	}
	g.v2 = mgr
	if len(enable) > 0 {
		if err := mgr.ToggleControllers(enable, cgroup2.Enable); err != nil {
			hint := ""
			if isErrno(err, unix.EBUSY) {
				hint = "; a parent group has processes of its own (cgroup v2 allows controllers only for groups without them): use a base group that holds no processes"
			}
			return withCause(err, "cgroup: enable %s for %s: %s%s", strings.Join(enable, ","), g.v2Label(), errDetail(err), hint)
		}
	}
	g.v2Memory = slices.Contains(enable, "memory")
	if g.freezer == "" {
		if _, err := os.Stat(filepath.Join(g.v2Dir, "cgroup.freeze")); err == nil {
			g.freezer = filepath.Join(g.v2Dir, "cgroup.freeze")
		}
	}
	return nil
}

// createV2 makes the group on a cgroup v2 host and writes the settings.
func (g *Group) createV2(spec Spec) error {
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
	if err := g.createCgroup2(enable); err != nil {
		return err
	}
	for _, s := range sets {
		if err := writeSet(filepath.Join(g.v2Dir, s.Key), s, g.v2Label()); err != nil {
			return err
		}
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
