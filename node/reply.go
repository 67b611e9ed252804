package node

import (
	"github.com/ergo-services/ergo/etf"
	"github.com/protonstream/ps_port/otpdist"
)

// The spawner's replies (an open's {:ok, pid} above all) skip ergo's
// sender, as a child's messages do (direct.go): ergo queued a reply for
// its sender goroutine, which wrote it into a bufio buffer flushed by a
// timer, so every open cost the owner two more goroutine hand-offs in the
// node, one of them a thread woken through the poller for the timer,
// before the caller could go on (docs/benchmarks.md, "Spawn").
//
// Order: nothing the spawner sends is ordered against a reply. The
// monitor the child sets on its owner still goes through ergo and may now
// reach the owner's node after the reply; a DOWN for an owner that died
// meanwhile then comes as noproc, which ends the child all the same.

// replyDirect writes the spawner's reply to from's call straight onto the
// caller's connection; false when ergo has to send it.
func (n *Node) replyDirect(from callFrom, reply etf.Term) bool {
	return n.writeReply(n.spawnerEnc, from, reply)
}

// writeReply writes the reply to from's call, sent by the process whose
// pid is encoded as self, straight onto the caller's connection; false
// when ergo has to send it (no connection ergo serves through otpdist, or
// the reply cannot be encoded here).
func (n *Node) writeReply(self []byte, from callFrom, reply etf.Term) bool {
	if n.links == nil || self == nil {
		return false
	}
	dc := n.links.Direct(string(from.pid.Node))
	if dc == nil {
		return false
	}
	packet, ok := replyPacket(dc, self, from, reply)
	if !ok {
		return false
	}
	if err := dc.WriteDirect(packet...); err != nil {
		n.log.Printf("replying to %s: distribution: %v", from.pid, err)
	}
	return true
}

// replyPacket is the pass-through packet of the reply to from's call, sent
// by the process whose pid is encoded as self: {[alias | Ref], Reply} to
// the alias Ref (OTP 24+ callers), or {Ref, Reply} to the caller's pid.
// The reference is the one the caller sent, whole (dc.WholeRef).
func replyPacket(dc otpdist.Direct, self []byte, from callFrom, reply etf.Term) ([][]byte, bool) {
	ref, err := encodeTerm(from.ref)
	if err != nil {
		return nil, false
	}
	ref = dc.WholeRef(ref)
	body, err := encodeTerm(reply)
	if err != nil {
		return nil, false
	}
	if !from.alias {
		to, err := encodeTerm(from.pid)
		if err != nil {
			return nil, false
		}
		tag := append([]byte{104, 2}, ref...)
		return [][]byte{otpdist.SendHead(to, 0, len(tag)+len(body)), tag, body}, true
	}
	// [alias | Ref]: LIST_EXT of one element with Ref as its tail.
	tag := append([]byte{104, 2, 108, 0, 0, 0, 1}, encAlias...)
	tag = append(tag, ref...)
	return [][]byte{otpdist.AliasSendHead(self, ref, len(tag)+len(body)), tag, body}, true
}

var encAlias, _ = encodeTerm(etf.Atom("alias"))
