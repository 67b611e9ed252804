// Package blackbox tests the ps_port binary from outside, driving it
// exactly as its owners do, in every mode: as a {packet,4} port (one child,
// or --shared with many), as a raw MuonTrap-style port, and as "ps_port
// node" driven by a real erl node over Erlang distribution.
//
// The harness, one set of helpers used by every test file:
//
//   - harness_test.go: building the binaries once (TestMain), small shared
//     types;
//   - harness_proc_test.go: processes from /proc, waits with deadlines
//     scaled by testSlack(), memory and descriptor counts;
//   - harness_port_test.go: ps_port as a port (--packet, --shared, raw);
//   - harness_node_test.go: ps_port node and the erl nodes that drive it
//     (node_driver.erl, reliability_driver.erl);
//   - harness_leaks_test.go: leak counters (tagged processes, cgroup
//     directories) for the tests that must leave nothing behind;
//   - harness_modes_test.go: one behaviour run against every mode (a table
//     over modes, as the Elixir case modules are run against :shared,
//     :isolated and :node).
//
// Every helper that starts something registers its cleanup with t.Cleanup.
package blackbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/protonstream/ps_port/etf"
)

// psPort is the path of the ps_port binary built once for all tests.
var psPort string

func TestMain(m *testing.M) {
	if bin := os.Getenv("PS_PORT_BIN"); bin != "" {
		// Another build, e.g. an older one for a before/after figure
		// (bench/kill.sh).
		psPort = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ps_port_bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	psPort = filepath.Join(dir, "ps_port")
	// Every binary: "ps_port node" execs ps_port_node beside it,
	// ps_port_lean execs ps_port for a cgroup.
	build := exec.Command("go", "build", "-o", dir+"/", "../../cmd/ps_port", "../../cmd/ps_port_lean", "../../cmd/ps_port_node")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ps_port:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// psPortBinary is the ps_port every test runs (ps_port_node beside it).
func psPortBinary(t testing.TB) string { return psPort }

// exitCode is the exit code in an error from exec (0 for no error, -1 for
// an error that is not an exit).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// syncBuffer collects a process's stderr, written by exec's copier
// goroutine while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func atom(s string) etf.Atom { return etf.Atom(s) }

func status(n int64) etf.Term { return etf.Tuple{atom("status"), n} }
func signal(n int64) etf.Term { return etf.Tuple{atom("signal"), n} }
