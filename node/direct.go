package node

import (
	"encoding/binary"
	"fmt"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/lib"
	"github.com/protonstream/ps_port/otpdist"
)

// A child's messages to its owner skip ergo's sender: the child's sender
// encodes each as a whole pass-through packet and hands it to the owner's
// connection (otpdist.Direct), which writes it between two of ergo's
// packets. A data message's bytes are not copied on the way (ergo encoded
// them into its own buffer, wrote that into a bufio buffer and flushed it
// from a timer goroutine: a copy and two goroutine hand-offs per chunk).
//
// Order: every message of one child to one owner goes the same way, chosen
// at the first one: direct when ergo serves a connection to the owner's
// node by then, through ergo otherwise (the owner's node not connected
// yet: ergo connects). Call replies go the same way to the caller's node
// (callReply), and so do the monitor signals of a connection to an OTP
// peer (otpdist/monitors.go): the monitor of the owner, its removal, and
// the DOWN of a monitor set on the child, which therefore never overtakes
// anything the child sent before it.

// encodeOpts is how ergo encodes for an OTP 25+ peer (big creations, big
// pids and references).
var encodeOpts = etf.EncodeOptions{FlagBigCreation: true, FlagBigPidRef: true}

// encodeTerm is t in external term format, without the 131.
func encodeTerm(t etf.Term) ([]byte, error) {
	b := lib.TakeBuffer()
	defer lib.ReleaseBuffer(b)
	if err := etf.Encode(t, b, encodeOpts); err != nil {
		return nil, err
	}
	return append([]byte(nil), b.B...), nil
}

// Encoded tags of data messages.
var (
	encData, _      = encodeTerm(atomData)
	encErrorData, _ = encodeTerm(atomErrorData)
)

// directWay is how a child sends to its owner (see above).
type directWay struct {
	decided bool
	for_    etf.Pid // the owner the choice was made for
	direct  bool
	selfEnc []byte // the child's pid, encoded
	destEnc []byte // for_, encoded
}

// dist is the connection to write to directly, with ok false when this
// owner's messages go through ergo. A nil Direct with ok true: the
// connection is gone (so is the owner, for all this child knows).
func (c *child) dist() (otpdist.Direct, bool) {
	w := &c.way
	if !w.decided || w.for_ != c.dest {
		w.decided, w.for_ = true, c.dest
		w.direct = c.n.links != nil && c.n.links.Direct(string(c.dest.Node)) != nil
		w.destEnc = nil
		if w.direct {
			var err error
			if w.selfEnc == nil {
				if w.selfEnc, err = encodeTerm(c.self); err != nil {
					w.direct = false
				}
			}
			if w.destEnc, err = encodeTerm(c.dest); err != nil {
				w.direct = false
			}
		}
	}
	if !w.direct {
		return nil, false
	}
	return c.n.links.Direct(string(c.dest.Node)), true
}

// headroom is the room emit leaves before a data message's bytes: enough
// for the packet's head with two pids of 255-byte node names.
const headroom = 640

// sendData sends {self, {tag, data}} to the owner; buf, when not nil, is
// data with headroom bytes before it.
func (c *child) sendData(tag etf.Atom, data, buf []byte) {
	dc, ok := c.dist()
	if !ok {
		c.send(c.dest, etf.Tuple{c.self, etf.Tuple{tag, data}})
		return
	}
	if dc == nil {
		return
	}
	head := c.dataHead(tag, len(data))
	if len(buf) == headroom+len(data) && len(head) <= headroom {
		at := headroom - len(head)
		copy(buf[at:], head)
		c.writeDirect(dc, buf[at:])
		return
	}
	c.writeDirect(dc, head, data)
}

// dataHead is the head of a direct packet {self, {tag, <n bytes>}} to the
// owner, up to the binary's bytes.
func (c *child) dataHead(tag etf.Atom, n int) []byte {
	enc := encData
	if tag == atomErrorData {
		enc = encErrorData
	}
	w := &c.way
	head := c.packetHead(len(w.selfEnc)+len(enc)+4+5, n)
	head = append(head, 104, 2)
	head = append(head, w.selfEnc...)
	head = append(head, 104, 2)
	head = append(head, enc...)
	head = append(head, 109)
	return binary.BigEndian.AppendUint32(head, uint32(n))
}

// callReply answers a call the child took (its os pid, its stdin queue):
// written straight onto the caller's connection like everything else the
// child sends, so that nothing of the child's waits in ergo's queue when
// its end's monitor signals go out directly (otpdist/monitors.go); through
// ergo when that cannot be.
func (c *child) callReply(from callFrom, reply etf.Term) {
	w := &c.way
	if w.selfEnc == nil {
		if enc, err := encodeTerm(c.self); err == nil {
			w.selfEnc = enc
		}
	}
	if c.n.writeReply(w.selfEnc, from, reply) {
		return
	}
	to, msg := from.replyTo(reply)
	c.send(to, msg)
}

// sendTerm sends msg to the owner.
func (c *child) sendTerm(msg etf.Term) {
	dc, ok := c.dist()
	if !ok {
		c.send(c.dest, msg)
		return
	}
	if dc == nil {
		return
	}
	body, err := encodeTerm(msg)
	if err != nil {
		c.n.log.Printf("child %d: encoding %s: %v", c.pc.Pid(), describe(msg), err)
		return
	}
	c.writeDirect(dc, c.packetHead(0, len(body)), body)
}

// packetHead starts a pass-through packet to the owner whose message is
// extra bytes of head (appended by the caller) and tail bytes after it.
func (c *child) packetHead(extra, tail int) []byte {
	return otpdist.SendHead(c.way.destEnc, extra, tail)
}

func (c *child) writeDirect(dc otpdist.Direct, parts ...[]byte) {
	if err := dc.WriteDirect(parts...); err != nil {
		c.n.log.Printf("child %d: sending to %v: %v", c.pc.Pid(), c.dest, fmt.Errorf("distribution: %w", err))
	}
}
