package blackbox

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// An owner acks output after reading it, and the child may have exited by
// then: ps_port must still be there to take the ack (else the BEAM reports
// epipe), and exit once everything it sent has been acknowledged.
func TestRawModeWaitsForTheLastAck(t *testing.T) {
	t.Parallel()
	p := startRaw(t, "--capture-output", "--", "sh", "-c", "echo $$; exit 3")
	pid, line := p.pidLine(t)
	waitGone(t, pid, 5*time.Second)
	select {
	case err := <-p.exited:
		t.Fatalf("ps_port exited (%v) with %d bytes unacknowledged", err, len(line))
	case <-time.After(300 * time.Millisecond):
	}
	// One byte b acknowledges b+1 bytes.
	if _, err := p.stdin.Write([]byte{byte(len(line) - 1)}); err != nil {
		t.Fatalf("the last ack met a closed port: %v", err)
	}
	select {
	case err := <-p.exited:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("want exit code 3 (the child's), got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ps_port still running 5 s after the last ack")
	}
}

// Closing the port without acking ends the wait at once.
func TestRawModeClosedPortEndsTheWait(t *testing.T) {
	t.Parallel()
	p := startRaw(t, "--capture-output", "--", "sh", "-c", "echo $$; exit 4")
	pid, _ := p.pidLine(t)
	// The child has exited (else closing the port stops it: exit 143), and
	// ps_port waits for the ack of its line.
	waitGone(t, pid, 5*time.Second)
	p.stdin.Close()
	select {
	case err := <-p.exited:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
			t.Errorf("want exit code 4, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ps_port still waits for acks after its port was closed")
	}
}

// As MuonTrap: a group without controllers, controllers without a group and
// settings without controllers are usage errors, named, with exit code 2.
func TestCgroupFlagsMustComeTogether(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-g", "ps_port_x/y", "--", "true"}, "--group (-g) \"ps_port_x/y\" needs at least one --controller (-c)"},
		{[]string{"--group", "ps_port_x/y", "--packet", "--", "true"}, "needs at least one --controller (-c)"},
		{[]string{"-c", "memory", "--", "true"}, "--controller (-c) needs --group (-g)"},
		{[]string{"-s", "memory.limit_in_bytes=1000000", "--", "true"}, "--set (-s) needs --controller (-c)"},
	}
	for _, c := range cases {
		cmd := exec.Command(psPort, c.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: want exit code 2 (usage), got %v", c.args, err)
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: stderr %q does not say %q", c.args, stderr.String(), c.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: %d bytes on stdout (the port's data stream)", c.args, stdout.Len())
		}
	}
}
