package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/protonstream/ps_port/port"
)

// NodeBinary is the name of node mode's binary (cmd/ps_port_node), which
// "ps_port node" execs from ps_port's own directory.
const NodeBinary = "ps_port_node"

// execNode replaces this process with ps_port_node (same pid, descriptors
// and environment, so a BEAM that opened "ps_port node" as a port keeps
// talking to it). It returns only when that is impossible.
func execNode(args []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port node: cannot find ps_port's own path to run %s beside it: %v\n", NodeBinary, err)
		return port.ExitUsage
	}
	bin := filepath.Join(filepath.Dir(self), NodeBinary)
	err = syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "ps_port node: node mode is the binary %s, built beside ps_port (make build, or the shim's compiler, builds both: go build -o DIR/ ./cmd/ps_port ./cmd/ps_port_node): %v\n", bin, err)
	return port.ExitUsage
}
