package procctl

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPath opens p as Spec.Exec wants it.
func openPath(t *testing.T, p string) *os.File {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p)
	t.Cleanup(func() { f.Close() })
	return f
}

// Spec.Exec runs the open file, whatever its name points to by then; the
// program's comm is still its name; a script keeps working; descriptors
// above the child's stdio are not left open in a binary.
func TestExecRunsTheOpenFile(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	script := "#!/bin/sh\necho script $0; cat /proc/$$/comm; ls /proc/$$/fd | wc -l\n"
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	f := openPath(t, prog)
	// Swapped after the open: the child still runs what was opened.
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("#!/bin/sh\necho OTHER\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "other"), prog); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	c := start(t, Spec{Path: prog, Exec: f}, r)
	if st := c.Wait(); st != (ExitStatus{}) {
		t.Fatalf("script: %v, stderr %q", st, r.err.String())
	}
	out := strings.Split(r.stdout(), "\n")
	if len(out) < 3 || !strings.HasPrefix(out[0], "script ") || !strings.HasSuffix(out[0], "/prog") || out[1] != "prog" {
		t.Fatalf("script: %q", r.stdout())
	}
	// A binary: its comm, and only stdio (plus what ls itself opens).
	ls, err := filepath.EvalSymlinks("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	fds := func(exec *os.File) string {
		r := &recorder{}
		c := start(t, Spec{Path: "/bin/ls", Args: []string{"/proc/self/fd"}, Exec: exec}, r)
		c.Wait()
		return r.stdout()
	}
	if byPath, byFD := fds(nil), fds(openPath(t, ls)); byFD != byPath {
		t.Fatalf("ls /proc/self/fd in the child: %q run by descriptor, %q by path", byFD, byPath)
	}
	r = &recorder{}
	c = start(t, Spec{Path: "/bin/cat", Args: []string{"/proc/self/comm"}, Exec: openPath(t, "/bin/cat")}, r)
	c.Wait()
	if r.stdout() != "cat\n" {
		t.Fatalf("comm of a binary run by descriptor: %q", r.stdout())
	}
	// The program's descriptor above every one of the child's stdio (which
	// Go's fork could otherwise reuse for its own pipe before the exec).
	var low []*os.File
	for i := 0; i < 32; i++ {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		low = append(low, f)
	}
	high := openPath(t, "/bin/cat")
	for _, f := range low {
		f.Close()
	}
	for i := 0; i < 20; i++ {
		r = &recorder{}
		c = start(t, Spec{Path: "/bin/cat", Args: []string{"/proc/self/comm"}, Exec: high}, r)
		if st := c.Wait(); st != (ExitStatus{}) || r.stdout() != "cat\n" {
			t.Fatalf("a program descriptor (%d) above the stdio ones: %v %q %q", high.Fd(), st, r.stdout(), r.err.String())
		}
	}
	// A file that is not a program: as execve says.
	_, err = Start(Spec{Path: "/etc/passwd", Exec: openPath(t, "/etc/passwd")}, &recorder{})
	if se, ok := err.(*SpawnError); !ok || se.Reason != "eacces" || se.Err == nil || !strings.Contains(se.Error(), "/etc/passwd") {
		t.Fatalf("a file without x: %v", err)
	}
	_, err = Start(Spec{Path: "/etc", Exec: openPath(t, "/etc")}, &recorder{})
	if se, ok := err.(*SpawnError); !ok || !errorsIs(se.Err, syscall.EACCES) {
		t.Fatalf("a directory: %v", err)
	}
}

func errorsIs(err error, target error) bool {
	for err != nil {
		if err == target {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// The exec link of a descriptor number and a name is made once and kept:
// a later child whose program (another file of the same name) is open at
// the same number runs its own file through it, binaries and scripts
// alike, and no directory is made per child.
func TestExecLinkReusedForAnotherFile(t *testing.T) {
	dir := t.TempDir()
	run := func(body string) (string, int) {
		prog := filepath.Join(dir, "tool")
		os.Remove(prog)
		if err := os.WriteFile(prog, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		f := openPath(t, prog)
		r := &recorder{}
		c := start(t, Spec{Path: prog, Exec: f}, r)
		if st := c.Wait(); st != (ExitStatus{}) {
			t.Fatalf("%q: %v, stderr %q", body, st, r.err.String())
		}
		fd := int(f.Fd())
		f.Close()
		return r.stdout(), fd
	}
	links := func() int {
		d, err := execLinkDir()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := filepath.Glob(filepath.Join(d, "*", "*"))
		return len(m)
	}
	out1, fd1 := run("#!/bin/sh\necho first\n")
	before := links()
	for i := 0; i < 5; i++ {
		out2, fd2 := run("#!/bin/sh\necho second\n")
		if out1 != "first\n" || out2 != "second\n" {
			t.Fatalf("outputs %q then %q, want first then second (descriptors %d and %d)", out1, out2, fd1, fd2)
		}
	}
	cat := openPath(t, "/bin/cat")
	for i := 0; i < 5; i++ {
		r := &recorder{}
		c := start(t, Spec{Path: "/bin/cat", Args: []string{"/proc/self/comm"}, Exec: cat}, r)
		if st := c.Wait(); st != (ExitStatus{}) || r.stdout() != "cat\n" {
			t.Fatalf("cat by descriptor: %v %q", st, r.stdout())
		}
	}
	// One per descriptor number and name: a number or two for the ten
	// children (a number is free again once the previous child's files
	// are closed, which may lag), never one each.
	if n := links(); n-before >= 10 {
		t.Fatalf("%d exec links after 5 runs of one script and 5 of cat, %d before: one per child", n, before)
	}
}
