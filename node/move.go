package node

import (
	"fmt"

	"github.com/ergo-services/ergo/etf"
	"github.com/protonstream/ps_port/internal/rawio"
	"github.com/protonstream/ps_port/otpdist"
	"golang.org/x/sys/unix"
)

// A child is a procctl.Mover: when its pipe holds output, the pump hands
// over the pipe and a byte count instead of a copy. When nothing of the
// child's waits to go out ahead of those bytes, the pump's goroutine sends
// them itself (no hand-off to the sender), spliced from the pipe into the
// owner's connection where it can (otpdist/splice.go: no copy through ps_port).
// Otherwise the bytes are read and queued as Stdout would.

// MoveStdout implements procctl.Mover.
func (c *child) MoveStdout(fd, n int) error { return c.move(atomData, fd, n) }

// MoveStderr implements procctl.Mover.
func (c *child) MoveStderr(fd, n int) error { return c.move(atomErrorData, fd, n) }

func (c *child) move(tag etf.Atom, fd, n int) error {
	q := &c.out
	q.mu.Lock()
	if q.discard {
		q.mu.Unlock()
		return skipPipe(fd, n)
	}
	if q.running || len(q.items) > 0 {
		// Something goes out ahead of these bytes: they wait their turn.
		q.mu.Unlock()
		return c.moveQueued(tag, fd, n)
	}
	q.running = true // this goroutine is the sender until release
	q.mu.Unlock()
	err := c.moveNow(tag, fd, n)
	q.release()
	return err
}

// smallMove is the most bytes moveNow reads and writes with their head in
// one write(2) rather than splice: for a few bytes (a line, an echo) one
// system call beats two (the head's and the splice's).
const smallMove = 16 << 10

// moveQueued reads the n bytes and queues them in messages of at most
// otpdist.MaxChunk bytes, each with headroom before it (as emit does).
func (c *child) moveQueued(tag etf.Atom, fd, n int) error {
	var items []outItem
	for n > 0 {
		k := min(n, otpdist.MaxChunk)
		buf, err := readPipe(fd, k, headroom)
		if err != nil {
			return err
		}
		items = append(items, outItem{kind: outData, tag: tag, data: buf[headroom:], buf: buf})
		n -= k
	}
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	if c.out.discard {
		return nil
	}
	for _, it := range items {
		c.out.add(it)
	}
	return nil
}

// moveNow sends the n bytes as the child's sender (c.out is held): in one
// message spliced or written straight to the owner's connection, or in
// messages of at most otpdist.MaxChunk bytes through ergo.
func (c *child) moveNow(tag etf.Atom, fd, n int) error {
	if c.ownerGone.Load() {
		return skipPipe(fd, n)
	}
	dc, ok := c.dist()
	switch {
	case ok && dc == nil: // the owner's connection is gone
		return skipPipe(fd, n)
	case ok:
		moved := false
		if n > smallMove {
			var err error
			moved, err = dc.MoveDirect(c.dataHead(tag, n), fd, n)
			if err != nil {
				return fmt.Errorf("distribution to %s: %w", c.dest.Node, err)
			}
		}
		if !moved {
			buf, err := readPipe(fd, n, headroom)
			if err != nil {
				return err
			}
			c.sendData(tag, buf[headroom:], buf)
		}
		if c.flow != nil {
			c.flow.sent(n, true)
		}
		return nil
	}
	for n > 0 {
		k := min(n, otpdist.MaxChunk)
		buf, err := readPipe(fd, k, 0)
		if err != nil {
			return err
		}
		c.sendData(tag, buf, nil)
		if c.flow != nil {
			c.flow.sent(k, false)
		}
		n -= k
	}
	return nil
}

// readPipe reads exactly n bytes from the non-blocking pipe fd, which
// holds at least n, into a new buffer after room bytes.
func readPipe(fd, n, room int) ([]byte, error) {
	buf := make([]byte, room+n)
	for got := room; got < len(buf); {
		k, err := rawio.Read(fd, buf[got:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, fmt.Errorf("reading the child's pipe: %w", err)
		case k == 0:
			return nil, fmt.Errorf("the child's pipe ended %d bytes short of what it held", len(buf)-got)
		}
		got += k
	}
	return buf, nil
}

// skipPipe reads and drops n bytes from the pipe fd (nobody takes them).
func skipPipe(fd, n int) error {
	var scratch [16 << 10]byte
	for n > 0 {
		k, err := rawio.Read(fd, scratch[:min(n, len(scratch))])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("reading the child's pipe: %w", err)
		case k == 0:
			return nil
		}
		n -= k
	}
	return nil
}
