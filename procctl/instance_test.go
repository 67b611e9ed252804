package procctl

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sweepDead tells dead programs by their unlocked entries, whether their
// pid is gone or reused (here: this test's own pid), kills what carries
// their markers, and leaves a live (locked) entry and its processes alone.
func TestSweepDeadByLockNotPid(t *testing.T) {
	dir := t.TempDir()
	self := strconv.Itoa(os.Getpid())
	live, err := os.Create(filepath.Join(dir, self+".live0123"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := unix.Flock(int(live.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{self + ".reused01", "999999999.gone0123"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	leftover := startMarked(t, "reused01.x")
	liveChild := startMarked(t, "live0123.x")

	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	if n := sweepDead(dir, "", logf); n != 2 {
		t.Errorf("sweepDead found %d dead programs, want 2", n)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "2 ps_port(s) died without cleaning up") {
		t.Errorf("the sweep reported %q to the caller's logger, want one line on the 2 dead ps_ports", logged)
	}
	names, _ := readNames(dir)
	if len(names) != 1 || names[0] != self+".live0123" {
		t.Errorf("entries left: %v, want only the live one", names)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !pidfdExited(leftover) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !pidfdExited(leftover) {
		t.Error("a process with a dead program's marker survived the sweep")
	}
	if pidfdExited(liveChild) {
		t.Error("a process with a live program's marker was killed")
	}
}

// startMarked starts sleep with MarkerEnv=marker and returns a pidfd on it;
// it is killed and reaped when the test ends (left a zombie, it was the
// first zombie TestZombieWaitingSeesAnUnreapedChild saw, for good).
func startMarked(t *testing.T, marker string) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.Env = []string{MarkerEnv + "=" + marker}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
		cmd.Wait()
	})
	return fd
}
