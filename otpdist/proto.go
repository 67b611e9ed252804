package otpdist

import (
	"context"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/lib"
	ergonode "github.com/ergo-services/ergo/node"
	"github.com/ergo-services/ergo/proto/dist"
)

// distProto is ergo's distribution protocol with these changes.
//
// It sends without the header atom cache. ergo's cache bookkeeping hands
// the empty atom (in every SEND control message) the last cache slot and
// can mark it as known to the peer before the peer has it; OTP 25 then
// drops the connection with "corrupted distribution header" (seen here
// about once in 30 test runs, on the first data message of a connection).
// distHandshake no longer advertises the cache either, so neither side
// uses it.
//
// It ticks and times out as an OTP node with net_ticktime tickTime does
// (tickConn, tick.go), not as ergo's fixed 60 s.
//
// And for OTP peers it puts distConn (conn.go) between the socket and
// ergo: pass-through packets on the wire, distribution headers for ergo,
// the UNLINK_ID link protocol translated to the old one, long references
// restored, and ergo's fragments put back together.
type distProto struct {
	ergonode.ProtoInterface
	tickTime time.Duration // net_ticktime (tick.go); 0: DefaultNetTickTime
	log      *log.Logger   // where distConn says why it dropped a connection
	// maxRequest is the largest message a peer may send (weigh.go); 0:
	// limits.MaxRequestDefault.
	maxRequest int
	route      func(ergonode.CoreRouter) ergonode.CoreRouter // Config.Route
	links      *Links                                        // the connections to OTP peers, by name once served
}

// Links knows each connection's distConn: from Init on by ergo's
// connection, and by the peer's name while ergo serves it (a connection
// that lost a race to another one to the same peer is never served).
type Links struct {
	mu     sync.Mutex
	byConn map[ergonode.ConnectionInterface]peerConn
	byName map[string]*distConn
}

type peerConn struct {
	name string
	dc   *distConn // nil for a connection without one
}

func newLinks() *Links {
	return &Links{byConn: make(map[ergonode.ConnectionInterface]peerConn), byName: make(map[string]*distConn)}
}

// Direct is the connection ergo serves to node, for writing to directly;
// nil when ergo serves none.
func (l *Links) Direct(node string) Direct {
	l.mu.Lock()
	dc := l.byName[node]
	l.mu.Unlock()
	if dc == nil {
		return nil
	}
	return dc
}

// Serve implements ergonode.ProtoInterface: the connection's reader
// delivers through Config.Route's router.
func (p distProto) Serve(conn ergonode.ConnectionInterface, router ergonode.CoreRouter) {
	if p.route != nil {
		router = p.route(router)
	}
	if p.links == nil {
		p.ProtoInterface.Serve(unwrap(conn), router)
		return
	}
	l := p.links
	l.mu.Lock()
	pc, ok := l.byConn[conn]
	if ok && pc.dc != nil {
		l.byName[pc.name] = pc.dc
	}
	l.mu.Unlock()
	if ok && pc.dc != nil {
		// The peer's SENDs are handled on the reader when ergo is idle
		// (local.go); set before ergo's reader, which runs here, reads.
		pc.dc.local = router
		router = countingRouter{CoreRouter: router, n: &pc.dc.routed}
	}
	p.ProtoInterface.Serve(unwrap(conn), router)
	l.mu.Lock()
	delete(l.byConn, conn)
	if ok && l.byName[pc.name] == pc.dc {
		delete(l.byName, pc.name)
	}
	l.mu.Unlock()
	if ok && p.log != nil {
		p.log.Printf("the connection to %s is gone", pc.name)
	}
}

// Terminate implements ergonode.ProtoInterface.
func (p distProto) Terminate(conn ergonode.ConnectionInterface) {
	p.ProtoInterface.Terminate(unwrap(conn))
}

func newDistProto(po ergonode.ProtoOptions) distProto {
	return distProto{ProtoInterface: dist.CreateProto(po)}
}

// Init implements ergonode.ProtoInterface.
func (p distProto) Init(ctx context.Context, conn lib.NetReadWriter, nodename string,
	details ergonode.HandshakeDetails) (ergonode.ConnectionInterface, error) {
	tick := p.tickTime
	if tick <= 0 {
		tick = DefaultNetTickTime
	}
	raw := conn
	conn = newTickConn(conn, tick)
	details.Flags.EnableHeaderAtomCache = false
	info, _ := details.Custom.(peerInfo)
	if isErgoPeer(details.Flags) {
		// Another ergo node would read and write ergo's own format
		// (compressed, with its atom cache), which distConn cannot weigh
		// (weigh.go): a peer claiming ergo's flags would bypass
		// --max-request and reach ergo's decoder with any list header.
		// ps_port serves OTP nodes.
		if p.log != nil {
			p.log.Printf("refused a connection from %s: it advertises ergo's own distribution flags (compression, proxy); ps_port node serves Erlang/OTP nodes only", details.Name)
		}
		return nil, fmt.Errorf("%s advertises ergo's own distribution flags; ps_port node serves Erlang/OTP nodes only", details.Name)
	}
	// ergo fragments long messages, distConn puts them back together.
	details.Flags.EnableFragmentation = true
	var early []byte
	if details.Buffer != nil { // read along with the handshake's last message
		early = append(early, details.Buffer.B...)
		lib.ReleaseBuffer(details.Buffer)
		details.Buffer = nil
	}
	dc := newDistConn(conn, info.flags&dflagUnlinkID != 0, early)
	dc.peer, dc.log, dc.maxReq = details.Name, p.log, p.maxRequest
	dc.nodename = nodename
	dc.decodeOpts = etf.DecodeOptions{AtomMapping: details.AtomMapping, FlagBigPidRef: details.Flags.EnableBigPidRef}
	dc.closer, _ = raw.(io.Closer)
	if onDistConn != nil {
		onDistConn(details.Name, dc)
	}
	ci, err := p.ProtoInterface.Init(ctx, dc, nodename, details)
	if err == nil {
		ci = &directConn{ConnectionInterface: ci, dc: dc, creation: details.Creation} // monitors.go
	}
	if err == nil && p.links != nil {
		p.links.mu.Lock()
		p.links.byConn[ci] = peerConn{name: details.Name, dc: dc}
		p.links.mu.Unlock()
	}
	return ci, err
}

// onDistConn, when set (by tests), sees every distConn made.
var onDistConn func(peer string, dc *distConn)

// isErgoPeer tells ergo nodes from OTP ones by the flags only ergo sets.
func isErgoPeer(f ergonode.Flags) bool {
	return f.EnableProxy || f.EnableCompression
}
