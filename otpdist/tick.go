package otpdist

import (
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/ergo-services/ergo/lib"
)

// DefaultNetTickTime is OTP's default net_ticktime.
const DefaultNetTickTime = 60 * time.Second

// tickConn gives a distribution connection OTP's net_ticktime behaviour,
// which ergo hard-codes for a ticktime of 60 s (a keepalive every 15 s, a
// peer dropped after 60 s of silence):
//
//   - when nothing was written for a quarter of the tick time, it sends a
//     tick (an empty packet), so a peer whose net_ticktime is that tick time
//     keeps the connection while both sides are idle;
//   - a read that waits longer than the tick time fails, so ergo drops a
//     peer it has not heard from (ticks included) for that long, and its
//     children's owners are taken for down.
//
// It sits directly on the socket, under distConn. Writes come from one
// writer at a time (ergo's flusher or distConn) cut anywhere, so it follows
// the 4-byte length prefixes to send ticks only between two packets.
type tickConn struct {
	lib.NetReadWriter
	raw     syscall.RawConn // the socket's, for rawRead and rawWrite; nil over TLS
	timeout time.Duration

	mu        sync.Mutex
	lastWrite time.Time
	hdr       [4]byte
	hn        int // bytes of the current packet's length prefix seen
	body      int // bytes of the current packet still to come
	closed    bool
}

var tickPacket = []byte{0, 0, 0, 0}

var errTickClosed = errors.New("connection closed")

// newTickConn wraps conn and starts its ticker; timeout is the tick time.
func newTickConn(conn lib.NetReadWriter, timeout time.Duration) *tickConn {
	c := &tickConn{NetReadWriter: conn, raw: rawSocket(conn), timeout: timeout, lastWrite: time.Now()}
	go c.ticker()
	return c
}

// Read implements io.Reader: each read waits at most the tick time.
func (c *tickConn) Read(p []byte) (int, error) {
	c.NetReadWriter.SetReadDeadline(time.Now().Add(c.timeout))
	var n int
	var err error
	if c.raw != nil {
		n, err = rawRead(c.raw, p)
	} else {
		n, err = c.NetReadWriter.Read(p)
	}
	if err != nil {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
	}
	return n, err
}

// SetReadDeadline ignores ergo's deadline (4 times its 15 s keepalive);
// Read sets the tick time's.
func (c *tickConn) SetReadDeadline(time.Time) error { return nil }

// Write implements io.Writer and follows the packet boundaries.
func (c *tickConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.write(p)
	c.lastWrite = time.Now()
	for q := p[:n]; len(q) > 0; {
		if c.body > 0 {
			k := min(c.body, len(q))
			c.body -= k
			q = q[k:]
			continue
		}
		k := copy(c.hdr[c.hn:], q)
		c.hn += k
		q = q[k:]
		if c.hn == 4 {
			c.body = int(binary.BigEndian.Uint32(c.hdr[:]))
			c.hn = 0
		}
	}
	if err != nil {
		c.closed = true
	}
	return n, err
}

// write writes p to the socket (rawsock.go when it is a plain one); c.mu
// is held.
func (c *tickConn) write(p []byte) (int, error) {
	if c.raw != nil {
		return rawWrite(c.raw, p)
	}
	return c.NetReadWriter.Write(p)
}

func (c *tickConn) ticker() {
	t := time.NewTicker(c.timeout / 8)
	defer t.Stop()
	for range t.C {
		if c.tick() != nil {
			return
		}
	}
}

// tick sends a tick when nothing was written for a quarter of the tick
// time and the stream is between two packets.
func (c *tickConn) tick() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errTickClosed
	}
	if time.Since(c.lastWrite) < c.timeout/4 || c.body > 0 || c.hn > 0 {
		return nil
	}
	_, err := c.write(tickPacket)
	c.lastWrite = time.Now()
	if err != nil {
		c.closed = true
	}
	return err
}
