package host

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/protonstream/ps_port/procctl"
)

// Output is where a session's reports go; the transport encodes them. Its
// methods are called from the session's goroutines: Stdout and Stderr as
// procctl.Sink says, the others never after Exit. An Output that also
// implements procctl.Mover gets the child's output without a copy.
type Output interface {
	procctl.Sink
	// Started is called once, with the child's pid, before any output.
	Started(pid int)
	// Error reports a request that was refused or failed: reason is
	// "stdin_overflow", "stdin_closed" or "signal", message says why and
	// what to do. Or, with reason "output_lost", right before Exit (and
	// OOMKilled), that the child's output could not all be delivered: a
	// Sink call failed (status.OutputErr says how; not reported for EPIPE,
	// an owner gone), so the child was terminated and the rest of its
	// output thrown away.
	Error(reason, message string)
	// StdinWritten reports, in a session started with Request.StdinAck,
	// that n more bytes of stdin were written to the child's pipe since
	// the last report: at least StdinNoticeBytes (or half the stdin
	// limit), or what is left once the queue is empty. Never after Exit.
	StdinWritten(n int64)
	// OOMKilled reports, right before Exit, that the child's cgroup
	// recorded count OOM kills.
	OOMKilled(count uint64)
	// Exit is the last call: the child ended with status, after every byte
	// of its output (status.OutputErr: unless delivery failed), and its
	// tree and cgroup are gone.
	Exit(status procctl.ExitStatus)
}

// Logf writes one line of log; the transport decides where lines go.
type Logf func(format string, args ...any)

// ErrBadSignal is a signal number outside 1..64.
var ErrBadSignal = errors.New("want a signal number 1..64")

// Session is one started child, from its spawn to its exit report. Its
// methods may be called from any goroutine.
type Session struct {
	child *procctl.Child
	group Group // nil without a cgroup
	out   Output
	logf  Logf
	limit int

	mu       sync.Mutex // orders reports: no Error or StdinWritten after Exit
	eof      bool       // EOF was requested: stdin takes no more
	finished bool       // Exit has been called
	// With stdin acks: bytes written to the child's pipe already reported,
	// and how many more make a report.
	stdinAck      bool
	stdinReported int64
	stdinBatch    int64
	status        procctl.ExitStatus
	done          chan struct{}
}

// Start starts the child req describes and reports it to out (Started,
// then its output, then its end). A child that cannot be started is a
// *procctl.SpawnError; its Reason is "badcgroup" when the cgroup could not
// be made. A req.Group belongs to the session from here on: it is deleted
// when the child does not start, and after its exit otherwise. logf gets
// what nobody is told otherwise, procctl's and cgroup's warnings included;
// when nil, the session's own lines are dropped and theirs go to stderr.
func Start(req Request, out Output, logf Logf) (*Session, error) {
	// procctl and cgroup get logf as given: when nil, they use stderr.
	req.Cgroup.Logf = logf
	s := &Session{out: out, logf: logf, limit: req.StdinLimit, group: req.Group, done: make(chan struct{})}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if s.limit <= 0 {
		s.limit = DefaultStdinLimit
	}
	spec, err := req.spec()
	if err != nil {
		s.deleteGroup()
		return nil, err
	}
	spec.Logf = logf
	if s.group == nil && len(req.Cgroup.Controllers) > 0 {
		if NewGroup == nil {
			return nil, &procctl.SpawnError{Reason: "badcgroup", Path: req.Program, Err: ErrNoCgroups}
		}
		g, err := NewGroup(req.Cgroup)
		if err != nil {
			return nil, &procctl.SpawnError{Reason: "badcgroup", Path: req.Program, Err: err}
		}
		s.group = g
	}
	if s.group != nil {
		spec.Placement = s.group
	}
	spec.Started = out.Started
	if req.StdinAck {
		s.stdinAck = true
		s.stdinBatch = int64(max(1, min(StdinNoticeBytes, s.limit/2)))
		spec.StdinWritten = func() {
			s.mu.Lock()
			s.noteStdin()
			s.mu.Unlock()
		}
	}
	s.child, err = procctl.Start(spec, out)
	if err != nil {
		s.deleteGroup()
		var se *procctl.SpawnError
		if !errors.As(err, &se) {
			err = &procctl.SpawnError{Reason: "badarg", Path: req.Program, Err: err}
		}
		return nil, err
	}
	go s.finish()
	return s, nil
}

// finish waits for the child's end and reports it.
func (s *Session) finish() {
	st := s.child.Wait()
	var oom uint64
	if s.group != nil {
		if n, err := s.group.OOMKills(); err == nil {
			oom = n
		}
		s.deleteGroup() // the exit report says the cgroup is gone
	}
	s.mu.Lock()
	// EPIPE: the owner is gone (the port closed), as it may be; nobody is
	// left to tell.
	if st.OutputErr != nil && !errors.Is(st.OutputErr, syscall.EPIPE) {
		s.out.Error("output_lost", fmt.Sprintf("output of child %d could not be delivered (%v): it was terminated and the rest of its output thrown away", s.child.Pid(), st.OutputErr))
	}
	if oom > 0 {
		s.out.OOMKilled(oom)
	}
	s.finished, s.status = true, st
	s.out.Exit(st)
	s.mu.Unlock()
	close(s.done)
}

func (s *Session) deleteGroup() {
	if s.group == nil {
		return
	}
	if err := s.group.Delete(); err != nil {
		s.logf("%v", err)
	}
}

// Pid is the child's OS pid.
func (s *Session) Pid() int { return s.child.Pid() }

// Child is the running process, for transports that drive it directly
// (MuonTrap's raw mode).
func (s *Session) Child() *procctl.Child { return s.child }

// StdinQueued is the number of stdin bytes waiting for the child to read
// them.
func (s *Session) StdinQueued() int { return s.child.StdinQueued() }

// refuse reports a refused request to the owner (whether it is logged too
// is the transport's call); s.mu is held.
func (s *Session) refuse(reason, format string, args ...any) {
	s.out.Error(reason, fmt.Sprintf(format, args...))
}

// Command queues p for the child's stdin, whole or not at all: it is
// refused (and reported with Error "stdin_overflow") when the bytes already
// queued plus p would exceed the stdin limit, unless nothing is queued (a
// command meeting an empty queue is always taken, so any command size goes
// through a child that reads). After EOF, or once the child closed its
// stdin, it is refused with "stdin_closed". The session owns p from then on.
func (s *Session) Command(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return // late: the exit report is out
	}
	if s.eof {
		s.refuse("stdin_closed", "%d bytes for stdin refused: stdin was closed by eof", len(p))
		return
	}
	if queued := s.child.StdinQueued(); queued > 0 && queued+len(p) > s.limit {
		s.refuse("stdin_overflow", "%d bytes for stdin refused whole: %d bytes already wait for the child to read them and the stdin limit is %d; send less at a time, wait for the child to read, or raise the limit",
			len(p), queued, s.limit)
		return
	}
	if err := s.child.Write(p); err != nil {
		s.refuse("stdin_closed", "%d bytes for stdin refused: %v", len(p), err)
		return
	}
	s.noteStdin() // Write may have put it all in the pipe itself
}

// noteStdin reports the stdin bytes written to the child's pipe since the
// last report, when they make a batch or the queue is empty; s.mu is held.
func (s *Session) noteStdin() {
	if !s.stdinAck || s.finished {
		return
	}
	n := s.child.StdinWritten() - s.stdinReported
	if n >= s.stdinBatch || (n > 0 && s.child.StdinQueued() == 0) {
		s.stdinReported += n
		s.out.StdinWritten(n)
	}
}

// EOF closes the child's stdin once what is queued has been written; the
// child keeps running.
func (s *Session) EOF() {
	s.mu.Lock()
	s.eof = true
	s.mu.Unlock()
	s.child.CloseStdin()
}

// Ack returns n bytes of output credit (n >= 0). Acking more than is in
// flight is clamped and logged.
func (s *Session) Ack(n int64) {
	if !s.child.Window().Ack(int(min(n, 1<<40))) {
		s.logf("child %d: owner acked %d bytes, more than in flight; clamped", s.child.Pid(), n)
	}
}

// Signal sends signal n to the child process (not its group). It returns
// ErrBadSignal for n outside 1..64, for the transport to report as a bad
// request; a signal that could not be sent is reported with Error "signal".
func (s *Session) Signal(n int64) error {
	if n < 1 || n > 64 {
		return fmt.Errorf("%w, got %d", ErrBadSignal, n)
	}
	if err := s.child.Signal(syscall.Signal(n)); err != nil {
		s.mu.Lock()
		if !s.finished {
			s.refuse("signal", "signal %d not sent: %v", n, err)
		}
		s.mu.Unlock()
	}
	return nil
}

// Stop takes the child's tree down: SIGTERM to its group, DelayToSIGKILL,
// then SIGKILL to the group, to whatever escaped it and to its cgroup. Its
// output keeps flowing within the window until it is gone.
func (s *Session) Stop() { s.child.Terminate() }

// Abandon is Stop for a child whose owner is gone: nobody acks any more,
// so its remaining output is drained without waiting for credit.
func (s *Session) Abandon() {
	s.child.Window().Close()
	s.child.Terminate()
}

// Done is closed once Exit has been reported.
func (s *Session) Done() <-chan struct{} { return s.done }

// Wait waits for Done and returns how the child ended.
func (s *Session) Wait() procctl.ExitStatus {
	<-s.done
	return s.status
}
