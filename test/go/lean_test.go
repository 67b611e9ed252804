package blackbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	cmd := exec.Command(lean, "--capture-output", "-c", "memory", "-g", group, "--",
		"sh", "-c", "echo $$; grep memory /proc/self/cgroup")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
