package cgroup

import (
	"fmt"
	"path"
	"strings"

	"github.com/protonstream/ps_port/cgroup/cgspec"
)

// Set is one setting (cgspec.Set): MuonTrap's --set KEY=VALUE.
type Set = cgspec.Set

// Spec describes a group to create (cgspec.Spec).
type Spec = cgspec.Spec

// ParseSet parses MuonTrap's --set argument "KEY=VALUE" (cgspec.ParseSet).
func ParseSet(s string) (Set, error) { return cgspec.ParseSet(s) }

// validatePath checks that p is a clean relative path that stays inside the
// hierarchy root.
func validatePath(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("cgroup: group path %q: %s", p, why)
	}
	switch {
	case p == "":
		return bad("empty; give a relative path such as ps_port/job1")
	case strings.ContainsAny(p, "\x00\n"):
		return bad("contains a NUL byte or a newline")
	case strings.HasPrefix(p, "/"):
		return bad("must be relative to the cgroup hierarchy root, e.g. " + strings.TrimLeft(p, "/"))
	}
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "":
			return bad("has an empty component (\"//\" or a trailing '/')")
		case ".", "..":
			return bad("must not contain \".\" or \"..\" components")
		}
	}
	if path.Clean(p) != p {
		return bad("is not clean")
	}
	return nil
}

// validateController checks a controller name as given to --controller.
func validateController(c string) error {
	if c == "" || c == "." || c == ".." || c == "name=" || strings.ContainsAny(c, "/,\x00\n\t ") {
		return fmt.Errorf("cgroup: controller %q: not a controller name (e.g. memory, cpu, name=systemd)", c)
	}
	return nil
}

// normalized validates spec and returns it with duplicate controllers removed.
func normalized(spec Spec) (Spec, error) {
	if err := validatePath(spec.Path); err != nil {
		return Spec{}, err
	}
	out := Spec{Path: spec.Path, Sets: append([]Set(nil), spec.Sets...), Logf: spec.Logf}
	seen := map[string]bool{}
	for _, c := range spec.Controllers {
		if err := validateController(c); err != nil {
			return Spec{}, err
		}
		if !seen[c] {
			seen[c] = true
			out.Controllers = append(out.Controllers, c)
		}
	}
	for _, s := range out.Sets {
		if err := s.Validate(); err != nil {
			return Spec{}, err
		}
	}
	return out, nil
}

// asked reports whether controller c is in list; a named hierarchy matches
// with or without its "name=" prefix.
func asked(list []string, c string) bool {
	c = strings.TrimPrefix(c, "name=")
	for _, x := range list {
		if strings.TrimPrefix(x, "name=") == c {
			return true
		}
	}
	return false
}
