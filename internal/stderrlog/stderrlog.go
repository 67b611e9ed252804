// Package stderrlog is the logger of last resort of the libraries (procctl,
// cgroup): where a caller passes none, their warnings are written to stderr
// as ps_port's own lines. Callers normally pass their own (docs/architecture.md,
// "Libraries report, callers log").
package stderrlog

import (
	"fmt"
	"os"
)

// Printf writes one line to stderr, prefixed "ps_port: ".
func Printf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ps_port: "+format+"\n", args...)
}

// Or returns logf, or Printf when logf is nil.
func Or(logf func(format string, args ...any)) func(format string, args ...any) {
	if logf != nil {
		return logf
	}
	return Printf
}
