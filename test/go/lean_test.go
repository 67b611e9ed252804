package blackbox

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// ps_port_lean, the port-mode binary the shim runs for an isolated child
// without a cgroup, must not link the cgroup backend: that is the whole
// point of it (about 1 ms of every start, docs/benchmarks.md).
func TestLeanLinksNoCgroupBackend(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "../../cmd/ps_port_lean").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, heavy := range []string{"github.com/containerd/", "google.golang.org/protobuf", "github.com/cilium/ebpf", "github.com/godbus/", "github.com/protonstream/ps_port/cgroup\n"} {
		if strings.Contains(string(out)+"\n", heavy) {
			t.Errorf("ps_port_lean links %s", strings.TrimSpace(heavy))
		}
	}
}

// Given a cgroup, ps_port_lean hands its command line to ps_port beside it
// (exec, same pid): the child runs in the group, which is gone after.
func TestLeanHandsCgroupsToPsPort(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Fatal("needs root (CI runs as root) for cgroups")
	}
	group := fmt.Sprintf("ps_port_lean_test_%d/child", os.Getpid())
	dir := "/sys/fs/cgroup/memory/" + group
	lean := filepath.Join(filepath.Dir(psPort), "ps_port_lean")
	cmd, stdin, out, stderr := startPipesOf(t, lean, "--capture-output", "-c", "memory", "-g", group, "--",
		"sh", "-c", "echo $$; grep memory /proc/self/cgroup")
	defer cmd.Process.Kill()
	p := &rawProc{out: bufio.NewReader(out)}
	pid, _ := p.pidLine(t)
	if line, _ := p.out.ReadString('\n'); !strings.Contains(line, "/"+group) {
		t.Errorf("the child's memory cgroup is %q, want %s (stderr %q)", line, group, stderr.String())
	}
	// Once the child is gone, the port closes: ps_port stops waiting for
	// acks (closing it before would stop the child: exit 143).
	waitGone(t, pid, 5*time.Second)
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ps_port exited with %v, want 0 (stderr %q)", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ps_port still running 10 s after its port closed")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the group %s is still there after ps_port exited (%v)", dir, err)
	}
	os.Remove(filepath.Dir(dir))
}

// A log line written to a closed stderr must not kill ps_port (Go's rule
// for a broken pipe on descriptor 2 while SIGPIPE is not caught): the bad
// frame is reported, the child stopped, and ps_port exits with 5, its code
// for a protocol error, in both port-mode binaries.
func TestClosedStderrDoesNotKill(t *testing.T) {
	t.Parallel()
	for _, bin := range []string{"ps_port", "ps_port_lean"} {
		cmd := exec.Command(filepath.Join(filepath.Dir(psPort), bin), "--packet", "--", "sleep", "60")
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close() // every write to stderr is now EPIPE
		cmd.Stderr = w
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		frames := bufio.NewReader(out)
		next := func() etf.Term {
			var n [4]byte
			if _, err := io.ReadFull(frames, n[:]); err != nil {
				return nil
			}
			b := make([]byte, binary.BigEndian.Uint32(n[:]))
			if _, err := io.ReadFull(frames, b); err != nil {
				return nil
			}
			term, _ := etf.Decode(b)
			return term
		}
		if f, ok := next().(etf.Tuple); !ok || f[0] != etf.Atom("started") {
			t.Fatalf("%s: first frame %v, want {started, _}", bin, f)
		}
		stdin.Write(packet([]byte{0})) // not a term: ps_port logs it to stderr
		var badframe bool
		for f := next(); f != nil; f = next() {
			tu, _ := f.(etf.Tuple)
			if len(tu) == 3 && tu[1] == etf.Atom("badframe") {
				badframe = true
			}
			if len(tu) == 2 && tu[0] == etf.Atom("exit") {
				break // ps_port now waits for the port to close
			}
		}
		stdin.Close()
		err = cmd.Wait()
		if !badframe {
			t.Errorf("%s: no {error, badframe, _} frame", bin)
		}
		if code := cmd.ProcessState.ExitCode(); code != 5 {
			t.Errorf("%s: exited with %v, want exit code 5 (a broken stderr must not kill it)", bin, err)
		}
	}
}
