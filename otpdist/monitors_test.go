package otpdist

import (
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/lib"
)

var (
	ourPidTerm  = etf.Pid{Node: "ps@127.0.0.1", ID: 1011, Creation: 1}
	peerPidTerm = etf.Pid{Node: "peer@127.0.0.1", ID: 77, Creation: 1}
)

// The monitor signals are written onto the connection as whole packets,
// in the order made, with no goroutine of ergo's in between.
func TestDirectConnWritesMonitorSignals(t *testing.T) {
	f := newFakeConn()
	d := &directConn{dc: newDistConn(f, true, nil), creation: 1}
	ref := etf.Ref{Node: "ps@127.0.0.1", Creation: 1, ID: [5]uint32{5, 6, 7}}
	if err := d.Monitor(ourPidTerm, peerPidTerm, ref); err != nil {
		t.Fatal(err)
	}
	if err := d.Demonitor(ourPidTerm, peerPidTerm, ref); err != nil {
		t.Fatal(err)
	}
	refEnc := encodeForTest(t, ref)
	want := otpPacket(tuple(small(19), ourPid, peerPid, refEnc), nil)
	want = append(want, otpPacket(tuple(small(20), ourPid, peerPid, refEnc), nil)...)
	waitWritten(t, f, want)
	stale := etf.Pid{Node: "peer@127.0.0.1", ID: 77, Creation: 2}
	if err := d.Monitor(ourPidTerm, stale, ref); err != lib.ErrProcessIncarnation {
		t.Fatalf("a monitor of an earlier incarnation's process: %v, want %v", err, lib.ErrProcessIncarnation)
	}
}

// The DOWN of a monitor the peer set with an OTP 26+ reference carries the
// reference as the peer sent it, and forgets it, as when ergo writes it.
func TestDirectConnMonitorExitRestoresTheReference(t *testing.T) {
	f := newFakeConn()
	dc := newDistConn(f, true, nil)
	d := &directConn{dc: dc, creation: 1}
	ref5 := longRef("peer@127.0.0.1", 1, 5)
	monitor := tuple(small(19), peerPid, ourPid, ref5)
	f.send(otpPacket(monitor, nil), 0)
	readN(t, dc, len(ergoPacket(monitor, nil)), 1<<16)
	if dc.refs.len() != 1 {
		t.Fatalf("%d long references kept, want the monitor's", dc.refs.len())
	}
	// ergo's view of ref5: its first three words, the first cut to 18 bits.
	r, _, err := etf.Decode(ref5, nil, etf.DecodeOptions{FlagBigPidRef: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.MonitorExit(peerPidTerm, ourPidTerm, "normal", r.(etf.Ref)); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, f, otpPacket(tuple(small(21), ourPid, peerPid, ref5, atomBytes("normal")), nil))
	if dc.refs.len() != 0 {
		t.Fatalf("%d long references kept after the DOWN, want none", dc.refs.len())
	}
}

func encodeForTest(t *testing.T, term etf.Term) []byte {
	t.Helper()
	b := lib.TakeBuffer()
	defer lib.ReleaseBuffer(b)
	if err := etf.Encode(term, b, controlEncoding); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), b.B...)
}

// Packets written directly while the connection is corked wait, in order,
// and go out together at the last Uncork; a splice is refused meanwhile
// (its caller falls back to WriteDirect, which keeps the order).
func TestDistConnCorkHoldsDirectPackets(t *testing.T) {
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	a := otpPacket(tuple(small(opSend), atomBytes(""), peerPid), small(1))
	b := otpPacket(tuple(small(opSend), atomBytes(""), peerPid), small(2))
	c.Cork()
	c.Cork()
	if err := c.WriteDirect(a); err != nil {
		t.Fatal(err)
	}
	if moved, err := c.MoveDirect(nil, -1, 1); moved || err != nil {
		t.Fatalf("MoveDirect while corked: %v, %v; want false, nil", moved, err)
	}
	if err := c.WriteDirect(b); err != nil {
		t.Fatal(err)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if w := f.written(); len(w) != 0 {
		t.Fatalf("written with a cork left: % x", w)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, f, append(append([]byte(nil), a...), b...))
}
