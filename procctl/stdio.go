package procctl

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// stdioSet holds both ends of the child's standard streams while it starts.
type stdioSet struct {
	child                    [3]*os.File // the child's ends
	stdinW, stdoutR, stderrR *os.File    // ps_port's ends
	stdoutWait, stderrWait   *pipeWait   // how the pumps wait for stdoutR and stderrR
	owned                    []*os.File  // child ends to close after the fork
}

// open makes the child's three streams as spec says.
func (s *stdioSet) open(spec Spec) error {
	if err := s.openStdin(spec.Stdin); err != nil {
		return err
	}
	if err := s.openOutput("stdout", 1, spec.Stdout, &s.stdoutR, &s.stdoutWait, os.Stdout); err != nil {
		return err
	}
	if spec.Stderr == ToStdout {
		s.child[2] = s.child[1]
		return nil
	}
	return s.openOutput("stderr", 2, spec.Stderr, &s.stderrR, &s.stderrWait, os.Stderr)
}

func (s *stdioSet) openStdin(mode Stdio) error {
	switch mode {
	case Pipe:
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("stdin pipe: %w", err)
		}
		s.stdinW, s.child[0] = w, r
		s.owned = append(s.owned, r)
		return nil
	case Inherit:
		s.child[0] = os.Stdin
		return nil
	default:
		return s.devNull(0, os.O_RDONLY)
	}
}

// openOutput makes the child's stream fd (1 or 2): a pipe whose read end
// goes to *r (and how to wait for it to *wait), ps_port's own stream own,
// or /dev/null.
func (s *stdioSet) openOutput(name string, fd int, mode Stdio, r **os.File, wait **pipeWait, own *os.File) error {
	switch mode {
	case Pipe:
		pr, pw, err := outputPipe()
		if err != nil {
			return fmt.Errorf("%s pipe: %w", name, err)
		}
		if *wait, err = newPipeWait(int(pr.Fd())); err != nil {
			pr.Close()
			pw.Close()
			return fmt.Errorf("%s pipe: %w", name, err)
		}
		*r, s.child[fd] = pr, pw
		s.owned = append(s.owned, pw)
		return nil
	case Inherit:
		s.child[fd] = own
		return nil
	default:
		return s.devNull(fd, os.O_WRONLY)
	}
}

// outputPipe makes a pipe for a child's output. The read end is
// non-blocking and deliberately not in Go's poller (its pump waits for it
// through a pipeWait); the write end, the child's, is blocking. The pipe is
// enlarged to 1 MiB: fewer wake-ups per MiB streamed.
func outputPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20)
	// os.NewFile leaves a blocking descriptor out of the poller; it is
	// made non-blocking only afterwards.
	r, w = os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1")
	if err := unix.SetNonblock(p[0], true); err != nil {
		r.Close()
		w.Close()
		return nil, nil, err
	}
	return r, w, nil
}

// devNull gives the child's stream fd /dev/null.
func (s *stdioSet) devNull(fd, flag int) error {
	f, err := os.OpenFile(os.DevNull, flag, 0)
	if err != nil {
		return err
	}
	s.child[fd] = f
	s.owned = append(s.owned, f)
	return nil
}

func (s *stdioSet) childFds() []uintptr {
	return []uintptr{s.child[0].Fd(), s.child[1].Fd(), s.child[2].Fd()}
}

func (s *stdioSet) closeChildEnds() {
	for _, f := range s.owned {
		f.Close()
	}
}

func (s *stdioSet) closeParentEnds() {
	for _, f := range []*os.File{s.stdinW, s.stdoutR, s.stderrR} {
		if f != nil {
			f.Close()
		}
	}
	for _, w := range []*pipeWait{s.stdoutWait, s.stderrWait} {
		if w != nil {
			w.close()
		}
	}
}
