// Package otpdist lets ergo (which speaks OTP 25's distribution protocol)
// serve Erlang/OTP 25 to 29 nodes: it changes ergo's handshake and puts a
// translation between each connection's socket and ergo. Options is its one
// entry point: the node passes the options it returns to ergo and knows
// nothing of what is inside.
//
// What it changes, file by file:
//
//   - handshake.go: the flags ergo's handshake advertises (UNLINK_ID,
//     no atom cache, no fragments), and why a refused handshake failed;
//   - proto.go: ergo's protocol with the translation under every
//     connection to an OTP peer, and the connections by peer (Links);
//   - conn.go: the translation itself (distConn): pass-through packets on
//     the wire and distribution headers for ergo, UNLINK_ID to the old
//     UNLINK and back, ergo's fragments put together again;
//   - longrefs.go: OTP 26+'s long references, which ergo cuts, restored;
//   - weigh.go: a peer's message weighed before ergo decodes it, and
//     replaced when heavier than Config.MaxRequest;
//   - skip.go: walking external-term-format terms without decoding them
//     (the tag names are etf's);
//   - tick.go: OTP's net_ticktime, which ergo hard-codes;
//   - tls.go: distribution over TLS (TLSFiles), as inet_tls_dist;
//   - splice.go: a local process's output spliced from its pipe into the
//     socket as one packet (Direct.MoveDirect);
//   - local.go: a peer's SEND to a local process handled on the
//     connection's reader, not handed to ergo's handler goroutine, when
//     ergo has routed everything before it.
//
// A release of ergo that changes its protocol or handshake means
// revisiting this package only.
package otpdist

import (
	"encoding/binary"
	"log"
	"time"

	ergonode "github.com/ergo-services/ergo/node"
	"github.com/protonstream/ps_port/internal/limits"
)

// Config is what the translation needs from the node.
type Config struct {
	// TickTime is OTP's net_ticktime (tick.go); 0: DefaultNetTickTime.
	TickTime time.Duration
	// MaxRequest is the largest message a peer may send (weigh.go), at
	// most limits.MaxRequestMax; 0: limits.MaxRequestDefault.
	MaxRequest int
	// Log is where refused handshakes and dropped connections are
	// explained; nil: not at all.
	Log *log.Logger
	// Route, when set, wraps the router each connection's reader delivers
	// the peer's messages to (one reader per connection, so a sender's
	// messages arrive in order).
	Route func(ergonode.CoreRouter) ergonode.CoreRouter
}

// Options returns the ergo options every ps_port node talks distribution
// with: handshake version 6 (OTP 25 needs it) with the UNLINK_ID flag (OTP
// 26+ need it; handshake.go), one protocol handler (ergo reorders with
// more), no atom cache, and no packet longer than ergo's flusher puts
// through its buffer. The caller adds its own (Registrar, Listeners, TLS).
// Links finds the connection to a peer, for writing to it directly.
func Options(cfg Config) (ergonode.Options, *Links) {
	opts := ergonode.Options{}
	opts.System.DisableAnonMetrics = true
	dh := newDistHandshake()
	dh.log = cfg.Log
	opts.Handshake = dh
	po := ergonode.DefaultProtoOptions()
	po.NumHandlers = 1
	po.MaxMessageSize = limits.MaxRequestMax
	// ergo's flusher writes a packet over 64 000 bytes straight to the
	// socket, ahead of what its buffer still holds (which cuts the stream
	// or reorders it). So ergo fragments everything longer than
	// fragmentUnit, and distConn puts the fragments back together for the
	// peer (conn.go: writeFragment).
	po.FragmentationUnit = fragmentUnit
	dp := newDistProto(po)
	dp.tickTime = cfg.TickTime
	dp.maxRequest = cfg.MaxRequest
	dp.log = cfg.Log
	dp.route = cfg.Route
	dp.links = newLinks()
	opts.Proto = dp
	return opts, dp.links
}

// Direct is a connection to a peer that a local process writes its own
// messages to, skipping ergo's sender (Links.Direct).
type Direct interface {
	// WriteDirect sends one whole packet made of parts (SendHead's head
	// first) between two of ergo's packets. The parts must not change
	// afterwards.
	WriteDirect(parts ...[]byte) error
	// MoveDirect sends one packet of head (SendHead's and the caller's)
	// and the next n bytes of the pipe fd, spliced without a copy; false,
	// having consumed nothing, when it cannot now (TLS, or ergo is in the
	// middle of a packet): the caller then reads the bytes and uses
	// WriteDirect.
	MoveDirect(head []byte, fd, n int) (bool, error)
	// WholeRef is the reference ref (external term format, as ergo
	// encodes it: 3 words) as the peer sent it: OTP 26+ make longer ones,
	// which ergo cuts (longrefs.go). ref itself when the peer sent no
	// longer one.
	WholeRef(ref []byte) []byte
	// Cork holds the packets written directly until the matching Uncork,
	// which writes them with one system call.
	Cork()
	Uncork() error
}

// SendHead starts the pass-through packet of a SEND {2, ”, To} to the
// process whose pid is encoded as to (external term format without the
// 131), whose message is extra more bytes of head (the caller appends
// them) then tail bytes. It has room for the extra bytes.
func SendHead(to []byte, extra, tail int) []byte {
	ctl := 4 + 2 + len(to) // 104 3 97 2, 119 0, To
	n := 1 + 1 + ctl + 1 + extra + tail
	head := make([]byte, 0, 4+1+1+ctl+1+extra)
	head = binary.BigEndian.AppendUint32(head, uint32(n))
	head = append(head, passThrough, versionMagic, 104, 3, 97, 2, 119, 0)
	head = append(head, to...)
	return append(head, versionMagic)
}

// AliasSendHead starts the pass-through packet of an ALIAS_SEND {33, From,
// Alias} from the process whose pid is encoded as from to the alias (a
// reference, whole: see Direct.WholeRef), whose message is the tail bytes
// that follow the head.
func AliasSendHead(from, alias []byte, tail int) []byte {
	ctl := 4 + len(from) + len(alias) // 104 3 97 33, From, Alias
	n := 1 + 1 + ctl + 1 + tail
	head := make([]byte, 0, 4+1+1+ctl+1)
	head = binary.BigEndian.AppendUint32(head, uint32(n))
	head = append(head, passThrough, versionMagic, 104, 3, 97, opAliasSend)
	head = append(head, from...)
	head = append(head, alias...)
	return append(head, versionMagic)
}

// RegSendPacket is the whole pass-through packet of a REG_SEND {6, From,
// ”, To}: msg (external term format without the 131) from the process
// whose pid is encoded as from to the process registered as to (at most
// 255 bytes) on the peer.
func RegSendPacket(from []byte, to string, msg []byte) []byte {
	ctl := 4 + len(from) + 2 + 2 + len(to) // 104 4 97 6, From, 119 0, 119 N To
	n := 1 + 1 + ctl + 1 + len(msg)
	p := make([]byte, 0, 4+n)
	p = binary.BigEndian.AppendUint32(p, uint32(n))
	p = append(p, passThrough, versionMagic, 104, 4, 97, 6)
	p = append(p, from...)
	p = append(p, 119, 0, 119, byte(len(to)))
	p = append(p, to...)
	p = append(p, versionMagic)
	return append(p, msg...)
}
