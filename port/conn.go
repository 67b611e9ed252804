// Package port is ps_port's side of an Erlang port, the codecs of port
// mode (docs/protocol.md): the {packet,4} protocol for one child (Serve,
// serve.go) or for many behind one port (ServeShared: shared.go, and
// sharedopts.go for the options of an open), and MuonTrap's raw byte
// protocol (ServeRaw and RawSink, raw.go; RawOutput, rawout.go). Conn
// (conn.go) writes the frames, splicing a child's output into the port
// where it can. Each child is a host.Session whose host.Output is this
// package's; how the child is started and contained is host's.
package port

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/internal/limits"
	"github.com/protonstream/ps_port/internal/rawio"
	"golang.org/x/sys/unix"
)

// MaxFrame is the largest frame ps_port accepts from the owner (the shim
// reads the same table, internal/limits).
var MaxFrame = limits.MaxFrame

// ErrFrameTooLarge is a length prefix above MaxFrame.
var ErrFrameTooLarge = fmt.Errorf("frame longer than %d bytes", MaxFrame)

// Conn is ps_port's end of a {packet,4} port: frames are read from r and
// written to the file descriptor of w. Writes are serialized; reads must come
// from one goroutine.
type Conn struct {
	r      *bufio.Reader
	w      *os.File
	wrc    syscall.RawConn
	wfd    int
	polled bool       // w is in Go's poller: a full port parks the goroutine
	mu     sync.Mutex // guards hdr and the order of frames on w
	hdr    []byte
	lenBuf [4]byte

	noSplice bool   // splice(2) into w failed: move copies (guarded by mu)
	copyBuf  []byte // move's buffer when it copies (guarded by mu)

	room *roomWait // shared mode: output frames wait for room (room.go); nil: they do not

	protocolErr atomic.Bool // the owner sent something ps_port cannot take
	finished    atomic.Bool // the exit frame has been sent
}

// NewConn returns a Conn reading frames from r and writing them to w. When
// w is a pipe it is enlarged to 1 MiB (where allowed), so a large frame can
// be written whole before the owner wakes up to read it. When w is in Go's
// poller (a non-blocking pipe, see PortFiles), a writer that finds the port
// full waits there, not in a thread blocked in poll(2).
//
// Frames are read through a 4 KiB buffer: a small frame's length prefix
// and its term (and, when the owner is quick, the next frames) take one
// read(2); the rest of a larger frame is read straight into it.
func NewConn(r io.Reader, w *os.File) *Conn {
	c := &Conn{w: w, hdr: make([]byte, 0, 64)}
	if f, ok := r.(*os.File); ok {
		r = polledReader(f)
	}
	if r != nil {
		c.r = bufio.NewReaderSize(r, 4<<10)
	}
	// Not w.Fd(): it would put a non-blocking w back into blocking mode.
	c.wrc, _ = w.SyscallConn()
	if c.wrc != nil {
		c.wrc.Control(func(fd uintptr) { c.wfd = int(fd) })
	} else {
		c.wfd = int(w.Fd())
	}
	c.polled = c.wrc != nil && w.SetWriteDeadline(time.Time{}) == nil
	unix.FcntlInt(uintptr(c.wfd), unix.F_SETPIPE_SZ, 1<<20) // EBADF/EINVAL when not a pipe: fine
	return c
}

// PortFiles returns ps_port's standard input and output, the port's two
// ends, for NewConn. Pipes and sockets are switched to non-blocking mode and
// opened again as files in Go's poller, so that waiting for the owner's
// next frame, or for room in a full port, parks a goroutine instead of
// blocking a thread in a system call (which Go's sysmon thread then has to
// watch, waking every 20 µs). A terminal or a file is left as it is.
func PortFiles() (in, out *os.File) {
	return pollable(os.Stdin), pollable(os.Stdout)
}

func pollable(f *os.File) *os.File {
	var st unix.Stat_t
	fd := int(f.Fd())
	if unix.Fstat(fd, &st) != nil {
		return f
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFIFO && t != unix.S_IFSOCK {
		return f
	}
	if unix.SetNonblock(fd, true) != nil {
		return f
	}
	return os.NewFile(uintptr(fd), f.Name())
}

// polledReader returns f as a reader that, when f is in Go's poller, reads
// with rawio.Read and waits for data in the poller; f itself otherwise.
func polledReader(f *os.File) io.Reader {
	rc, err := f.SyscallConn()
	if err != nil || f.SetReadDeadline(time.Time{}) != nil {
		return f
	}
	return &rawReader{rc: rc}
}

// rawReader reads a non-blocking file in Go's poller.
type rawReader struct{ rc syscall.RawConn }

func (r *rawReader) Read(p []byte) (int, error) {
	var n int
	var err error
	if rerr := r.rc.Read(func(fd uintptr) bool {
		for {
			n, err = rawio.Read(int(fd), p)
			if err != unix.EINTR {
				return err != unix.EAGAIN
			}
		}
	}); rerr != nil {
		return 0, rerr
	}
	switch {
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// ReadFrame reads one frame and returns its payload (the term's bytes).
// It returns io.EOF when the port was closed between frames.
func (c *Conn) ReadFrame() ([]byte, error) {
	if c.r == nil {
		return nil, io.EOF
	}
	if _, err := io.ReadFull(c.r, c.lenBuf[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("port closed inside a frame's length prefix: %w", err)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(c.lenBuf[:])
	if uint64(n) > uint64(MaxFrame) {
		return nil, fmt.Errorf("%w: length prefix says %d", ErrFrameTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return nil, fmt.Errorf("port closed inside a %d-byte frame: %w", n, err)
	}
	return b, nil
}

// Send writes term t as one frame.
func (c *Conn) Send(t etf.Term) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := etf.AppendTerm(append(c.hdr[:0], 0, 0, 0, 0), t)
	if err != nil {
		return fmt.Errorf("encoding %v: %w", t, err)
	}
	c.hdr = b[:0]
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return c.writev(b, nil)
}

// SendBinary writes the frame {tag, p} with one writev, without copying p.
func (c *Conn) SendBinary(tag etf.Atom, p []byte) error { return c.sendBinary(tag, noID, p) }

// noID marks a frame without a child id ({packet,4} mode with one child).
const noID = -1

// header appends the frame header of {tag, <<n bytes>>}, or of {tag, id,
// <<n bytes>>} when id is not noID, to c.hdr and returns it; c.mu is held.
func (c *Conn) header(tag etf.Atom, id int64, n int) []byte {
	var h []byte
	if id == noID {
		h = etf.AppendBinaryTupleHeader(append(c.hdr[:0], 0, 0, 0, 0), tag, n)
	} else {
		h = etf.AppendIDBinaryTupleHeader(append(c.hdr[:0], 0, 0, 0, 0), tag, int32(id), n)
	}
	c.hdr = h[:0]
	binary.BigEndian.PutUint32(h, uint32(len(h)-4+n))
	return h
}

func (c *Conn) sendBinary(tag etf.Atom, id int64, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writev(c.header(tag, id, len(p)), p)
}

// MoveStdout sends {stdout, <n bytes from fd>}; with MoveStderr it makes
// Conn a procctl.Mover.
func (c *Conn) MoveStdout(fd, n int) error { return c.move("stdout", noID, fd, n) }

// MoveStderr sends {stderr, <n bytes from fd>}.
func (c *Conn) MoveStderr(fd, n int) error { return c.move("stderr", noID, fd, n) }

// move writes the frame {tag, p} (or {tag, id, p}) where p is the next n
// bytes waiting in the pipe fd: the header, then the payload spliced from
// that pipe into the port's, so the bytes are never copied through this
// program. Where splice cannot be used, they are read and written.
//
// In shared mode the frame first waits, without the lock, for the port's
// pipe to have room for all of it (roomWait, room.go). The port's lock is
// then held throughout, so move only ever waits for the port to take
// bytes, never for the child's pipe: the caller saw n bytes in it and is
// its only reader. A pipe found holding less (which would leave the frame,
// and the port, waiting on a child) is an error.
func (c *Conn) move(tag etf.Atom, id int64, fd, n int) error {
	if c.room != nil {
		c.room.enter(n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= smallMove {
		return c.moveSmall(tag, id, fd, n)
	}
	if err := c.writev(c.header(tag, id, n), nil); err != nil {
		return err
	}
	for n > 0 {
		if c.noSplice {
			k, err := c.copyOut(fd, n)
			if err != nil {
				return err
			}
			n -= k
			continue
		}
		var m int
		var err error
		werr := c.toPort(func(wfd int) bool {
			m, err = rawio.Splice(fd, wfd, n)
			// EAGAIN: either the port's pipe is full or the child's is
			// empty; only the first is a reason to wait.
			return err != unix.EAGAIN || !pipeHolds(fd)
		})
		switch {
		case werr != nil:
			return werr
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return fmt.Errorf("the child's pipe holds nothing of the %d bytes still due in a frame", n)
		case err == unix.EINVAL || err == unix.ENOSYS:
			c.noSplice = true
		case err != nil:
			return fmt.Errorf("writing to the port: %w", err)
		case m == 0:
			return fmt.Errorf("the child's pipe ended %d bytes short of a frame", n)
		default:
			n -= m
		}
	}
	return nil
}

// smallMove is the largest frame move copies instead of splicing.
const smallMove = 64 << 10

// moveSmall reads the n bytes and writes the whole frame with one writev.
// Written apart, the header alone wakes the owner's VM for a frame it
// cannot take yet, and the payload wakes it again: for small frames that
// second wake-up costs more than the copy (a round trip through cat is
// mostly wake-ups). c.mu is held.
func (c *Conn) moveSmall(tag etf.Atom, id int64, fd, n int) error {
	buf := c.copyBuffer()[:n]
	for got := 0; got < n; {
		k, err := readIn(fd, buf[got:])
		if err != nil {
			return err
		}
		got += k
	}
	return c.writev(c.header(tag, id, n), buf)
}

// pipeHolds reports whether the pipe fd has bytes to read.
func pipeHolds(fd int) bool {
	avail, err := rawio.Queued(fd)
	return err == nil && avail > 0
}

// toPort calls write with the port's fd until it returns true; it returns
// false when the port's pipe is full (EAGAIN), and is called again once the
// port is writable. c.mu is held.
func (c *Conn) toPort(write func(wfd int) bool) error {
	if c.polled {
		if err := c.wrc.Write(func(fd uintptr) bool { return write(int(fd)) }); err != nil {
			return fmt.Errorf("writing to the port: %w", err)
		}
		return nil
	}
	for !write(c.wfd) {
		if err := waitWritable(c.wfd); err != nil {
			return err
		}
	}
	return nil
}

// copyOut reads up to n bytes from fd and writes them to the port.
func (c *Conn) copyOut(fd, n int) (int, error) {
	buf := c.copyBuffer()
	k, err := readIn(fd, buf[:min(n, len(buf))])
	if err != nil {
		return 0, err
	}
	return k, c.writev(buf[:k], nil)
}

// copyBuffer is move's buffer when it copies; c.mu is held.
func (c *Conn) copyBuffer() []byte {
	if c.copyBuf == nil {
		c.copyBuf = make([]byte, smallMove)
	}
	return c.copyBuf
}

// readIn reads at most len(p) bytes from the child's pipe fd, which holds
// some: see move, a frame never waits for the child.
func readIn(fd int, p []byte) (int, error) {
	for {
		k, err := rawio.Read(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, fmt.Errorf("the child's pipe holds nothing of the %d bytes still due in a frame", len(p))
		case err != nil:
			return 0, fmt.Errorf("reading the child's output: %w", err)
		case k == 0:
			return 0, fmt.Errorf("the child's pipe ended %d bytes short of a frame", len(p))
		}
		return k, nil
	}
}

// writev writes a then b completely.
func (c *Conn) writev(a, b []byte) error {
	iov := [][]byte{a, b}
	for len(iov[0])+len(iov[1]) > 0 {
		var n int
		var err error
		werr := c.toPort(func(wfd int) bool {
			if c.polled {
				n, err = rawio.Writev(wfd, iov[0], iov[1])
			} else {
				// A port that is not in the poller may be blocking (raw
				// mode's stdout): the write must not hold a P while it waits.
				n, err = unix.Writev(wfd, iov)
			}
			return err != unix.EAGAIN
		})
		if werr != nil {
			return werr
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing to the port: %w", err)
		}
		for i := range iov {
			k := min(n, len(iov[i]))
			iov[i] = iov[i][k:]
			n -= k
		}
	}
	return nil
}

func waitWritable(fd int) error { return waitFor(fd, unix.POLLOUT) }

// waitFor blocks until fd is ready for events (or in error).
func waitFor(fd int, events int16) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		_, err := unix.Poll(fds, -1)
		if err != unix.EINTR {
			return err
		}
	}
}

// Stdout sends {stdout, p}; with Stderr it makes Conn a procctl.Sink.
func (c *Conn) Stdout(p []byte) error { return c.SendBinary("stdout", p) }

// Stderr sends {stderr, p}.
func (c *Conn) Stderr(p []byte) error { return c.SendBinary("stderr", p) }
