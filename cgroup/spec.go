package cgroup

import (
	"fmt"
	"path"
	"strings"
)

// Set is one setting: Value is written to the file Key in the group of
// Controller. It is MuonTrap's --set KEY=VALUE.
type Set struct {
	Controller string // the key's prefix before its first '.', e.g. "memory"
	Key        string // a file of the group, e.g. "memory.limit_in_bytes"
	Value      string // written as is, e.g. "268435456"
}

// String returns the setting as KEY=VALUE.
func (s Set) String() string { return s.Key + "=" + s.Value }

// Spec describes a group to create.
type Spec struct {
	// Controllers are the v1 controllers asked for (MuonTrap's
	// --controller), e.g. "memory", "cpu" or "name=systemd". On a v2 host
	// they are the controllers to enable for the group (see the package
	// comment for how v1 names map).
	Controllers []string
	// Path is the group's path relative to each hierarchy's root, e.g.
	// "proton_stream_test/abc123" (MuonTrap's --group).
	Path string
	// Sets are written in order right after the group is created.
	Sets []Set
	// Logf gets what Create does not return: groups of dead ps_ports it
	// reclaimed, a lease it could not take. One line each, without a
	// newline; when nil they go to stderr as ps_port's own lines
	// ("ps_port: ...").
	Logf func(format string, args ...any)
}

// ParseSet parses MuonTrap's --set argument "KEY=VALUE", for example
// "memory.limit_in_bytes=268435456". The controller is the key's prefix
// before its first '.'.
func ParseSet(s string) (Set, error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok {
		return Set{}, fmt.Errorf("cgroup: setting %q: want KEY=VALUE, e.g. memory.limit_in_bytes=268435456", s)
	}
	controller, _, _ := strings.Cut(key, ".")
	set := Set{Controller: controller, Key: key, Value: value}
	if err := set.validate(); err != nil {
		return Set{}, err
	}
	return set, nil
}

func (s Set) validate() error {
	bad := func(why string) error {
		return fmt.Errorf("cgroup: setting %q: %s", s.String(), why)
	}
	if s.Key == "" {
		return bad("empty key; want KEY=VALUE, e.g. memory.limit_in_bytes=268435456")
	}
	if s.Key == "." || s.Key == ".." || strings.ContainsAny(s.Key, "/\x00\n\t ") {
		return bad("the key must be a plain file name (no '/', \"..\", spaces or control characters)")
	}
	controller, rest, ok := strings.Cut(s.Key, ".")
	if !ok || controller == "" || rest == "" {
		return bad("the key must look like CONTROLLER.NAME, e.g. memory.limit_in_bytes")
	}
	if s.Controller != controller {
		return bad(fmt.Sprintf("controller %q does not match the key's prefix %q", s.Controller, controller))
	}
	if s.Value == "" {
		return bad("empty value")
	}
	if strings.ContainsAny(s.Value, "\x00\n") {
		return bad("the value must be one line without NUL bytes")
	}
	return nil
}

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
func (spec Spec) normalized() (Spec, error) {
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
		if err := s.validate(); err != nil {
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
