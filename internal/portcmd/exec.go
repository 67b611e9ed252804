package portcmd

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/protonstream/ps_port/port"
)

// The binaries "ps_port node" and ps_port_lean exec, from their own
// directory (make build, or the shim's compiler, builds them all into one:
// go build -o DIR/ ./cmd/ps_port ./cmd/ps_port_lean ./cmd/ps_port_node).
const (
	// NodeBinary is node mode (cmd/ps_port_node).
	NodeBinary = "ps_port_node"
	// FullBinary is port mode with cgroups (cmd/ps_port).
	FullBinary = "ps_port"
)

// beside is the path of the binary name in this one's directory.
func beside(name string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find this binary's own path to run %s beside it: %w", name, err)
	}
	return filepath.Join(filepath.Dir(self), name), nil
}

// execBeside replaces this process with the binary name beside it (same
// pid, descriptors and environment, so a BEAM that opened this one as a
// port keeps talking to it). It returns only when that is impossible.
func execBeside(name, what string, args []string) int {
	bin, err := beside(name)
	if err == nil {
		err = syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
		err = fmt.Errorf("%s: %w", bin, err)
	}
	fmt.Fprintf(os.Stderr, "ps_port: %s is the binary %s, built beside this one "+
		"(make build, or the shim's compiler, builds them all: go build -o DIR/ ./cmd/ps_port ./cmd/ps_port_lean ./cmd/ps_port_node): %v\n",
		what, name, err)
	return port.ExitUsage
}

// execNode runs "ps_port node ARGS" as ps_port_node ARGS.
func execNode(args []string) int { return execBeside(NodeBinary, "node mode", args) }

// execFull runs ps_port_lean's command line that needs cgroups (or
// --shared) as ps_port with the same arguments.
func execFull(args []string) int {
	return execBeside(FullBinary, "port mode with cgroups (and --shared)", args)
}

// reclaimBeside has ps_port remove the cgroups of dead ps_ports, and waits
// for it: ps_port_lean cannot, it links no cgroup backend.
func reclaimBeside() {
	bin, err := beside(FullBinary)
	if err == nil {
		var p *os.Process
		p, err = os.StartProcess(bin, []string{bin, ReclaimCommand},
			&os.ProcAttr{Files: []*os.File{nil, nil, os.Stderr}})
		if err == nil {
			_, err = p.Wait()
		}
	}
	if err != nil {
		logf("the cgroups of dead ps_ports stay until the next ps_port with cgroups starts: %v", err)
	}
}
