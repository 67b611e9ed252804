package otpdist

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/protonstream/ps_port/internal/limits"
)

// Bounded requests. A peer's message costs this node its bytes, and ergo's
// decoding costs more: every element of a list or tuple becomes a 16-byte
// interface value (a charlist sent as a list of small integers takes 2
// bytes a character on the wire and 16 decoded), and ergo sizes a list by
// the count in its header before it looks at the bytes behind it. So
// distConn weighs each message before ergo sees it: it must hold the terms
// its counts promise, and weigh, as bytes plus elemCost a element, at most
// the node's --max-request. A heavier one never reaches ergo: distConn hands
// it, in its place, a small message to the same process that says so
// (tooLargeMessage), and throws the rest away as it arrives, so the
// connection stays up and the sender gets an answer:
//
//   - {'$gen_call', From, _} becomes {'$gen_call', From, {'$ps_too_large',
//     Weight, Max}}: a call (an open) is answered {error, {too_large, Text}}.
//   - {X, _} becomes {X, {'$ps_too_large', Weight, Max}}: a child's owner
//     sending {Owner, {command, Data}} gets {Child, {error, too_large, Text}}.
//   - Anything else becomes {'$ps_too_large', Weight, Max}, logged and
//     dropped by whoever gets it.
//
// A message within the limit is read whole into distConn's buffer before it
// is passed on (twice its size at most, given back after it), so a request
// costs the node a small multiple of its weight.

// elemCost is what decoding one element of a tuple, list or map costs.
const elemCost = 16

// replyHeadMax is how much of a message too large to read is looked at to
// find whom to answer.
const replyHeadMax = 4096

// TooLargeAtom tags the term put in place of a refused message:
// {'$ps_too_large', Weight, Max}, alone or as a call's or a send's payload
// (see above). Whoever gets one answers or logs it.
const TooLargeAtom = "$ps_too_large"

func (c *distConn) maxRequest() int {
	if c.maxReq > 0 {
		return c.maxReq
	}
	return limits.MaxRequestDefault
}

// envelope is what a message may weigh beyond --max-request: its control
// term, pids, atoms and tuple headers around the payload, so that a command
// of exactly --max-request bytes (the size of the default stdin limit) is
// taken. It bounds nothing that matters: memory stays within a small
// multiple of --max-request.
const envelope = 64 << 10

// fits reports whether a message weighing w may pass.
func (c *distConn) fits(w uint64) bool { return w <= uint64(c.maxRequest())+envelope }

// weigh decides whether the message of the packet at d (whose bytes start
// at d[start:], msg of them, in a packet of length l) may pass. It returns
// the message to pass in its place, or nil to pass it; errShort: more
// bytes are needed first.
func (c *distConn) weigh(d []byte, start, msg, l int) ([]byte, error) {
	max := c.maxRequest()
	if !c.fits(uint64(l)) {
		need := min(msg, replyHeadMax)
		if len(d) < start+need {
			return nil, errShort
		}
		c.refused(l, max)
		return tooLargeMessage(d[start:start+need], l, max), nil
	}
	if len(d) < 4+l {
		return nil, errShort
	}
	body := d[start : 4+l]
	n, elems, err := termWeight(body)
	switch {
	case err == errShort:
		return nil, fmt.Errorf("it ends inside a term (its counts promise more than its %d bytes)", len(body))
	case err != nil:
		return nil, err
	case n != len(body):
		return nil, fmt.Errorf("%d bytes after its term", len(body)-n)
	}
	if w := uint64(len(body)) + elemCost*elems; !c.fits(w) {
		weight := int(min(w, math.MaxInt32))
		c.refused(weight, max)
		return tooLargeMessage(body, weight, max), nil
	}
	return nil, nil
}

func (c *distConn) refused(weight, max int) {
	if c.log != nil {
		c.log.Printf("refused a message of %d bytes (lists and tuples weighed as decoded) from %s: more than --max-request %d; its sender is told",
			weight, c.peer, max)
	}
}

// skip throws away rskip bytes of the socket.
func (c *distConn) skip() error {
	if c.roff < len(c.rbuf) {
		k := min(c.rskip, len(c.rbuf)-c.roff)
		c.roff += k
		c.rskip -= k
		return nil
	}
	c.rbuf, c.roff = c.rbuf[:0], 0
	n, err := c.NetReadWriter.Read(c.rbuf[:min(cap(c.rbuf), c.rskip)])
	c.rskip -= n
	if n > 0 {
		return nil
	}
	return err
}

// tooLargeMessage is the message passed on in place of one too large,
// whose first bytes are head (see the comment at the top).
func tooLargeMessage(head []byte, weight, max int) []byte {
	mark := []byte{104, 3, 119, byte(len(TooLargeAtom))}
	mark = append(mark, TooLargeAtom...)
	mark = binary.BigEndian.AppendUint32(append(mark, 98), uint32(min(weight, math.MaxInt32)))
	mark = binary.BigEndian.AppendUint32(append(mark, 98), uint32(min(max, math.MaxInt32)))
	if len(head) < 2 || head[0] != 104 || head[1] < 2 {
		return mark
	}
	k1, err := skipTerm(head[2:])
	if err != nil {
		return mark
	}
	first := head[2 : 2+k1]
	if head[1] == 3 && atomNamed(first, "$gen_call") {
		if k2, err := skipTerm(head[2+k1:]); err == nil {
			out := append([]byte{104, 3}, head[2:2+k1+k2]...)
			return append(out, mark...)
		}
		return mark
	}
	out := append([]byte{104, 2}, first...)
	return append(out, mark...)
}

// atomNamed reports whether the term b is the atom name.
func atomNamed(b []byte, name string) bool {
	switch {
	case len(b) >= 2 && (b[0] == 115 || b[0] == 119):
		return string(b[2:]) == name && int(b[1]) == len(name)
	case len(b) >= 3 && (b[0] == 100 || b[0] == 118):
		return string(b[3:]) == name && int(binary.BigEndian.Uint16(b[1:])) == len(name)
	}
	return false
}

// readHeaderPacket takes a packet in ergo's own format (131 68 0 Control
// [Message]), which an OTP peer does not send here (it was offered neither
// the atom cache nor fragments) but one holding the cookie could: it is
// weighed as a pass-through packet is, and anything else is refused.
func (c *distConn) readHeaderPacket(d []byte, l int) error {
	if !c.fits(uint64(l)) {
		return packetError("%d bytes, more than --max-request %d", l, c.maxRequest())
	}
	if len(d) < 4+l {
		return errShort
	}
	pkt := d[4 : 4+l]
	if len(pkt) < 3 || pkt[0] != versionMagic || pkt[1] != distHeader || pkt[2] != 0 {
		return packetError("a packet neither pass-through (112) nor a distribution header without cached atoms (131 68 0)")
	}
	clen, err := skipTerm(pkt[3:])
	if err != nil {
		return packetError("control message: %v", err)
	}
	var replaced []byte
	if start := 4 + 3 + clen; start < 4+l {
		if replaced, err = c.weigh(d, start, 4+l-start, l); err != nil {
			return packetError("message: %v", err)
		}
	}
	c.stats.packetsIn.Add(1)
	op, _ := controlOp(pkt[3 : 3+clen])
	c.handedToErgo(op)
	if replaced != nil {
		c.ready = binary.BigEndian.AppendUint32(c.ready, uint32(3+clen+len(replaced)))
		c.ready = append(c.ready, pkt[:3+clen]...)
		c.ready = append(c.ready, replaced...)
		c.roff += 4 + l
		return nil
	}
	c.ready = append(c.ready, d[:4+l]...)
	c.roff += 4 + l
	return nil
}
