// Command ps_port_lean is ps_port's port mode without cgroups: the same
// protocol and flags (package portcmd), linking nothing of the cgroup
// backend, so that the one ps_port of an isolated child starts about 1 ms
// sooner (docs/benchmarks.md, "Where the time goes"). The shim runs it for
// an isolated child without a cgroup. A command line with a cgroup, or
// --shared, it hands to ps_port beside it (exec, same pid and port).
package main

import (
	"os"

	"github.com/protonstream/ps_port/internal/portcmd"
)

func main() {
	os.Exit(portcmd.Run(os.Args[1:], nil))
}
