package otpdist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/ergo-services/ergo/lib"
	ergonode "github.com/ergo-services/ergo/node"
	"github.com/ergo-services/ergo/proto/dist"
)

// OTP 26 and later refuse a peer that does not speak the UNLINK_ID link
// protocol (DFLAG_UNLINK_ID), and ergo v1.999.224 does not. This file closes
// the gap from outside ergo, on the bytes between the socket and ergo:
//
//   - The handshake advertises DFLAG_UNLINK_ID (and DFLAG_MANDATORY_25_DIGEST,
//     a synonym OTP 25+ understands for flags ergo already sets). The flags
//     are not part of the challenge digest, so adding a bit to the name and
//     challenge messages ergo writes is all it takes. It also stops
//     advertising the distribution header atom cache and fragments, and
//     notes whether the peer advertised UNLINK_ID.
//   - Without the header atom cache, an OTP peer sends and expects
//     "pass-through" packets (112, then the control message and the message
//     each as term_to_binary with its 131) instead of distribution headers
//     (131 68 ...), which ergo always reads and writes. distConn converts
//     both ways. With no atom cache references, every control message is
//     plain external term format: the conversion finds where it ends and
//     looks at its operation, never decoding the payload.
//   - On a connection where both sides have UNLINK_ID, an incoming
//     UNLINK_ID {35, Id, From, To} reaches ergo as the old UNLINK {4, From,
//     To}, and distConn answers UNLINK_ID_ACK {36, Id, To, From} itself; an
//     old UNLINK from ergo leaves as UNLINK_ID with a fresh Id, and the
//     peer's UNLINK_ID_ACK for it is consumed.
//   - OTP 26+ references may be 5 words long (every gen_server:call's alias
//     is), and ergo sends every reference cut to 3 words; distConn puts the
//     missing words back (longrefs.go).
//
// Peers that advertise ergo's own flags (compression, proxy) are other ergo
// nodes: they speak ergo's format, and their bytes are left alone.

// Distribution flags (erts dist.h) that matter here.
const (
	dflagDistHdrAtomCache  = 0x2000
	dflagFragments         = 0x800000
	dflagUnlinkID          = 0x2000000
	dflagMandatory25Digest = 0x4000000

	// What this node adds to and removes from the flags ergo advertises
	// (Init already keeps ergo from setting the removed ones).
	dflagsAdded   = dflagUnlinkID | dflagMandatory25Digest
	dflagsRemoved = dflagDistHdrAtomCache | dflagFragments
)

// Control message operations (erl_ext_dist) the translation looks at.
const (
	opSend         = 2
	opUnlink       = 4
	opRegSend      = 6
	opDemonitor    = 20
	opMonitorPExit = 21
	opSendSender   = 22
	opAliasSend    = 33
	opUnlinkID     = 35
	opUnlinkIDAck  = 36
)

const (
	passThrough    = 112 // packet type without a distribution header
	versionMagic   = 131
	distHeader     = 68
	distFragment1  = 69
	distFragmentN  = 70
	maxControlSize = 1 << 20 // a control message longer than this is refused
)

// peerInfo travels from the handshake to the protocol in
// HandshakeDetails.Custom.
type peerInfo struct {
	flags uint64 // as the peer advertised them (0 when not seen)
}

// distHandshake is ergo's version 6 handshake with the flags changed as
// described above.
type distHandshake struct {
	inner ergonode.HandshakeInterface
	log   *log.Logger // where refused connections are explained (tls.go)
}

func newDistHandshake() *distHandshake {
	return &distHandshake{inner: dist.CreateHandshake(dist.HandshakeOptions{Version: dist.HandshakeVersion6})}
}

// Init implements ergonode.HandshakeInterface.
func (h *distHandshake) Init(nodename string, creation uint32, flags ergonode.Flags) error {
	if !flags.Enable {
		flags = ergonode.DefaultFlags()
	}
	flags.EnableHeaderAtomCache = false
	flags.EnableFragmentation = false
	return h.inner.Init(nodename, creation, flags)
}

// Version implements ergonode.HandshakeInterface.
func (h *distHandshake) Version() ergonode.HandshakeVersion { return h.inner.Version() }

// Start implements ergonode.HandshakeInterface (this node connects).
func (h *distHandshake) Start(remote net.Addr, conn lib.NetReadWriter, tls bool, cookie string) (ergonode.HandshakeDetails, error) {
	hc := newHandshakeConn(conn, tls)
	d, err := h.inner.Start(remote, hc, tls, cookie)
	if err != nil {
		h.logf("could not connect to %s: %s", peerName(hc, remote), handshakeError(err, hc))
		return d, err
	}
	d.Custom = peerInfo{flags: hc.peerFlags}
	return d, err
}

// Accept implements ergonode.HandshakeInterface (the peer connects).
func (h *distHandshake) Accept(remote net.Addr, conn lib.NetReadWriter, tls bool, cookie string) (ergonode.HandshakeDetails, error) {
	if tls {
		if err := tlsAccept(conn); err != nil {
			h.logf("refused a connection from %s: %s", remote, explainTLSError(err))
			// Said above; io.EOF keeps ergo from saying it again less clearly.
			return ergonode.HandshakeDetails{}, io.EOF
		}
	}
	hc := newHandshakeConn(conn, tls)
	hc.accepting = true
	d, err := h.inner.Accept(remote, hc, tls, cookie)
	if err != nil && !tls && hc.first == tlsRecordHandshake {
		h.logf("refused a connection from %s: it speaks TLS (OTP's -proto_dist inet_tls) and this node does not; "+
			"start ps_port node with --tls-cert and --tls-key (docs/node.md, \"TLS\"), or the peer without inet_tls", remote)
		return d, io.EOF
	}
	if err != nil {
		h.logf("refused a connection from %s: %s", peerName(hc, remote), handshakeError(err, hc))
		return d, io.EOF // said above; io.EOF keeps ergo quiet
	}
	d.Custom = peerInfo{flags: hc.peerFlags}
	return d, err
}

func (h *distHandshake) logf(format string, a ...interface{}) {
	if h.log != nil {
		h.log.Printf(format, a...)
	}
}

// handshakeConn sits under ergo's handshake: it adds dflagsAdded to the
// name and challenge messages ergo writes, and reads the peer's flags from
// the peer's name or challenge message (and complement).
type handshakeConn struct {
	lib.NetReadWriter
	lenSize   int    // 2, or 4 under TLS
	first     int    // the peer's first byte; -1 before it
	in        []byte // peer bytes not parsed yet
	done      bool   // the peer's last handshake message was seen
	peerFlags uint64

	// for explaining a failed handshake (logs.go)
	accepting bool   // the peer connected to this node
	name      string // the peer's node name, once it said it
	version   int    // the handshake version of the peer's name message
	status    string // the peer's status message ("ok", "nok", ...), connecting only
	sentReply bool   // this node sent its challenge reply
}

func newHandshakeConn(conn lib.NetReadWriter, tls bool) *handshakeConn {
	c := &handshakeConn{NetReadWriter: conn, lenSize: 2, first: -1}
	if tls {
		c.lenSize = 4
	}
	return c
}

// Write gets one whole handshake message per call (ergo writes each from
// its own buffer).
func (c *handshakeConn) Write(p []byte) (int, error) {
	if len(p) <= c.lenSize {
		return c.NetReadWriter.Write(p)
	}
	m := append([]byte(nil), p...)
	body := m[c.lenSize:]
	if body[0] == 'r' {
		c.sentReply = true
	}
	switch body[0] {
	case 'N': // name or challenge, version 6: flags are 8 bytes after the tag
		if len(body) >= 9 {
			f := binary.BigEndian.Uint64(body[1:9])
			binary.BigEndian.PutUint64(body[1:9], f&^dflagsRemoved|dflagsAdded)
		}
	case 'n': // name or challenge, version 5: version (2 bytes), then 4 bytes of flags
		if len(body) >= 7 {
			f := binary.BigEndian.Uint32(body[3:7])
			binary.BigEndian.PutUint32(body[3:7], f&^dflagsRemoved|dflagsAdded)
		}
	}
	if _, err := c.NetReadWriter.Write(m); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read passes the peer's bytes on unchanged and parses the handshake
// messages among them.
func (c *handshakeConn) Read(p []byte) (int, error) {
	n, err := c.NetReadWriter.Read(p)
	if n > 0 && c.first < 0 {
		c.first = int(p[0])
	}
	if n > 0 && !c.done {
		c.in = append(c.in, p[:n]...)
		c.parse()
	}
	return n, err
}

func (c *handshakeConn) parse() {
	for !c.done && len(c.in) >= c.lenSize {
		var l int
		if c.lenSize == 2 {
			l = int(binary.BigEndian.Uint16(c.in))
		} else {
			l = int(binary.BigEndian.Uint32(c.in))
		}
		if len(c.in) < c.lenSize+l {
			return
		}
		m := c.in[c.lenSize : c.lenSize+l]
		c.in = c.in[c.lenSize+l:]
		if len(m) == 0 {
			continue
		}
		switch m[0] {
		case 'N':
			if len(m) >= 9 {
				c.peerFlags |= binary.BigEndian.Uint64(m[1:9])
			}
			// name: N Flags:8 Creation:4 Len:2 Name; challenge: the same
			// with Challenge:4 after the flags
			at := 13
			if !c.accepting {
				at = 17
			}
			if len(m) >= at+2 {
				if l := int(binary.BigEndian.Uint16(m[at:])); len(m) >= at+2+l {
					c.name = string(m[at+2 : at+2+l])
				}
			}
			c.version = 6
		case 'n':
			if len(m) >= 7 {
				c.peerFlags |= uint64(binary.BigEndian.Uint32(m[3:7]))
				c.version = int(binary.BigEndian.Uint16(m[1:3]))
			}
			// name: n Version:2 Flags:4 Name; challenge: Challenge:4 before the name
			at := 7
			if !c.accepting {
				at = 11
			}
			if len(m) > at {
				c.name = string(m[at:])
			}
		case 's':
			c.status = string(m[1:])
		case 'c': // complement: the high 32 bits of the flags
			if len(m) >= 5 {
				c.peerFlags |= uint64(binary.BigEndian.Uint32(m[1:5])) << 32
			}
		case 'a', 'r': // the peer's last message; distribution data may follow
			c.done = true
			c.in = nil
		}
	}
}

// handshakeError says why a distribution handshake failed and what to do,
// from what ergo returned and what handshakeConn saw.
func handshakeError(err error, hc *handshakeConn) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "'r' invalid reply"):
		return "wrong cookie: its challenge reply was not made with this node's cookie; " +
			"give both the same cookie (ps_port: --cookie-file or PS_PORT_COOKIE; erl: -setcookie or ~/.erlang.cookie)"
	case strings.Contains(msg, "'a' digest"):
		return "wrong cookie: its challenge acknowledgement was not made with this node's cookie; " +
			"give both the same cookie (ps_port: --cookie-file or PS_PORT_COOKIE; erl: -setcookie or ~/.erlang.cookie)"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		if hc.sentReply {
			return "it closed the connection after this node's challenge reply: the cookies differ " +
				"(give both the same cookie), or it refuses this node"
		}
		return "it closed the connection during the handshake (" + msg + ")"
	case strings.Contains(msg, "handshake negotiation failed"):
		return "it refused the connection (status " + fmt.Sprintf("%q", hc.status) + "): " +
			"a node of this name is connected already, or it does not allow this node"
	case hc.version != 0 && hc.version != 5 && hc.version != 6:
		return fmt.Sprintf("it speaks distribution handshake version %d; this node speaks 5 and 6 (OTP 23 and later)", hc.version)
	}
	return "distribution handshake failed: " + msg
}

// peerName is the peer as a log line names it: its node name when it said
// it, and its address.
func peerName(hc *handshakeConn, remote net.Addr) string {
	if hc.name != "" {
		return fmt.Sprintf("%s (%s)", hc.name, remote)
	}
	return remote.String()
}
