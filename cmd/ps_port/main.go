// Command ps_port runs an OS process for an Erlang or Elixir owner and keeps
// it contained. It is an Erlang port (docs/protocol.md; MuonTrap-compatible
// flags) or, with "ps_port node", a distributed Erlang node hosting many
// processes: that is the binary ps_port_node beside it, exec'd, so that
// port mode links and initialises nothing of node mode. Port mode itself
// is package portcmd; this binary adds cgroups (ps_port_lean is the same
// without them). This file only wires the packages together.
package main

import (
	"os"

	"github.com/protonstream/ps_port/cgroup"
	"github.com/protonstream/ps_port/cgroup/cgspec"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/internal/portcmd"
)

func main() {
	host.NewGroup = newGroup
	os.Exit(portcmd.Run(os.Args[1:], &portcmd.Cgroups{ReclaimAbandoned: cgroup.ReclaimAbandoned}))
}

// newGroup is host.NewGroup: cgroup.Create (a failed one is a nil Group,
// not a nil *cgroup.Group in one).
func newGroup(spec cgspec.Spec) (host.Group, error) {
	g, err := cgroup.Create(spec)
	if err != nil {
		return nil, err
	}
	return g, nil
}
