// Package cgspec describes a cgroup to create: its controllers, its path
// and its settings (MuonTrap's --controller, --group and --set), and parses
// a setting. It is the part of package cgroup that the transports and the
// host layer need to carry a request; it links nothing of the cgroup
// backend (github.com/containerd/cgroups/v3), so ps_port_lean, the port-mode
// binary without cgroups, starts without initialising it.
package cgspec

import (
	"fmt"
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
	if err := set.Validate(); err != nil {
		return Set{}, err
	}
	return set, nil
}

// Validate checks a setting: a plain file name CONTROLLER.NAME as key, with
// Controller its prefix, and a one-line value.
func (s Set) Validate() error {
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
