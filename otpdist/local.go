package otpdist

import (
	"sync/atomic"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	ergonode "github.com/ergo-services/ergo/node"
)

// A peer's SEND to a process of this node is handled on the connection's
// reading goroutine (distConn.Read, called by ergo's reader) when ergo has
// nothing of this connection left to route: the message is decoded and
// given to the connection's router there, as ergo's handler would, and
// never reaches ergo.
//
// ergo hands every packet its reader completes to a handler goroutine
// through a channel. Readying that goroutine wakes a second thread of the
// scheduler when a P is idle (a futex wake, a thread that spins and parks
// again, and the reader's thread parking in turn): about two context
// switches per message, measured with strace on an owner's round trip
// through `cat` (4.2 context switches in the node per round trip, against
// 2.0 with GOMAXPROCS=1, which has no idle P to wake).
//
// Order: a sender's messages must reach a process in the order sent, and
// so must every signal between the same two processes (a monitor, a link,
// a DOWN). A SEND is only taken on the reader when every packet given to
// ergo before it has been routed: distConn counts the packets it hands
// ergo that ergo routes with exactly one call of its router (routeCalls),
// and countingRouter, the outermost router of the connection, counts the
// calls once they have returned. A packet whose routing is not known here
// (an operation ergo may add) stops the reader's delivery for the rest of
// the connection: correct, only slower.

// routeCalls tells how many calls of its router ergo's handler makes for a
// packet of operation op (ergo v1.999.224, proto/dist handleMessage), and
// whether that is known. Operations it ignores make none; any operation
// not listed is unknown (ergo drops the connection for most).
func routeCalls(op int) (calls int, known bool) {
	switch op {
	case 1, // LINK: RouteLink
		opSend,         // RouteSend
		3,              // EXIT: RouteExit
		opUnlink,       // RouteUnlink
		opRegSend,      // REG_SEND: RouteSendReg
		19,             // MONITOR_P: RouteMonitor or RouteMonitorReg
		opDemonitor,    // RouteDemonitor
		opMonitorPExit, // RouteMonitorExit or RouteMonitorExitReg
		29,             // SPAWN_REQUEST: RouteSpawnRequest
		31,             // SPAWN_REPLY: RouteSpawnReply
		opAliasSend:    // RouteSendAlias
		return 1, true
	case 5, // NODE_LINK
		8,                  // EXIT2
		opSendSender,       // SEND_SENDER (ergo does not advertise it)
		24, 25, 26, 27, 28: // PAYLOAD_EXIT, _TT, PAYLOAD_EXIT2, _TT, PAYLOAD_MONITOR_P_EXIT
		return 0, true
	}
	return 0, false
}

// handedToErgo notes a packet of operation op given to ergo.
func (c *distConn) handedToErgo(op int) {
	n, known := routeCalls(op)
	if !known {
		c.readerOff = true
		return
	}
	c.handed += uint64(n)
}

// ergoIdle reports whether ergo has routed every packet handed to it.
func (c *distConn) ergoIdle() bool {
	return !c.readerOff && c.routed.Load() == c.handed
}

// deliverOnReader handles the whole packet's SEND {2, ”, To} or REG_SEND
// {6, From, ”, ToName} with message body (external term format without
// the 131) itself, when To is a process of this node and ergo is idle;
// false: ergo is to have it. A REG_SEND is how an owner's open request
// reaches the node's registered spawner.
func (c *distConn) deliverOnReader(ctl, body []byte) bool {
	if c.local == nil || !c.ergoIdle() {
		return false
	}
	op, arity := controlOp(ctl)
	if !(op == opSend && arity == 3) && !(op == opRegSend && arity == 4) {
		return false
	}
	term, rest, err := etf.Decode(ctl, nil, c.decodeOpts)
	if err != nil || len(rest) != 0 {
		return false // ergo says what is wrong with it
	}
	t, ok := term.(etf.Tuple)
	if !ok || len(t) != arity {
		return false
	}
	var from etf.Pid
	var toName etf.Atom
	var to etf.Pid
	if op == opRegSend {
		if from, ok = t[1].(etf.Pid); !ok {
			return false
		}
		if toName, ok = t[3].(etf.Atom); !ok {
			return false
		}
	} else if to, ok = t[2].(etf.Pid); !ok || string(to.Node) != c.nodename {
		return false
	}
	msg, rest, err := etf.Decode(body, nil, c.decodeOpts)
	if err != nil || len(rest) != 0 {
		return false
	}
	if op == opRegSend {
		c.local.RouteSendReg(from, gen.ProcessID{Name: string(toName), Node: c.nodename}, msg)
	} else {
		c.local.RouteSend(etf.Pid{}, to, msg)
	}
	c.stats.onReader.Add(1)
	return true
}

// countingRouter counts the packets ergo's handler has routed (see above):
// each method here is the one call ergo makes for one packet.
type countingRouter struct {
	ergonode.CoreRouter
	n *atomic.Uint64
}

func (r countingRouter) done(err error) error {
	r.n.Add(1)
	return err
}

func (r countingRouter) RouteSend(from, to etf.Pid, message etf.Term) error {
	return r.done(r.CoreRouter.RouteSend(from, to, message))
}

func (r countingRouter) RouteSendReg(from etf.Pid, to gen.ProcessID, message etf.Term) error {
	return r.done(r.CoreRouter.RouteSendReg(from, to, message))
}

func (r countingRouter) RouteSendAlias(from etf.Pid, to etf.Alias, message etf.Term) error {
	return r.done(r.CoreRouter.RouteSendAlias(from, to, message))
}

func (r countingRouter) RouteSpawnRequest(node string, behaviorName string, request gen.RemoteSpawnRequest, args ...etf.Term) error {
	return r.done(r.CoreRouter.RouteSpawnRequest(node, behaviorName, request, args...))
}

func (r countingRouter) RouteSpawnReply(to etf.Pid, ref etf.Ref, result etf.Term) error {
	return r.done(r.CoreRouter.RouteSpawnReply(to, ref, result))
}

func (r countingRouter) RouteLink(a, b etf.Pid) error {
	return r.done(r.CoreRouter.RouteLink(a, b))
}

func (r countingRouter) RouteUnlink(a, b etf.Pid) error {
	return r.done(r.CoreRouter.RouteUnlink(a, b))
}

func (r countingRouter) RouteExit(to, terminated etf.Pid, reason string) error {
	return r.done(r.CoreRouter.RouteExit(to, terminated, reason))
}

func (r countingRouter) RouteMonitorReg(by etf.Pid, process gen.ProcessID, ref etf.Ref) error {
	return r.done(r.CoreRouter.RouteMonitorReg(by, process, ref))
}

func (r countingRouter) RouteMonitor(by, process etf.Pid, ref etf.Ref) error {
	return r.done(r.CoreRouter.RouteMonitor(by, process, ref))
}

func (r countingRouter) RouteDemonitor(by etf.Pid, ref etf.Ref) error {
	return r.done(r.CoreRouter.RouteDemonitor(by, ref))
}

func (r countingRouter) RouteMonitorExitReg(terminated gen.ProcessID, reason string, ref etf.Ref) error {
	return r.done(r.CoreRouter.RouteMonitorExitReg(terminated, reason, ref))
}

func (r countingRouter) RouteMonitorExit(terminated etf.Pid, reason string, ref etf.Ref) error {
	return r.done(r.CoreRouter.RouteMonitorExit(terminated, reason, ref))
}
