package otpdist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/lib"
	ergonode "github.com/ergo-services/ergo/node"
	"github.com/protonstream/ps_port/internal/limits"
)

// distConn sits between the socket of a connection to an OTP peer and
// ergo. It converts
//
//   - the peer's pass-through packets (112, 131 Control, [131 Message])
//     into the distribution-header packets ergo reads (131 68 0 Control
//     [Message]), and ergo's packets back;
//   - UNLINK_ID into the old UNLINK and back (when both sides have
//     DFLAG_UNLINK_ID), answering and consuming UNLINK_ID_ACKs itself;
//   - the references ergo cut to 3 words back to the peer's long ones
//     (longrefs.go).
//
// Only the head of a packet is converted: its control message, and for
// ergo's packets the reply tag at the start of the message. The rest of the
// message passes unchanged and without being parsed.
//
// Reads come from ergo's one reading goroutine. Writes come from ergo's
// flusher, one at a time and cut anywhere (it buffers with bufio), from the
// acks the reader queues, and from children's senders (WriteDirect: whole
// packets node mode encoded itself); the last two go out between two of
// ergo's packets.
type distConn struct {
	lib.NetReadWriter // the socket
	unlinkID          bool
	refs              *refTable

	// read side
	rbuf     []byte // socket bytes not handled yet: rbuf[roff:]
	roff     int
	ready    []byte // converted bytes for ergo: ready[readyOff:]
	readyOff int
	rbody    int    // bytes of the current packet's message still to pass on
	rskip    int    // bytes of the current packet to throw away (too large: weigh.go)
	maxReq   int    // largest message taken (weigh.go); 0: limits.MaxRequestDefault
	rrefs    []span // scratch for walkTerms

	// SENDs handled on the reader (local.go). local is nil until ergo
	// serves the connection (and in tests that do not set it).
	local      ergonode.CoreRouter // the connection's router, inside countingRouter
	nodename   string              // this node's name: local processes' pids carry it
	decodeOpts etf.DecodeOptions   // as ergo decodes this peer's terms
	handed     uint64              // router calls owed by packets handed to ergo
	routed     atomic.Uint64       // router calls ergo has made (countingRouter)
	readerOff  bool                // ergo got a packet of unknown routing: no more

	// write side
	wmu      sync.Mutex
	whead    []byte   // start of a packet whose head is not complete yet
	wbody    int      // bytes of the current packet's message still to pass on
	scratch  []byte   // converted heads of the current Write
	segs     [][]byte // what the current Write sends
	injected [][]byte // packets (acks) to send at the next packet boundary
	corks    int      // Cork calls not yet undone: direct packets wait in direct
	direct   [][]byte // pieces of whole packets from WriteDirect, waiting for the same
	wrefs    []span
	out      []byte // segs put together
	nextID   uint64
	frag     []byte // a fragmented message being put together: 131 68 0 Control Message
	fragSeq  uint64
	fragBusy bool // frag went into segs of the current Write

	stats distStats

	// On a packet it cannot convert, distConn logs why and closes the
	// socket, so ergo drops the peer at once (a failed write alone only
	// stops ergo's sender, and the connection would hang).
	peer     string
	log      *log.Logger
	closer   io.Closer
	failOnce sync.Once
}

// distStats counts what the translation did (for tests and measurements).
type distStats struct {
	packetsIn, packetsOut      atomic.Uint64
	unlinkIDIn, unlinkIDAckOut atomic.Uint64
	unlinkIDOut, unlinkIDAckIn atomic.Uint64
	refsExpanded               atomic.Uint64
	onReader                   atomic.Uint64 // SENDs handled on the reader (local.go)
}

func newDistConn(conn lib.NetReadWriter, unlinkID bool, early []byte) *distConn {
	c := &distConn{NetReadWriter: conn, unlinkID: unlinkID, refs: newRefTable()}
	c.rbuf = append(make([]byte, 0, 64<<10), early...)
	return c
}

// fragmentUnit is ergo's FragmentationUnit: with the fragment header, every
// packet ergo writes stays under the 64 000 bytes that its flusher passes
// through its buffer.
const fragmentUnit = 63000

// MaxChunk is the most output one data message carries: with the message's
// pids, tags and headers (under 1 000 bytes even with 255-byte node names)
// it stays under fragmentUnit, so ergo sends it as one packet, which goes to
// the socket without being cut and glued again (writeFragment).
const MaxChunk = 62000

// maxCoalesce is the most a Write copies to send its pieces in one write.
const maxCoalesce = 256 << 10

var errPacket = errors.New("distribution packet")

func packetError(format string, a ...interface{}) error {
	return fmt.Errorf("%w: %s", errPacket, fmt.Sprintf(format, a...))
}

// fail reports err once and closes the socket; it returns err.
func (c *distConn) fail(err error) error {
	c.failOnce.Do(func() {
		if c.log != nil {
			c.log.Printf("distribution to %s: %v; dropping the connection", c.peer, err)
		}
		if c.closer != nil {
			c.closer.Close()
		}
	})
	return err
}

// Read implements io.Reader for ergo's reader. It never returns 0 bytes
// without an error (ergo takes that for a closed connection).
func (c *distConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.readyOff < len(c.ready) {
			n := copy(p, c.ready[c.readyOff:])
			c.readyOff += n
			if c.readyOff == len(c.ready) {
				c.ready, c.readyOff = c.ready[:0], 0
			}
			return n, nil
		}
		if c.rskip > 0 {
			if err := c.skip(); err != nil {
				return 0, err
			}
			continue
		}
		if c.rbody > 0 {
			if c.roff < len(c.rbuf) {
				n := min(c.rbody, len(c.rbuf)-c.roff, len(p))
				copy(p, c.rbuf[c.roff:c.roff+n])
				c.roff += n
				c.rbody -= n
				return n, nil
			}
			// The message straight from the socket into ergo's buffer.
			n, err := c.NetReadWriter.Read(p[:min(len(p), c.rbody)])
			c.rbody -= n
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		err := c.readPacketHead()
		if err == errShort {
			if err := c.fill(); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, c.fail(err)
		}
	}
}

// fill reads more socket bytes into rbuf.
func (c *distConn) fill() error {
	if c.roff > 0 && c.roff == len(c.rbuf) {
		c.rbuf, c.roff = c.rbuf[:0], 0
		if cap(c.rbuf) > 1<<20 { // a large request went through: give it back
			c.rbuf = make([]byte, 0, 64<<10)
		}
	}
	if cap(c.rbuf)-len(c.rbuf) < 4096 {
		if c.roff > 0 {
			n := copy(c.rbuf, c.rbuf[c.roff:])
			c.rbuf, c.roff = c.rbuf[:n], 0
		}
		if cap(c.rbuf)-len(c.rbuf) < 4096 {
			c.rbuf = append(make([]byte, 0, 2*cap(c.rbuf)+4096), c.rbuf...)
		}
	}
	for {
		n, err := c.NetReadWriter.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readPacketHead converts the head of the packet at rbuf[roff:] into ready
// and sets rbody to the message bytes that follow it unchanged. errShort:
// more bytes are needed.
func (c *distConn) readPacketHead() error {
	d := c.rbuf[c.roff:]
	if len(d) < 4 {
		return errShort
	}
	l := int(binary.BigEndian.Uint32(d))
	if l == 0 { // tick
		c.ready = append(c.ready, 0, 0, 0, 0)
		c.roff += 4
		return nil
	}
	if len(d) < 5 {
		return errShort
	}
	if d[4] != passThrough { // already what ergo reads
		return c.readHeaderPacket(d, l)
	}
	// 112, 131, Control, [131, Message]
	whole := len(d) >= 4+l
	pkt := d[4:min(len(d), 4+l)]
	if len(pkt) < 2 {
		return errShort
	}
	if pkt[1] != versionMagic {
		return packetError("pass-through packet without 131 before the control message")
	}
	c.rrefs = c.rrefs[:0]
	clen, err := walkTerms(pkt[2:], 1, &c.rrefs)
	if err == errShort {
		if whole || len(pkt) > maxControlSize {
			return packetError("control message does not end inside its packet")
		}
		return errShort
	}
	if err != nil {
		return packetError("control message: %v", err)
	}
	ctl := pkt[2 : 2+clen]
	rest := l - 2 - clen // bytes after the control message
	if rest > 0 {
		if len(pkt) < 2+clen+1 {
			return errShort
		}
		if pkt[2+clen] != versionMagic {
			return packetError("pass-through packet without 131 before the message")
		}
	}
	msg := 0
	if rest > 0 {
		msg = rest - 1
	}
	// The message, when there is one, is weighed before ergo decodes it
	// (weigh.go): a large one is replaced by a small one saying so.
	var replaced []byte
	if msg > 0 {
		start := 4 + 2 + clen + 1
		var err error
		if replaced, err = c.weigh(d, start, msg, l); err != nil {
			if err == errShort {
				return errShort
			}
			return packetError("message: %v", err)
		}
	}
	c.stats.packetsIn.Add(1)
	op, arity := controlOp(ctl)
	if op == opDemonitor {
		for _, r := range c.rrefs {
			c.refs.remove(ctl[r.start:r.end])
		}
	} else {
		for _, r := range c.rrefs {
			c.refs.add(ctl[r.start:r.end])
		}
	}
	if c.unlinkID && rest == 0 && arity == 4 {
		switch op {
		case opUnlinkID:
			return c.unlinkIn(ctl, l)
		case opUnlinkIDAck:
			c.stats.unlinkIDAckIn.Add(1)
			c.roff += 4 + l
			return nil
		}
	}
	if replaced == nil && msg > 0 && c.deliverOnReader(ctl, d[4+2+clen+1:4+l]) {
		c.roff += 4 + l
		return nil
	}
	c.handedToErgo(op)
	if replaced != nil {
		c.ready = binary.BigEndian.AppendUint32(c.ready, uint32(3+clen+len(replaced)))
		c.ready = append(c.ready, versionMagic, distHeader, 0)
		c.ready = append(c.ready, ctl...)
		c.ready = append(c.ready, replaced...)
		k := min(4+l, len(d))
		c.roff += k
		c.rskip = 4 + l - k
		return nil
	}
	c.ready = binary.BigEndian.AppendUint32(c.ready, uint32(3+clen+msg))
	c.ready = append(c.ready, versionMagic, distHeader, 0)
	c.ready = append(c.ready, ctl...)
	c.roff += 4 + 2 + clen
	if rest > 0 {
		c.roff++ // the message's 131
	}
	c.rbody = msg
	return nil
}

// controlOp reads {Op, ...} at the start of a control message.
func controlOp(ctl []byte) (op, arity int) {
	if len(ctl) < 4 || ctl[0] != 104 || ctl[2] != 97 {
		return -1, 0
	}
	return int(ctl[3]), int(ctl[1])
}

// unlinkIn hands ergo {4, From, To} for the peer's {35, Id, From, To} and
// queues {36, Id, To, From} back.
func (c *distConn) unlinkIn(ctl []byte, l int) error {
	parts, err := splitTerms(ctl[4:], 3)
	if err != nil {
		return packetError("UNLINK_ID: %v", err)
	}
	id, from, to := parts[0], parts[1], parts[2]
	body := 3 + 4 + len(from) + len(to)
	c.ready = binary.BigEndian.AppendUint32(c.ready, uint32(body))
	c.ready = append(c.ready, versionMagic, distHeader, 0, 104, 3, 97, opUnlink)
	c.ready = append(c.ready, from...)
	c.ready = append(c.ready, to...)
	c.roff += 4 + l
	c.handedToErgo(opUnlink)

	n := 2 + 4 + len(id) + len(to) + len(from)
	ack := make([]byte, 0, 4+n)
	ack = binary.BigEndian.AppendUint32(ack, uint32(n))
	ack = append(ack, passThrough, versionMagic, 104, 4, 97, opUnlinkIDAck)
	ack = append(ack, id...)
	ack = append(ack, to...)
	ack = append(ack, from...)
	c.stats.unlinkIDIn.Add(1)
	c.inject(ack)
	return nil
}

// splitTerms cuts b, which must hold exactly n terms, into them.
func splitTerms(b []byte, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		k, err := skipTerm(b)
		if err != nil {
			return nil, err
		}
		out = append(out, b[:k])
		b = b[k:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last element", len(b))
	}
	return out, nil
}

// inject queues a whole packet to go out between two of ergo's packets, at
// once if the stream is between two now.
func (c *distConn) inject(pkt []byte) {
	c.wmu.Lock()
	c.injected = append(c.injected, pkt)
	c.wmu.Unlock()
	// Not on the reading goroutine: a write may wait for the peer.
	go func() {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if len(c.injected) == 0 || c.wbody > 0 || len(c.whead) > 0 {
			return // the Write that ends the current packet sends them
		}
		c.segs = append(c.segs[:0], c.injected...)
		c.stats.unlinkIDAckOut.Add(uint64(len(c.injected)))
		c.injected = nil
		c.writeSegs() // an error shows on ergo's next write
	}()
}

// Write implements io.Writer for ergo's flusher: p is any piece of the
// stream of packets ergo sends.
func (c *distConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := len(p)
	c.segs, c.scratch = c.segs[:0], c.scratch[:0]
	c.fragBusy = false
	for len(p) > 0 {
		if c.wbody > 0 {
			n := min(c.wbody, len(p))
			c.segs = append(c.segs, p[:n])
			p, c.wbody = p[n:], c.wbody-n
			if c.wbody == 0 {
				c.flushInjected()
			}
			continue
		}
		held := len(c.whead) > 0
		src := p
		if held {
			c.whead = append(c.whead, p...)
			src, p = c.whead, nil
		}
		used, err := c.writePacketHead(src)
		if err == errShort {
			if !held {
				c.whead = append(c.whead, p...)
			}
			break
		}
		if err != nil {
			return 0, c.fail(err)
		}
		if held {
			// The rest of the held bytes: the message, and maybe more
			// packets.
			p = append([]byte(nil), c.whead[used:]...)
			c.whead = c.whead[:0]
		} else {
			p = p[used:]
		}
		if c.wbody == 0 {
			c.flushInjected()
		}
	}
	if err := c.writeSegs(); err != nil {
		return 0, err
	}
	return total, nil
}

// writeSegs sends segs with as few writes as it can: one when they add up
// to at most maxCoalesce bytes (a Write of ergo's is at most a packet, so
// nearly always), since the socket under distConn may not take a writev.
func (c *distConn) writeSegs() error {
	n := 0
	for _, s := range c.segs {
		n += len(s)
	}
	switch {
	case n == 0:
		return nil
	case len(c.segs) == 1 || n > maxCoalesce:
		bufs := net.Buffers(c.segs)
		_, err := bufs.WriteTo(c.NetReadWriter)
		return err
	}
	c.out = c.out[:0]
	for _, s := range c.segs {
		c.out = append(c.out, s...)
	}
	_, err := c.NetReadWriter.Write(c.out)
	if cap(c.out) > 4*maxCoalesce {
		c.out = nil
	}
	return err
}

// flushInjected adds the queued packets to what the current Write sends.
func (c *distConn) flushInjected() {
	if len(c.injected) > 0 {
		c.segs = append(c.segs, c.injected...)
		c.stats.unlinkIDAckOut.Add(uint64(len(c.injected)))
		c.injected = nil
	}
	if len(c.direct) > 0 && len(c.frag) == 0 {
		c.segs = append(c.segs, c.direct...)
		c.direct = nil
	}
}

// WriteDirect sends a whole pass-through packet, made of parts (its length
// prefix included), that node mode encoded itself (a child's messages to
// its owner, see child.sendDirect): now when the stream is between two of
// ergo's packets and nothing waits ahead of it, else right after the
// packet ergo is in the middle of. The parts must not change afterwards.
func (c *distConn) WriteDirect(parts ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corks > 0 || c.wbody > 0 || len(c.whead) > 0 || len(c.frag) > 0 || len(c.direct) > 0 {
		c.direct = append(c.direct, parts...)
		return nil
	}
	c.stats.packetsOut.Add(1)
	c.segs = append(c.segs[:0], parts...)
	return c.writeSegs()
}

// Cork holds the packets written directly from now on (WriteDirect,
// MoveDirect's fallback) until the matching Uncork, which writes them
// together with one system call: two packets that go out together wake the
// peer once. ergo's next packet takes them along if it comes first.
func (c *distConn) Cork() {
	c.wmu.Lock()
	c.corks++
	c.wmu.Unlock()
}

// Uncork undoes a Cork and, with none left, writes what waits.
func (c *distConn) Uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.corks--
	if c.corks > 0 || c.wbody > 0 || len(c.whead) > 0 || len(c.frag) > 0 || len(c.direct) == 0 {
		return nil
	}
	c.segs = append(c.segs[:0], c.direct...)
	c.direct = nil
	return c.writeSegs()
}

// writePacketHead converts the head of the ergo packet at the start of d,
// adds it to segs, sets wbody to the message bytes that follow it
// unchanged, and returns how many bytes of d it used. errShort: more bytes
// are needed.
func (c *distConn) writePacketHead(d []byte) (int, error) {
	if len(d) < 4 {
		return 0, errShort
	}
	l := int(binary.BigEndian.Uint32(d))
	if l == 0 { // keepalive
		c.scratch = append(c.scratch, 0, 0, 0, 0)
		c.segs = append(c.segs, c.scratch[len(c.scratch)-4:])
		return 4, nil
	}
	if len(d) < 7 {
		return 0, errShort
	}
	if d[4] == versionMagic && (d[5] == distFragment1 || d[5] == distFragmentN) {
		return c.writeFragment(d, l)
	}
	if len(c.frag) > 0 {
		return 0, packetError("ergo wrote a packet inside a fragmented message")
	}
	if d[4] != versionMagic || d[5] != distHeader {
		return 0, packetError("ergo wrote a packet of type %d %d, which has no pass-through form", d[4], d[5])
	}
	if d[6] != 0 {
		return 0, packetError("ergo wrote a packet with %d cached atoms on a connection without the atom cache", d[6])
	}
	whole := len(d) >= 4+l
	pkt := d[7:min(len(d), 4+l)]
	c.wrefs = c.wrefs[:0]
	clen, err := walkTerms(pkt, 1, &c.wrefs)
	if err == errShort {
		if whole || len(pkt) > maxControlSize {
			return 0, packetError("ergo wrote a control message that does not end inside its packet")
		}
		return 0, errShort
	}
	if err != nil {
		return 0, packetError("ergo wrote a bad control message: %v", err)
	}
	ctl := pkt[:clen]
	msg := l - 3 - clen
	op, arity := controlOp(ctl)

	// A call's reply, {Tag, Reply}, starts with the caller's reference
	// (Tag is Ref or [alias | Ref]): take it into the head too.
	tag := 0
	ctlRefs := len(c.wrefs)
	if msg > 0 && c.refs.len() > 0 && (op == opSend || op == opAliasSend || op == opSendSender) {
		m := pkt[clen:]
		if len(m) < 3 {
			if whole {
				return 0, packetError("ergo wrote a message of %d bytes", len(m))
			}
			return 0, errShort
		}
		if m[0] == 104 && m[1] == 2 && (m[2] == 90 || m[2] == 108) {
			k, err := walkTerms(m[2:], 1, &c.wrefs)
			if err == errShort && !whole && len(m) < maxControlSize {
				return 0, errShort
			}
			if err == nil {
				tag = 2 + k
			} else {
				c.wrefs = c.wrefs[:ctlRefs] // not a tag after all
			}
		}
	}
	c.stats.packetsOut.Add(1)

	start := len(c.scratch)
	c.scratch = binary.BigEndian.AppendUint32(c.scratch, 0) // length, below
	c.scratch = append(c.scratch, passThrough, versionMagic)
	if c.unlinkID && msg == 0 && op == opUnlink && arity == 3 {
		// {4, From, To} -> {35, Id, From, To}
		c.nextID++
		c.scratch = append(c.scratch, 104, 4, 97, opUnlinkID)
		c.scratch = appendUint(c.scratch, c.nextID)
		c.scratch = append(c.scratch, ctl[4:]...)
		c.stats.unlinkIDOut.Add(1)
	} else {
		c.scratch = c.appendExpanded(c.scratch, ctl, c.wrefs[:ctlRefs], 0)
		if op == opMonitorPExit {
			for _, r := range c.wrefs[:ctlRefs] {
				c.refs.remove(ctl[r.start:r.end])
			}
		}
	}
	if msg > 0 {
		c.scratch = append(c.scratch, versionMagic)
		if tag > 0 {
			c.scratch = c.appendExpanded(c.scratch, pkt[clen:clen+tag], c.wrefs[ctlRefs:], 2)
		}
	}
	n := len(c.scratch) - start - 4 + (msg - tag)
	binary.BigEndian.PutUint32(c.scratch[start:], uint32(n))
	c.segs = append(c.segs, c.scratch[start:])
	c.wbody = msg - tag
	return 7 + clen + tag, nil
}

// writeFragment takes one of ergo's fragments (d holds at least its
// header) and, once the message's last fragment is in, converts the whole
// message as one packet.
//
// ergo fragments what it sends to OTP peers (see Options) because its
// flusher writes a packet longer than 64 000 bytes straight to the socket,
// past whatever its bufio buffer still holds: the tail of an earlier packet
// (the stream is cut inside it), or whole earlier packets (their order is
// lost). Fragments of FragmentationUnit bytes all go through the buffer, in
// order. The peer does not take fragments without the atom cache, so they
// are put back together here.
func (c *distConn) writeFragment(d []byte, l int) (int, error) {
	if len(d) < 4+l {
		return 0, errShort
	}
	if l < 1+1+8+8 {
		return 0, packetError("ergo wrote a fragment of %d bytes", l)
	}
	seq := binary.BigEndian.Uint64(d[6:14])
	id := binary.BigEndian.Uint64(d[14:22])
	data := d[22 : 4+l]
	if d[5] == distFragment1 {
		if len(c.frag) > 0 {
			return 0, packetError("ergo started a fragmented message inside another")
		}
		if len(data) < 1 || data[0] != 0 {
			return 0, packetError("ergo wrote a first fragment with cached atoms")
		}
		if c.fragBusy || c.frag == nil {
			c.frag = make([]byte, 0, 4+2+min(int(min(id, 1<<10))*len(data), 1<<20))
		}
		c.frag = append(c.frag[:0], 0, 0, 0, 0, versionMagic, distHeader)
		c.fragSeq = seq
	} else if len(c.frag) == 0 || seq != c.fragSeq {
		return 0, packetError("ergo wrote a fragment of a message it did not start")
	}
	if len(c.frag)+len(data) > limits.MaxRequestMax+4 {
		return 0, packetError("fragmented message longer than %d bytes", limits.MaxRequestMax)
	}
	c.frag = append(c.frag, data...)
	if id != 1 {
		return 4 + l, nil // more to come
	}
	whole := c.frag
	binary.BigEndian.PutUint32(whole, uint32(len(whole)-4))
	c.frag, c.fragBusy = whole[:0], true
	used, err := c.writePacketHead(whole)
	if err != nil {
		if err == errShort {
			err = packetError("fragmented message without a whole control message")
		}
		return 0, err
	}
	if rest := whole[used:]; len(rest) > 0 {
		c.segs = append(c.segs, rest)
		c.wbody -= len(rest)
	}
	if c.wbody != 0 {
		return 0, packetError("fragmented message of inconsistent length")
	}
	return 4 + l, nil
}

// appendExpanded appends b with the 3-word references at refs (offsets
// into b, less shift) replaced by the peer's long ones when known.
func (c *distConn) appendExpanded(dst, b []byte, refs []span, shift int) []byte {
	at := 0
	for _, r := range refs {
		s, e := r.start+shift, r.end+shift
		full, ok := c.refs.full(b[s:e])
		if !ok {
			continue
		}
		dst = append(dst, b[at:s]...)
		dst = append(dst, full...)
		at = e
		c.stats.refsExpanded.Add(1)
	}
	return append(dst, b[at:]...)
}

// appendUint appends v as an external-format integer.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 256:
		return append(b, 97, byte(v))
	case v <= 1<<31-1:
		return binary.BigEndian.AppendUint32(append(b, 98), uint32(v))
	default:
		b = append(b, 110, 8, 0)
		return binary.LittleEndian.AppendUint64(b, v)
	}
}
