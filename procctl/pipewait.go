package procctl

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/internal/rawio"
	"golang.org/x/sys/unix"
)

// pipeWait is how a pump waits for its output pipe to be readable without
// that pipe being in Go's poller.
//
// Go's poller holds every descriptor edge-triggered, and since Linux 5.14
// a pipe that has ever been polled signals every write to it, not only the
// first one into an empty pipe. A pipe in the poller therefore woke
// ps_port once per write of the child (every 4–8 KiB of a streaming
// `head`), also while its pump was busy or waiting for credit rather than
// for the pipe: about eight context switches per frame, most of ps_port's
// CPU time. Here the pipe sits alone in a private epoll instance with
// EPOLLONESHOT, armed only while the pump waits for it, and that epoll
// descriptor is what Go's poller watches: a write into a pipe nobody waits
// for costs the child a check of a disarmed entry and wakes nobody.
//
// The same epoll instance holds the pump's bell (see Window.waitBell), so
// that waiting for credit parks the pump in the poller too.
type pipeWait struct {
	fd   int      // the pipe's read end (non-blocking, not in Go's poller)
	ep   *os.File // the private epoll instance, in Go's poller
	rc   syscall.RawConn
	bell bell // its eventfd, level-triggered in ep
}

// newPipeWait returns a pipeWait for the non-blocking pipe fd.
func newPipeWait(fd int) (*pipeWait, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll for an output pipe: %w", err)
	}
	// Added disarmed (no events but the oneshot flag): wait arms it.
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("epoll for an output pipe: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd for an output pipe: %w", err)
	}
	ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(ep)
		unix.Close(efd)
		return nil, fmt.Errorf("epoll for an output pipe: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		unix.Close(efd)
		return nil, fmt.Errorf("epoll for an output pipe: %w", err)
	}
	f := os.NewFile(uintptr(ep), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		unix.Close(efd)
		return nil, fmt.Errorf("epoll for an output pipe: %w", err)
	}
	return &pipeWait{fd: fd, ep: f, rc: rc, bell: bell{fd: efd}}, nil
}

// wait parks the calling goroutine until the pipe is readable (data, or
// its write end closed), or kick was called (os.ErrDeadlineExceeded).
func (w *pipeWait) wait() error {
	var perr error
	err := w.rc.Read(func(ep uintptr) bool {
		// Level-triggered: arming a pipe that already holds data makes
		// the entry ready at once, so nothing written since the caller
		// found it empty is missed.
		if perr = rawio.EpollArm(int(ep), w.fd, unix.EPOLLIN|unix.EPOLLONESHOT); perr != nil {
			return true
		}
		for {
			n, efd, err := rawio.EpollPoll(int(ep))
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				perr = err
				return true
			case n == 0:
				return false
			case efd == w.bell.fd:
				w.silence() // a late ring; the pipe's entry may be ready too
				continue
			}
			return true
		}
	})
	if err != nil {
		return err
	}
	if perr != nil {
		return fmt.Errorf("waiting for an output pipe: %w", perr)
	}
	return nil
}

// waitBell parks the calling goroutine until the bell rings, or kick was
// called (os.ErrDeadlineExceeded).
func (w *pipeWait) waitBell() error {
	return w.rc.Read(func(uintptr) bool { return w.silence() })
}

// silence resets the bell; it reports whether it had rung.
func (w *pipeWait) silence() bool { return rawio.Silence(w.bell.fd) }

// kick wakes a goroutine parked in wait (and makes the next wait return
// at once) until unkick.
func (w *pipeWait) kick() { w.ep.SetReadDeadline(time.Now()) }

// unkick undoes kick.
func (w *pipeWait) unkick() { w.ep.SetReadDeadline(time.Time{}) }

// close closes the epoll instance and the bell (not the pipe).
func (w *pipeWait) close() {
	w.ep.Close()
	unix.Close(w.bell.fd)
}

// hasData reports whether a read from the pipe would return data now.
func (w *pipeWait) hasData() bool {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
}
