// Package port is ps_port's side of an Erlang port: the {packet,4} protocol
// of docs/protocol.md (Serve) and MuonTrap's raw byte protocol (ServeRaw).
// It moves bytes between a port and a procctl.Child; how the child is
// started and contained is decided by the caller.
package port

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/protonstream/ps_port/etf"
	"golang.org/x/sys/unix"
)

// MaxFrame is the largest frame ps_port accepts from the owner.
const MaxFrame = 64 << 20

// ErrFrameTooLarge is a length prefix above MaxFrame.
var ErrFrameTooLarge = fmt.Errorf("frame longer than %d bytes", MaxFrame)

// DefaultStdinLimit is how many bytes may wait in the child's stdin queue
// before further {command, _} frames are refused with {error,
// stdin_overflow, _}.
const DefaultStdinLimit = 16 << 20

// Conn is ps_port's end of a {packet,4} port: frames are read from r and
// written to the file descriptor of w. Writes are serialized; reads must come
// from one goroutine.
type Conn struct {
	// StdinLimit bounds the child's stdin queue (see DefaultStdinLimit);
	// 0 means unbounded.
	StdinLimit int

	r      io.Reader
	w      *os.File
	wfd    int
	mu     sync.Mutex // guards hdr and the order of frames on w
	hdr    []byte
	lenBuf [4]byte

	protocolErr atomic.Bool // the owner sent something ps_port cannot take
	finished    atomic.Bool // the exit frame has been sent
}

// NewConn returns a Conn reading frames from r and writing them to w.
func NewConn(r io.Reader, w *os.File) *Conn {
	return &Conn{r: r, w: w, wfd: int(w.Fd()), hdr: make([]byte, 0, 64), StdinLimit: DefaultStdinLimit}
}

// ReadFrame reads one frame and returns its payload (the term's bytes).
// It returns io.EOF when the port was closed between frames.
func (c *Conn) ReadFrame() ([]byte, error) {
	if _, err := io.ReadFull(c.r, c.lenBuf[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("port closed inside a frame's length prefix: %w", err)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(c.lenBuf[:])
	if n > MaxFrame {
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
func (c *Conn) SendBinary(tag etf.Atom, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := etf.AppendBinaryTupleHeader(append(c.hdr[:0], 0, 0, 0, 0), tag, len(p))
	c.hdr = h[:0]
	binary.BigEndian.PutUint32(h, uint32(len(h)-4+len(p)))
	return c.writev(h, p)
}

// writev writes a then b completely.
func (c *Conn) writev(a, b []byte) error {
	iov := [][]byte{a, b}
	for len(iov[0])+len(iov[1]) > 0 {
		n, err := unix.Writev(c.wfd, iov)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			if err := waitWritable(c.wfd); err != nil {
				return err
			}
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

func waitWritable(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
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
