package otpdist

import (
	"encoding/binary"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/lib"
	ergonode "github.com/ergo-services/ergo/node"
)

// Monitor signals to an OTP peer skip ergo's sender: its MONITOR_P,
// DEMONITOR_P and MONITOR_P_EXIT are written onto the connection by the
// goroutine that makes them, like the messages node mode writes itself
// (Direct). ergo queued each for its sender goroutine, which wrote it into
// a bufio buffer that a timer of 200 ns flushed: a goroutine hand-off and
// a thread woken through the poller for the timer, per signal. A node-mode
// child costs three: the monitor of its owner when it starts, and at its
// end that monitor's removal and the DOWN of the monitor the owner's node
// set on it (docs/benchmarks.md, "Spawn").
//
// Order: a signal from one process to another must not overtake what that
// process sent the other before it. Node mode's children send everything
// to their owners' nodes directly once ergo serves the connection (data,
// exits, call replies: node/direct.go, node/reply.go), so a signal written
// here follows them; what is still in ergo's queue is other processes'.
type directConn struct {
	ergonode.ConnectionInterface
	dc       *distConn
	creation uint32 // the peer's (ergo's connection does not say)
}

// Control message operations written here (erl_ext_dist).
const (
	opMonitorP   = 19
	opDemonitorP = opDemonitor
)

// controlEncoding is how ergo encodes for an OTP 25+ peer.
var controlEncoding = etf.EncodeOptions{FlagBigCreation: true, FlagBigPidRef: true}

// Monitor implements ergonode.ConnectionInterface: {19, From, To, Ref}.
func (d *directConn) Monitor(local etf.Pid, remote etf.Pid, ref etf.Ref) error {
	if err := d.incarnation(remote.Creation); err != nil {
		return err
	}
	return d.dc.writeControl(etf.Tuple{opMonitorP, local, remote, ref})
}

// Demonitor implements ergonode.ConnectionInterface: {20, From, To, Ref}.
func (d *directConn) Demonitor(local etf.Pid, remote etf.Pid, ref etf.Ref) error {
	if err := d.incarnation(remote.Creation); err != nil {
		return err
	}
	return d.dc.writeControl(etf.Tuple{opDemonitorP, local, remote, ref})
}

// MonitorExit implements ergonode.ConnectionInterface: {21, From, To, Ref,
// Reason}, the DOWN of a monitor the peer set on a process of this node.
func (d *directConn) MonitorExit(to etf.Pid, terminated etf.Pid, reason string, ref etf.Ref) error {
	if err := d.incarnation(to.Creation); err != nil {
		return err
	}
	return d.dc.writeControl(etf.Tuple{opMonitorPExit, terminated, to, ref, etf.Atom(reason)})
}

// incarnation refuses a signal to a process of an earlier incarnation of
// the peer, as ergo's sender does.
func (d *directConn) incarnation(creation uint32) error {
	if peer := d.creation; creation > 0 && peer > 0 && peer != creation {
		return lib.ErrProcessIncarnation
	}
	return nil
}

// writeControl writes the control message ctl, without a message, as one
// pass-through packet: its references restored as the peer sent them
// (longrefs.go), and a MONITOR_P_EXIT's reference forgotten, as when ergo
// writes one.
func (c *distConn) writeControl(ctl etf.Tuple) error {
	b := lib.TakeBuffer()
	defer lib.ReleaseBuffer(b)
	if err := etf.Encode(ctl, b, controlEncoding); err != nil {
		return err
	}
	var refs []span
	if _, err := walkTerms(b.B, 1, &refs); err != nil {
		return err
	}
	p := make([]byte, 4, 4+2+len(b.B)+16)
	p = append(p, passThrough, versionMagic)
	p = c.appendExpanded(p, b.B, refs, 0)
	if op, _ := controlOp(b.B); op == opMonitorPExit {
		for _, r := range refs {
			c.refs.remove(b.B[r.start:r.end])
		}
	}
	binary.BigEndian.PutUint32(p, uint32(len(p)-4))
	return c.WriteDirect(p)
}

// unwrap is the connection ergo made, which its protocol's Serve and
// Terminate take.
func unwrap(ci ergonode.ConnectionInterface) ergonode.ConnectionInterface {
	if d, ok := ci.(*directConn); ok {
		return d.ConnectionInterface
	}
	return ci
}
