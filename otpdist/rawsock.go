package otpdist

import (
	"io"
	"syscall"

	"github.com/ergo-services/ergo/lib"
	"github.com/protonstream/ps_port/internal/rawio"
)

// A plain TCP connection (not TLS) is read and written with internal/rawio's
// system calls on its non-blocking socket, waiting in Go's poller when it
// has nothing to give or no room: not through package net, whose calls
// enter the scheduler's syscall state and so wake Go's sysmon thread after
// an idle spell. An owner's round trip through a child (its command read
// from the socket, the echo written to it) then wakes no thread but the
// ones that do the work (internal/rawio's package comment).

// rawSocket is conn's raw connection, or nil when it has none (TLS).
func rawSocket(conn lib.NetReadWriter) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawRead reads into p as net.Conn's Read does: at least one byte, io.EOF
// at the end, os.ErrDeadlineExceeded past the read deadline.
func rawRead(rc syscall.RawConn, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var opErr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, opErr = rawio.Read(int(fd), p)
			switch opErr {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case opErr != nil:
		return 0, opErr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// rawWrite writes all of p, waiting for room in the poller.
func rawWrite(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var opErr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			k, e := rawio.Write(int(fd), p[n:])
			switch e {
			case nil:
				n += k
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			opErr = e
			return true
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	return n, err
}
