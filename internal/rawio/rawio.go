// Package rawio holds the system calls of ps_port's hot paths on
// non-blocking file descriptors (the port's pipes, the children's stdin,
// stdout and stderr, node mode's distribution socket), made without
// telling Go's scheduler.
//
// A system call made through package syscall or x/sys/unix enters the
// scheduler's "in syscall" state, and the first one after the process was
// idle wakes the runtime's sysmon thread, which then polls every 20 µs for
// a while. A round trip through a child (a frame in, a write to its stdin,
// its echo spliced out) is a handful of such calls after an idle spell, so
// every round trip woke sysmon: about one context switch and a fifth of
// ps_port's CPU time per round trip on a 2-core machine. The calls here
// never block (every descriptor they are used on is non-blocking, and a
// caller that gets EAGAIN waits in Go's poller), so they need none of that.
package rawio

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read is read(2) on a non-blocking fd.
func Read(fd int, p []byte) (int, error) { return rw(unix.SYS_READ, fd, p) }

// Write is write(2) on a non-blocking fd.
func Write(fd int, p []byte) (int, error) { return rw(unix.SYS_WRITE, fd, p) }

func rw(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Ring adds one to the counter of the eventfd fd, which wakes whoever waits
// for it to be readable. EAGAIN (the counter is full) is ignored: the
// eventfd is readable anyway.
func Ring(fd int) { Write(fd, one[:]) }

var one = [8]byte{1} // the counter is a native uint64; any value but 0 rings

// Silence reads the counter of the eventfd fd back to 0; it reports whether
// it had been rung.
func Silence(fd int) bool {
	var b [8]byte
	for {
		n, err := Read(fd, b[:])
		if err != unix.EINTR {
			return err == nil && n == 8
		}
	}
}

// Writev is writev(2) of a then b on a non-blocking fd.
func Writev(fd int, a, b []byte) (int, error) {
	var iov [2]unix.Iovec
	cnt := 0
	for _, p := range [][]byte{a, b} {
		if len(p) > 0 {
			iov[cnt].Base = &p[0]
			iov[cnt].SetLen(len(p))
			cnt++
		}
	}
	if cnt == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(cnt))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Splice moves up to n bytes from the pipe in to out with
// SPLICE_F_MOVE|SPLICE_F_NONBLOCK: neither pipe is waited for.
func Splice(in, out, n int) (int, error) {
	m, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(m), nil
}

// Queued is the number of bytes waiting to be read in the pipe fd
// (ioctl TIOCINQ, which is FIONREAD).
func Queued(fd int) (int, error) {
	var v int32
	_, _, e := syscall.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCINQ, uintptr(unsafe.Pointer(&v)))
	return int(v), errnoErr(e)
}

// SendMore is send(2) of p on the non-blocking socket fd with MSG_MORE (the
// kernel holds the bytes for what follows, e.g. a splice) and MSG_NOSIGNAL.
func SendMore(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		unix.MSG_MORE|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// EpollArm is epoll_ctl(EPOLL_CTL_MOD) of fd in the epoll instance ep, for
// events.
func EpollArm(ep, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), unix.EPOLL_CTL_MOD, uintptr(fd),
		uintptr(unsafe.Pointer(&ev)), 0, 0)
	return errnoErr(e)
}

// EpollPoll is epoll_pwait(2) on ep with a timeout of 0: the number of
// ready events (0 or 1: at most one is taken) and that event's fd (the Fd
// it was registered with), without waiting.
func EpollPoll(ep int) (n, fd int, err error) {
	var ev unix.EpollEvent
	r, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&ev)), 1, 0, 0, 0)
	if e != 0 {
		return 0, 0, e
	}
	return int(r), int(ev.Fd), nil
}
