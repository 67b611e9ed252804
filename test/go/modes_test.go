package blackbox

// Behaviours every mode shares, each run as a table over modes
// (harness_modes_test.go): port, shared and node.

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestModesEchoThroughCat: cat's stdin is what the owner sends and its
// stdout comes back in order; eof makes it exit 0, and its process is gone.
func TestModesEchoThroughCat(t *testing.T) {
	forModes(t, func(t *testing.T, o modeOwner) {
		c := o.open("cat", nil, childOpts{})
		pid := c.pid()
		if !alive(pid) {
			t.Fatalf("started pid %d is not a live process", pid)
		}
		c.command("hello\n")
		if got := c.read(); got != "hello\n" {
			t.Fatalf("cat echoed %q, want %q", got, "hello\n")
		}
		c.command("world\n")
		c.eof()
		r := c.collect()
		if r.stdout != "world\n" || r.stderr != "" || r.others != 0 {
			t.Errorf("then stdout %q stderr %q, %d other messages; want \"world\\n\" and nothing else", r.stdout, r.stderr, r.others)
		}
		if r.exit != (childExit{}) {
			t.Errorf("eof should make cat exit 0, got %v", r.exit)
		}
		waitGone(t, pid, 5*time.Second)
	})
}

// TestModesStdoutAndStderr: stdout and stderr are kept apart, or stderr is
// merged into stdout (stderr_to_stdout), or only stderr is captured
// (capture_stderr_only).
func TestModesStdoutAndStderr(t *testing.T) {
	cases := []struct {
		name           string
		script         string
		opts           childOpts
		stdout, stderr string
	}{
		{"apart", "echo out; echo err >&2; echo out2", childOpts{}, "out\nout2\n", "err\n"},
		{"stderr_to_stdout", "echo out; echo err >&2", childOpts{stderrToStdout: true}, "out\nerr\n", ""},
		{"capture_stderr_only", "echo out; echo err >&2", childOpts{captureStderrOnly: true}, "", "err\n"},
	}
	forModes(t, func(t *testing.T, o modeOwner) {
		for _, c := range cases {
			r := o.open("sh", []string{"-c", c.script}, c.opts).collect()
			if r.stdout != c.stdout || r.stderr != c.stderr || r.others != 0 || r.exit != (childExit{}) {
				t.Errorf("%s: stdout %q stderr %q, %d other messages, %v; want %q, %q, none, status 0",
					c.name, r.stdout, r.stderr, r.others, r.exit, c.stdout, c.stderr)
			}
		}
	})
}

// TestModesExitStatusAndSignals: how a child ends reaches its owner: its
// exit status, or the signal that killed it, its own or one the owner sent.
func TestModesExitStatusAndSignals(t *testing.T) {
	cases := []struct {
		program string
		args    []string
		send    syscall.Signal // sent by the owner once the child runs (0: none)
		want    childExit
	}{
		{"sh", []string{"-c", "true"}, 0, childExit{n: 0}},
		{"true", nil, 0, childExit{n: 0}},
		{"false", nil, 0, childExit{n: 1}},
		{"sh", []string{"-c", "exit 7"}, 0, childExit{n: 7}},
		{"sh", []string{"-c", "exit 42"}, 0, childExit{n: 42}},
		{"sh", []string{"-c", "kill -TERM $$"}, 0, childExit{signal: true, n: 15}},
		{"sh", []string{"-c", "kill -KILL $$"}, 0, childExit{signal: true, n: 9}},
		{"sh", []string{"-c", "kill -SEGV $$"}, 0, childExit{signal: true, n: 11}},
		{"sleep", []string{"100"}, syscall.SIGUSR1, childExit{signal: true, n: int(syscall.SIGUSR1)}},
		{"sleep", []string{"100"}, syscall.SIGKILL, childExit{signal: true, n: 9}},
	}
	forModes(t, func(t *testing.T, o modeOwner) {
		for _, c := range cases {
			ch := o.open(c.program, c.args, childOpts{})
			if c.send != 0 {
				ch.signal(c.send)
			}
			if r := ch.collect(); r.exit != c.want || r.stdout != "" || r.stderr != "" || r.others != 0 {
				t.Errorf("%s %q (signal %d sent): exit %v, stdout %q, stderr %q, %d other messages; want %v and nothing else",
					c.program, c.args, c.send, r.exit, r.stdout, r.stderr, r.others, c.want)
			}
		}
	})
}

// TestModesSIGTERMToPsPort: SIGTERM to ps_port terminates its children
// (SIGTERM first: a child's trap runs, and what it writes then and its exit
// reach the owner), and ps_port exits 0.
func TestModesSIGTERMToPsPort(t *testing.T) {
	forModes(t, func(t *testing.T, o modeOwner) {
		c := o.open("sh", []string{"-c", "trap 'echo bye; exit 7' TERM; echo hi; while :; do sleep 0.05; done"}, childOpts{})
		if got := c.read(); got != "hi\n" {
			t.Fatalf("read %q, want hi", got)
		}
		pid := c.pid()
		exitCode := o.sigterm(c)
		// sh may also say "Terminated" on stderr for its sleep.
		if r := c.collect(); r.stdout != "bye\n" || r.others != 0 || r.exit != (childExit{n: 7}) {
			t.Errorf("after SIGTERM: stdout %q, %d other messages, %v; want bye, none, status 7", r.stdout, r.others, r.exit)
		}
		if code := exitCode(); code != 0 {
			t.Errorf("ps_port exit code %d after SIGTERM, want 0", code)
		}
		waitGone(t, pid, time.Second)
	})
}

// TestModesSpawnErrors: a child that cannot start is refused with the
// reason and a message that says why (a --packet ps_port then exits 3), and
// the next open works.
func TestModesSpawnErrors(t *testing.T) {
	noexec := filepath.Join(t.TempDir(), "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(noexec), 0o755)
	cases := []struct {
		program string
		opts    childOpts
		reason  string
		text    string
	}{
		{"no_such_program_xyz", childOpts{}, "enoent", `"no_such_program_xyz": no such file or directory: not found in PATH`},
		{"/no/such/path", childOpts{}, "enoent", `"/no/such/path"`},
		{noexec, childOpts{}, "eacces", noexec},
		{"/etc/passwd", childOpts{}, "eacces", "/etc/passwd"},
		{"true", childOpts{cd: "/no/such/dir"}, "enoent", `working directory (cd) "/no/such/dir"`},
		{"true", childOpts{uid: "no_such_user_xyz"}, "baduser", "no such user"},
		{"true", childOpts{gid: "no_such_group_xyz"}, "badgroup", "no such group"},
	}
	forModes(t, func(t *testing.T, o modeOwner) {
		for _, c := range cases {
			got := o.openError(c.program, nil, c.opts)
			if got.reason != c.reason || !strings.Contains(got.message, c.text) {
				t.Errorf("%s %+v: %s %q, want %s and a message with %q", c.program, c.opts, got.reason, got.message, c.reason, c.text)
			}
		}
		if r := o.open("sh", []string{"-c", "echo ok"}, childOpts{}).collect(); r.stdout != "ok\n" || r.exit != (childExit{}) {
			t.Errorf("open after spawn errors: %q %v", r.stdout, r.exit)
		}
	})
}

// TestModesStdinLimit: a command meeting an empty stdin queue is taken
// whole (sleep never reads: the pipe takes 64 KiB, the rest waits); the
// next one that would pass stdin_limit is refused whole, loudly, and so is
// every further one while the child does not read; a command after eof is
// refused; a command larger than the limit reaches a child that reads,
// uncut.
func TestModesStdinLimit(t *testing.T) {
	forModes(t, func(t *testing.T, o modeOwner) {
		s := o.open("sleep", []string{"100"}, childOpts{stdinLimit: 1000})
		s.commandCopy('x', 100000)
		s.commandCopy('x', 2000)
		want := spawnError{"stdin_overflow", "2000 bytes for stdin refused whole: 34464 bytes already wait for the child to read them and the stdin limit is 1000; send less at a time, wait for the child to read, or raise the limit"}
		if got := s.refusal(); got != want {
			t.Errorf("refused %+v, want %+v", got, want)
		}
		const more = 200
		for range more {
			s.commandCopy('y', 1000)
		}
		for i := range more {
			if got := s.refusal(); got.reason != "stdin_overflow" {
				t.Fatalf("command %d of %d to a child that does not read: %+v, want stdin_overflow", i+1, more, got)
			}
		}
		s.signal(syscall.SIGKILL)
		if r := s.collect(); r.others != 0 || r.exit != (childExit{signal: true, n: 9}) {
			t.Errorf("sleep: %d other messages, %v; want none, signal 9", r.others, r.exit)
		}

		// A child still running after eof (cat, then sleep).
		c := o.open("sh", []string{"-c", "cat; exec sleep 100"}, childOpts{})
		c.eof()
		c.command("late")
		wantLate := spawnError{"stdin_closed", "4 bytes for stdin refused: stdin was closed by eof"}
		if got := c.refusal(); got != wantLate {
			t.Errorf("a command after eof: %+v, want %+v", got, wantLate)
		}
		c.signal(syscall.SIGKILL)
		if r := c.collect(); r.stdout != "" || r.others != 0 || r.exit != (childExit{signal: true, n: 9}) {
			t.Errorf("cat then sleep: stdout %q, %d other messages, %v; want none, signal 9", r.stdout, r.others, r.exit)
		}

		w := o.open("wc", []string{"-c"}, childOpts{stdinLimit: 1000})
		w.commandCopy('z', 3000000)
		w.eof()
		if r := w.collect(); r.stdout != "3000000\n" || r.others != 0 || r.exit != (childExit{}) {
			t.Errorf("3 MB in one command, limit 1000: wc says %q, %d other messages, %v", r.stdout, r.others, r.exit)
		}
	})
}

// TestModesEnvCdArg0: a child runs with the environment set and unset
// (HOME, which ps_port has, removed), in the working directory and with the
// argv[0] it was given.
func TestModesEnvCdArg0(t *testing.T) {
	co := childOpts{env: []string{"FOO=bar"}, unset: []string{"HOME"}, cd: "/tmp", arg0: "myname"}
	forModes(t, func(t *testing.T, o modeOwner) {
		r := o.open("sh", []string{"-c", `echo "$FOO-${HOME-unset}-$0"; pwd`}, co).collect()
		if r.stdout != "bar-unset-myname\n/tmp\n" || r.stderr != "" || r.others != 0 || r.exit != (childExit{}) {
			t.Errorf("stdout %q stderr %q, %d other messages, %v; want \"bar-unset-myname\\n/tmp\\n\", nothing else, status 0", r.stdout, r.stderr, r.others, r.exit)
		}
	})
}
