package otpdist

import (
	"fmt"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/internal/rawio"
	"golang.org/x/sys/unix"
)

// A child's output can go from its pipe to the owner's connection without
// passing through ps_port's memory: the packet's head is written with
// MSG_MORE and the bytes are spliced from the pipe into the socket
// (node's child.move, procctl.Mover). That takes a plain TCP connection
// (not TLS) at a packet boundary; otherwise the caller reads the bytes and
// sends them as before.

// MoveDirect sends a pass-through packet made of head (its length prefix
// included) and the next n bytes waiting in the pipe fd, which must hold
// at least n bytes. It returns false, having consumed nothing, when the
// bytes cannot be spliced now (TLS, or ergo is in the middle of a packet):
// the caller then reads them and uses WriteDirect, which keeps the order.
// An error after the head went out leaves the stream cut: the connection
// is dropped.
func (c *distConn) MoveDirect(head []byte, fd, n int) (bool, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corks > 0 || c.wbody > 0 || len(c.whead) > 0 || len(c.frag) > 0 || len(c.direct) > 0 {
		return false, nil
	}
	tc, ok := c.NetReadWriter.(*tickConn)
	if !ok {
		return false, nil
	}
	moved, err := tc.splice(head, fd, n)
	if moved {
		c.stats.packetsOut.Add(1)
	}
	if err != nil {
		return moved, c.fail(err)
	}
	return moved, nil
}

// splice writes head and then n bytes from the pipe fd to the socket, as
// one packet (no tick can come between them); false when the connection
// is not a socket splice can write to.
func (c *tickConn) splice(head []byte, fd, n int) (bool, error) {
	sc, ok := c.NetReadWriter.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body > 0 || c.hn > 0 || c.closed {
		return false, nil
	}
	err = spliceOut(rc, head, fd, n)
	c.lastWrite = time.Now()
	if err != nil {
		c.closed = true
	}
	return true, err
}

// spliceOut writes head (flagged MSG_MORE, so the kernel sends it with
// what follows) and splices n bytes from the pipe fd into the socket rc,
// waiting while the socket's buffer is full.
func spliceOut(rc syscall.RawConn, head []byte, fd, n int) error {
	var opErr error
	err := rc.Write(func(sfd uintptr) bool {
		for len(head) > 0 {
			k, err := rawio.SendMore(int(sfd), head)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil:
				opErr = fmt.Errorf("writing a packet's head: %w", err)
				return true
			}
			head = head[k:]
		}
		for n > 0 {
			k, err := rawio.Splice(fd, int(sfd), n)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				// The socket is full, or the pipe empty; only the first
				// is worth waiting for (the caller saw n bytes in it).
				if avail, e := rawio.Queued(fd); e != nil || avail == 0 {
					opErr = fmt.Errorf("the child's pipe holds nothing of the %d bytes still due in a packet", n)
					return true
				}
				return false
			case err != nil:
				opErr = fmt.Errorf("splicing output into the connection: %w", err)
				return true
			case k == 0:
				opErr = fmt.Errorf("the child's pipe ended with %d bytes still due in a packet", n)
				return true
			}
			n -= k
		}
		return true
	})
	if err != nil {
		return err
	}
	return opErr
}
