package procctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/internal/rawio"
	"github.com/protonstream/ps_port/internal/stderrlog"
	"golang.org/x/sys/unix"
)

// Sink receives a child's output. Calls come from one goroutine per stream,
// so an implementation that writes both streams to one place must serialize.
// p is only valid during the call. An error stops delivery: the child is
// terminated, the rest of its output discarded, and the first error comes
// back with the exit (ExitStatus.OutputErr).
type Sink interface {
	Stdout(p []byte) error
	Stderr(p []byte) error
}

// Mover is a Sink that can also take output straight from the pipe it
// waits in, so the bytes never pass through this program (port mode splices
// them into the owner's pipe). When MoveStdout or MoveStderr is called, fd
// (non-blocking) holds at least n readable bytes, and exactly n of them must
// be consumed, or an error returned. Calls come from the same goroutines as
// the Sink's.
type Mover interface {
	MoveStdout(fd, n int) error
	MoveStderr(fd, n int) error
}

// ExitStatus is how a child ended.
type ExitStatus struct {
	Code   int            // exit status when Signal is 0
	Signal syscall.Signal // the signal that killed it, or 0
	// OutputErr, when not nil, says that output was lost: it is the first
	// error the Sink returned. The child was then terminated and the rest
	// of its output thrown away.
	OutputErr error
}

func (s ExitStatus) String() string {
	how := fmt.Sprintf("exit status %d", s.Code)
	if s.Signal != 0 {
		how = fmt.Sprintf("killed by signal %d (%v)", int(s.Signal), s.Signal)
	}
	if s.OutputErr != nil {
		how += fmt.Sprintf("; output lost: %v", s.OutputErr)
	}
	return how
}

// readBuf is the largest read from a pipe, and so the largest Sink call.
const readBuf = 64 << 10

// readBufs holds read buffers of readBuf bytes between reads.
var readBufs = sync.Pool{New: func() any { return new([readBuf]byte) }}

func getReadBuf() []byte { return readBufs.Get().(*[readBuf]byte)[:] }

func putReadBuf(b []byte) {
	if cap(b) == readBuf {
		readBufs.Put((*[readBuf]byte)(b[:readBuf]))
	}
}

// moveMax is the most a Mover is handed at once (and never more than the
// window's credit). Large moves mean few frames, acks and wake-ups per MiB.
const moveMax = 1 << 20

// Child is one running OS process and its tree.
type Child struct {
	spec   Spec
	pid    int
	pidfd  *os.File
	window *Window
	sink   Sink
	stdin  *stdinQueue

	readers  sync.WaitGroup
	waits    []*pipeWait // how the readers of stdout/stderr wait for their pipes
	draining atomic.Bool
	lost     atomic.Bool // the sink failed: discard the rest
	lostErr  error       // what the sink said, set once with lost

	exited chan struct{} // closed when the child itself has been reaped
	done   chan struct{} // closed when Wait may return
	status ExitStatus

	marker       string // MarkerEnv's value in the child's environment
	termOnce     sync.Once
	killDeadline atomic.Int64 // unix nanos after which leftovers get SIGKILL; 0 = not terminating
	termSent     atomic.Bool  // the group and orphans have had their SIGTERM

	// Orphan rounds (proctree.go): what c's orphans get next, and what the
	// last round found and sent (guarded by rounds.mu).
	orphanReq   atomic.Uint32
	orphansSeen int
	roundSig    syscall.Signal
	unclaimed   bool // rounds.forget was called (guarded by rounds.claimMu)
}

// Start starts the child described by spec. Its output goes to sink.
func Start(spec Spec, sink Sink) (*Child, error) {
	spec, path, err := resolveSpec(spec)
	if err != nil {
		return nil, err
	}
	c := &Child{
		spec:   spec,
		window: NewWindow(spec.Window),
		sink:   sink,
		exited: make(chan struct{}),
		done:   make(chan struct{}),
		marker: newMarker(),
	}
	var st stdioSet
	defer st.closeChildEnds()
	if err := st.open(spec); err != nil {
		st.closeParentEnds()
		return nil, spawnError(path, err)
	}
	pidfd := -1
	attr := c.procAttr(st.childFds(), &pidfd)
	execPath := path
	var plan *execPlan
	if spec.Exec != nil {
		if plan, err = planExec(spec.Exec, filepath.Base(path), attr.Files); err != nil {
			st.closeParentEnds()
			return nil, spawnError(path, err)
		}
		defer plan.afterFork()
		execPath, attr.Files = plan.path, plan.files
	}
	if err := c.fork(execPath, attr); err != nil {
		st.closeParentEnds()
		return nil, forkError(spec, path, err)
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		return nil, fmt.Errorf("pidfd of child %d: %w", c.pid, err)
	}
	c.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
	if spec.Started != nil {
		spec.Started(c.pid)
	}
	c.run(&st)
	return c, nil
}

// resolveSpec fills spec's defaults, checks its directory and finds the
// program's path.
func resolveSpec(spec Spec) (Spec, string, error) {
	if spec.Window <= 0 {
		spec.Window = DefaultWindow
	}
	spec.DelayToSIGKILL = max(spec.DelayToSIGKILL, 0)
	if err := CheckDir(spec.Path, spec.Dir); err != nil {
		return spec, "", err
	}
	path := spec.Path
	if spec.Exec == nil {
		var err error
		if path, err = Resolve(spec.Path, spec.Dir, spec.Env); err != nil {
			return spec, "", err
		}
	}
	return spec, path, nil
}

// procAttr is how the child is started: its argv and environment (with
// its marker), its own session, SIGKILL when the forker thread dies, its
// credentials, its cgroup, and its pidfd (in *pidfd).
func (c *Child) procAttr(files []uintptr, pidfd *int) *syscall.ProcAttr {
	spec := &c.spec
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}
	sys := &syscall.SysProcAttr{
		Setsid:     true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: spec.Credential,
		PidFD:      pidfd,
	}
	if spec.Placement != nil {
		if fd := spec.Placement.CgroupFD(); fd >= 0 {
			sys.UseCgroupFD, sys.CgroupFD = true, fd
		}
	}
	return &syscall.ProcAttr{Dir: spec.Dir, Env: withMarker(env, c.marker), Files: files, Sys: sys}
}

// argv is the child's argument vector.
func (c *Child) argv() []string {
	argv := append([]string{c.spec.Arg0}, c.spec.Args...)
	if c.spec.Arg0 == "" {
		argv[0] = c.spec.Path
	}
	return argv
}

// fork starts the process from the forker thread (inside the child's
// cgroup when it has a Placement that enters threads) and registers it.
func (c *Child) fork(execPath string, attr *syscall.ProcAttr) error {
	argv := c.argv()
	_, err := onForkerThread(func() (int, error) {
		registry.Lock()
		defer registry.Unlock()
		if p := c.spec.Placement; p != nil {
			leave, err := p.EnterThread()
			if err != nil {
				return 0, err
			}
			defer func() {
				if err := leave(); err != nil {
					stderrlog.Or(c.spec.Logf)("moving the forker thread back out of the cgroup: %v", err)
				}
			}()
		}
		pid, _, err := syscall.StartProcess(execPath, argv, attr)
		if err != nil {
			return 0, err
		}
		c.pid = pid
		registry.children[pid] = c
		return pid, nil
	})
	return err
}

// forkError is the error of a failed fork, explained.
func forkError(spec Spec, path string, err error) error {
	var se *SpawnError
	if errors.As(err, &se) {
		return se
	}
	if cr := spec.Credential; cr != nil && errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
		err = fmt.Errorf("%w (ps_port runs as uid %d gid %d; only root can start a child as uid %d gid %d)",
			err, os.Geteuid(), os.Getegid(), cr.Uid, cr.Gid)
	}
	return spawnError(path, err)
}

// run starts the goroutines of a started child: its stdin writer, one
// reader per output pipe, and supervise.
func (c *Child) run(st *stdioSet) {
	if st.stdinW != nil {
		c.stdin = newStdinQueue(st.stdinW, c.spec.StdinWritten)
	}
	var moveOut, moveErr func(fd, n int) error
	if mv, ok := c.sink.(Mover); ok {
		moveOut, moveErr = mv.MoveStdout, mv.MoveStderr
	}
	if st.stdoutR != nil {
		c.startReader(st.stdoutR, st.stdoutWait, c.sink.Stdout, moveOut)
	}
	if st.stderrR != nil {
		c.startReader(st.stderrR, st.stderrWait, c.sink.Stderr, moveErr)
	}
	go c.supervise()
}

// Pid is the child's OS pid.
func (c *Child) Pid() int { return c.pid }

// Marker is MarkerEnv's value in the child's environment.
func (c *Child) Marker() string { return c.marker }

// Window is the child's flow-control window; the owner's acks go to its Ack.
func (c *Child) Window() *Window { return c.window }

// Write queues p for the child's stdin and returns at once. The child owns p
// from then on.
func (c *Child) Write(p []byte) error {
	if c.stdin == nil {
		return ErrStdinClosed
	}
	return c.stdin.write(p)
}

// StdinQueued is the number of stdin bytes queued and not yet written.
func (c *Child) StdinQueued() int {
	if c.stdin == nil {
		return 0
	}
	return c.stdin.pending()
}

// StdinWritten is the number of stdin bytes written to the child's pipe so
// far (whether or not the child has read them from it yet).
func (c *Child) StdinWritten() int64 {
	if c.stdin == nil {
		return 0
	}
	return c.stdin.total()
}

// CloseStdin closes the child's stdin after what is queued has been written.
func (c *Child) CloseStdin() {
	if c.stdin != nil {
		c.stdin.closeAfterQueued()
	}
}

// Signal sends sig to the child process (not its group). It is a no-op once
// the child has been reaped, so it can never hit a recycled pid.
func (c *Child) Signal(sig syscall.Signal) error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	rc, err := c.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	cerr := rc.Control(func(fd uintptr) { err = unix.PidfdSendSignal(int(fd), sig, nil, 0) })
	if cerr != nil || errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Terminate takes the child's tree down: SIGTERM to its process group and
// to the escapees already reparented here, then, once DelayToSIGKILL has
// passed, SIGKILL to whatever of the tree is left: the group, every
// descendant that escaped it, its cgroup (tree.go). It returns at once;
// Wait tells when it is over. Calling it again does nothing.
func (c *Child) Terminate() {
	c.termOnce.Do(func() {
		deadline := time.Now().Add(c.spec.DelayToSIGKILL)
		c.killDeadline.Store(deadline.UnixNano())
		select {
		case <-c.exited:
			return // supervise takes care of leftovers
		default:
		}
		// The group's SIGTERM at once, from the caller: it is what takes an
		// obedient tree down. The escapees' (a listing of this program's
		// children, shared with other terminations) comes after.
		sent := c.termSent.CompareAndSwap(false, true)
		if sent {
			c.groupSignal(syscall.SIGTERM)
		}
		go func() {
			if sent {
				rounds.run(c, syscall.SIGTERM)
			}
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			select {
			case <-c.exited:
			case <-t.C:
				// The child's exit hands the rest to supervise.
				c.groupSignal(syscall.SIGKILL)
			}
		}()
	})
}

// Done is closed when the child has exited, all its output has been handed to
// the sink and its tree is gone.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait waits for Done and returns how the child ended.
func (c *Child) Wait() ExitStatus {
	<-c.done
	return c.status
}

// supervise waits for the child's exit, clears its tree, drains its pipes and
// then releases Wait.
func (c *Child) supervise() {
	c.status = c.reap()
	close(c.exited)
	c.stopLeftovers()
	c.draining.Store(true)
	c.window.kick()
	for _, w := range c.waits {
		w.kick() // wake readers blocked on an empty pipe
	}
	c.readers.Wait()
	c.status.OutputErr = c.lostErr // no reader is left to set it
	if c.stdin != nil {
		c.stdin.abort()
	}
	c.pidfd.Close()
	close(c.done)
}

// reap waits for the child to exit and collects its status.
func (c *Child) reap() ExitStatus {
	rc, err := c.pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			if err == unix.EINTR {
				return false
			}
			// info is all zero while the child runs.
			return err != nil || info != (unix.Siginfo{})
		})
	}
	if err != nil {
		c.logf("waiting on child %d: %v", c.pid, err)
	}
	var ws syscall.WaitStatus
	registry.Lock()
	_, werr := syscall.Wait4(c.pid, &ws, 0, nil)
	for werr == syscall.EINTR {
		_, werr = syscall.Wait4(c.pid, &ws, 0, nil)
	}
	delete(registry.children, c.pid)
	registry.Unlock()
	switch {
	case werr != nil:
		c.logf("reaping child %d: %v", c.pid, werr)
		return ExitStatus{Signal: syscall.SIGKILL}
	case ws.Signaled():
		return ExitStatus{Signal: ws.Signal()}
	default:
		return ExitStatus{Code: ws.ExitStatus()}
	}
}

// startReader reads one output pipe until EOF (or, once the child is gone,
// until it is empty) and hands what it reads to emit, within the window.
// With move, what is in the pipe is handed over without being read.
// f is not in Go's poller (see outputPipe): the pump reads it with raw
// system calls, waits for it through pw, and is the only one to close it.
func (c *Child) startReader(f *os.File, pw *pipeWait, emit func([]byte) error, move func(fd, n int) error) {
	c.waits = append(c.waits, pw)
	c.window.addBell(&pw.bell)
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		defer f.Close()
		defer pw.close()
		defer c.window.removeBell(&pw.bell)
		c.pump(pw, emit, move)
	}()
}

type readResult int

const (
	readData readResult = iota
	readEOF
	readEmpty  // pipe empty and the child is gone: done
	readNoCred // another reader took the credit
	readFailed
	readMove // n bytes wait in the pipe, to be moved
)

// outPipe is one output pipe as its pump reads it. Only the pump's
// goroutine touches it.
type outPipe struct {
	c       *Child
	emit    func([]byte) error
	move    func(fd, n int) error // nil: the sink is not a Mover
	size    int                   // the most one read takes
	maxTake int                   // the most credit one round takes
	buf     []byte                // the read buffer while it holds bytes
	n       int                   // bytes read into buf, or waiting to be moved
}

func (c *Child) pump(pw *pipeWait, emit func([]byte) error, move func(fd, n int) error) {
	p := &outPipe{c: c, emit: emit, move: move, size: readBuf}
	if c.spec.MaxRead > 0 && c.spec.MaxRead < readBuf {
		p.size = c.spec.MaxRead
	}
	// The read buffer is taken from readBufs for a read and given back as
	// soon as its bytes were handed on (or the pipe was empty): a child
	// that writes nothing holds none, and 1 000 idle children do not keep
	// 128 MiB of buffers that Go must zero (and so make resident) when it
	// reuses them.
	defer func() { putReadBuf(p.buf) }()
	p.maxTake = p.size
	if move != nil {
		p.maxTake = moveMax
	}
	for {
		ok, err := c.window.waitBell(&pw.bell, pw.waitBell)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			pw.unkick() // kicked: ok is false, and the child is draining
			err = nil
		}
		if err != nil {
			c.logf("child %d: %v; the rest of its output is not read", c.pid, err)
			return
		}
		if !ok {
			// Kicked without credit: the child is gone (a deadline is only
			// set after the kick). A pipe with nothing left in it is
			// finished; one with data waits for credit.
			if !pw.hasData() {
				return
			}
			c.window.waitCredit()
		}
		var res readResult
		for done := false; !done && err == nil; {
			if res, done = p.read(pw.fd); !done {
				err = pw.wait()
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			pw.unkick()
			continue
		}
		if err != nil {
			c.logf("child %d: %v; the rest of its output is not read", c.pid, err)
			return
		}
		if !p.handOn(res, pw.fd) {
			return
		}
	}
}

// read takes credit and reads what it allows from the pipe fd, or (for a
// Mover) only sees how much the pipe holds. done false: wait until the
// pipe is readable (or supervise wakes the pump) and call again.
func (p *outPipe) read(fd int) (res readResult, done bool) {
	c := p.c
	credit := c.window.take(p.maxTake)
	if credit == 0 {
		return readNoCred, true
	}
	if p.move != nil && !c.lost.Load() {
		// What the pipe holds goes on without a copy. An empty pipe
		// (EOF, or nothing yet) takes the read below.
		if avail, err := rawio.Queued(fd); err == nil && avail > 0 {
			p.n = min(avail, credit)
			c.window.giveBack(credit - p.n)
			return readMove, true
		}
	}
	// Whether the child was gone must be known before the read: an empty
	// pipe only means "finished" if the child had already exited when it
	// was read. Loaded after the read, a child that wrote and exited in
	// between would lose that output.
	gone := c.draining.Load()
	if p.buf == nil {
		p.buf = getReadBuf()
	}
	n, rerr := rawio.Read(fd, p.buf[:min(credit, p.size)])
	p.n = n
	switch {
	case rerr == unix.EAGAIN || rerr == unix.EINTR:
		putReadBuf(p.buf)
		p.buf = nil
		c.window.giveBack(credit)
		if rerr == unix.EAGAIN {
			if gone {
				return readEmpty, true
			}
			if testHookEmptyRead != nil {
				testHookEmptyRead(c)
			}
		}
		return readFailed, false
	case rerr != nil:
		c.window.giveBack(credit)
		return readFailed, true
	case n == 0:
		c.window.giveBack(credit)
		return readEOF, true
	default:
		c.window.giveBack(credit - n)
		return readData, true
	}
}

// handOn gives what read found to the sink; false: the pipe is finished.
func (p *outPipe) handOn(res readResult, fd int) bool {
	c := p.c
	switch res {
	case readData:
		if c.lost.Load() {
			return true
		}
		err := p.emit(p.buf[:p.n])
		putReadBuf(p.buf)
		p.buf = nil
		if err != nil {
			c.lose(err)
		}
	case readMove:
		if merr := p.move(fd, p.n); merr != nil {
			c.lose(merr)
		}
	case readNoCred:
	default:
		return false
	}
	return true
}

// testHookEmptyRead, when set by a test, runs when a read of a live child's
// pipe found it empty, before the reader waits.
var testHookEmptyRead func(c *Child)

// lose is called when the sink fails: nobody will read the output any more,
// so the child is terminated and the rest of its output discarded.
func (c *Child) lose(err error) {
	if c.lost.CompareAndSwap(false, true) {
		c.lostErr = err
		if !errors.Is(err, syscall.EPIPE) { // EPIPE: the owner is gone, as it may be
			c.logf("output of child %d cannot be delivered (%v); terminating it", c.pid, err)
		}
		c.window.Close()
		c.Terminate()
	}
}
