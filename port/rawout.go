package port

import (
	"fmt"
	"os"

	"github.com/protonstream/ps_port/procctl"
)

// RawOutput is the host.Output of MuonTrap's raw mode: captured output goes
// to the port as is, and what the {packet,4} protocol would report in a
// frame is logged on stderr (the exit status is ps_port's own).
type RawOutput struct{ *RawSink }

// Started does nothing: raw mode has no frame for it.
func (RawOutput) Started(int) {}

// Error logs a refused request.
func (RawOutput) Error(reason, message string) {
	fmt.Fprintf(os.Stderr, "ps_port: %s: %s\n", reason, message)
}

// StdinWritten does nothing: raw mode never asks for stdin acks.
func (RawOutput) StdinWritten(int64) {}

// OOMKilled logs the OOM kills of the child's cgroup.
func (RawOutput) OOMKilled(count uint64) {
	fmt.Fprintf(os.Stderr, "ps_port: the child's cgroup recorded %d OOM kills\n", count)
}

// Exit does nothing: ps_port exits with the child's status.
func (RawOutput) Exit(procctl.ExitStatus) {}
