package otpdist

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	ergonode "github.com/ergo-services/ergo/node"
)

// sendRecorder is a connection's router that keeps what RouteSend,
// RouteSendReg and RouteLink were given (other methods are not called in
// these tests).
type sendRecorder struct {
	ergonode.CoreRouter
	mu    sync.Mutex
	sends []etf.Term
	to    []etf.Pid
	named []gen.ProcessID // RouteSendReg's
	from  []etf.Pid       // RouteSendReg's
	links int
}

func (r *sendRecorder) RouteSendReg(from etf.Pid, to gen.ProcessID, message etf.Term) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, message)
	r.named = append(r.named, to)
	r.from = append(r.from, from)
	return nil
}

func (r *sendRecorder) RouteSend(from, to etf.Pid, message etf.Term) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, message)
	r.to = append(r.to, to)
	return nil
}

func (r *sendRecorder) RouteLink(a, b etf.Pid) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.links++
	return nil
}

func (r *sendRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sends)
}

// localConn is a distConn served as Serve serves it: SENDs to
// ps@127.0.0.1's processes may be handled on the reader.
func localConn() (*fakeConn, *distConn, *sendRecorder, countingRouter) {
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	rec := &sendRecorder{}
	c.local, c.nodename = rec, "ps@127.0.0.1"
	return f, c, rec, countingRouter{CoreRouter: rec, n: &c.routed}
}

func TestDistConnDeliversSendsOnTheReaderWhenErgoIsIdle(t *testing.T) {
	f, c, rec, _ := localConn()
	send := tuple(small(opSend), atomBytes(""), ourPid)
	msg := tuple(peerPid, tuple(atomBytes("command"), binBytes([]byte("hello\n"))))
	link := tuple(small(1), peerPid, ourPid)
	f.send(append(otpPacket(send, msg), otpPacket(link, nil)...), 0)
	if got, want := readN(t, c, len(ergoPacket(link, nil)), 1<<16), ergoPacket(link, nil); !bytes.Equal(got, want) {
		t.Fatalf("ergo got % x\nwant only the link % x", got, want)
	}
	if rec.count() != 1 || c.stats.onReader.Load() != 1 {
		t.Fatalf("%d messages routed, %d on the reader; want the SEND, on the reader", rec.count(), c.stats.onReader.Load())
	}
	want := etf.Tuple{etf.Pid{Node: "peer@127.0.0.1", ID: 77, Creation: 1},
		etf.Tuple{etf.Atom("command"), []byte("hello\n")}}
	got, ok := rec.sends[0].(etf.Tuple)
	if !ok || len(got) != 2 || got[0] != want[0] || !bytes.Equal(got[1].(etf.Tuple)[1].([]byte), []byte("hello\n")) {
		t.Fatalf("routed %#v, want %#v", rec.sends[0], want)
	}
	if rec.to[0].ID != 1011 || rec.to[0].Node != "ps@127.0.0.1" {
		t.Fatalf("routed to %#v, want ps@127.0.0.1's 1011", rec.to[0])
	}
}

// A SEND must not overtake a packet ergo has not routed yet: it goes to
// ergo too, and the reader takes SENDs again once ergo caught up.
func TestDistConnKeepsOrderWithWhatErgoHolds(t *testing.T) {
	f, c, rec, counting := localConn()
	send := tuple(small(opSend), atomBytes(""), ourPid)
	msg := tuple(atomBytes("command"), binBytes([]byte("x")))
	link := tuple(small(1), peerPid, ourPid)
	f.send(append(otpPacket(link, nil), otpPacket(send, msg)...), 0)
	want := append(ergoPacket(link, nil), ergoPacket(send, msg)...)
	if got := readN(t, c, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatalf("ergo got % x\nwant the link then the SEND % x", got, want)
	}
	if c.stats.onReader.Load() != 0 {
		t.Fatal("a SEND was handled on the reader while ergo still held a link before it")
	}
	// ergo routes the link; the SEND is still owed.
	counting.RouteLink(etf.Pid{}, etf.Pid{})
	f.send(append(otpPacket(send, msg), tick...), 0)
	want = append(ergoPacket(send, msg), tick...)
	if got := readN(t, c, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatalf("ergo got % x\nwant the SEND then the tick % x", got, want)
	}
	// ergo routes both SENDs: idle, so the next one is the reader's.
	counting.RouteSend(etf.Pid{}, etf.Pid{}, nil)
	counting.RouteSend(etf.Pid{}, etf.Pid{}, nil)
	f.send(append(otpPacket(send, msg), tick...), 0)
	if got := readN(t, c, len(tick), 1<<16); !bytes.Equal(got, tick) {
		t.Fatalf("ergo got % x, want only the tick", got)
	}
	if c.stats.onReader.Load() != 1 || rec.count() != 3 {
		t.Fatalf("%d SENDs on the reader, %d routed; want 1 and 3", c.stats.onReader.Load(), rec.count())
	}
}

func TestDistConnLeavesOtherSendsToErgo(t *testing.T) {
	msg := tuple(atomBytes("command"), binBytes([]byte("x")))
	for name, ctl := range map[string][]byte{
		"another node's pid": tuple(small(opSend), atomBytes(""), peerPid),
		"an alias":           tuple(small(opAliasSend), peerPid, longRef("ps@127.0.0.1", 1, 3)),
	} {
		f, c, rec, _ := localConn()
		f.send(otpPacket(ctl, msg), 0)
		if got, want := readN(t, c, len(ergoPacket(ctl, msg)), 1<<16), ergoPacket(ctl, msg); !bytes.Equal(got, want) {
			t.Fatalf("%s: ergo got % x\nwant % x", name, got, want)
		}
		if rec.count() != 0 {
			t.Fatalf("%s: handled on the reader", name)
		}
	}
}

// A REG_SEND (an owner's open request to the registered spawner) is
// handled on the reader too when ergo is idle, with its sender and the
// name on this node; behind a packet ergo has not routed (the MONITOR of a
// GenServer.call) it goes to ergo.
func TestDistConnDeliversRegSendsOnTheReaderWhenErgoIsIdle(t *testing.T) {
	f, c, rec, counting := localConn()
	regSend := tuple(small(opRegSend), peerPid, atomBytes(""), atomBytes("proton_stream"))
	call := tuple(atomBytes("$gen_call"), tuple(peerPid, small(7)), atomBytes("ping"))
	f.send(append(otpPacket(regSend, call), tick...), 0)
	if got := readN(t, c, len(tick), 1<<16); !bytes.Equal(got, tick) {
		t.Fatalf("ergo got % x, want only the tick", got)
	}
	if rec.count() != 1 || c.stats.onReader.Load() != 1 {
		t.Fatalf("%d messages routed, %d on the reader; want the REG_SEND, on the reader", rec.count(), c.stats.onReader.Load())
	}
	wantFrom := etf.Pid{Node: "peer@127.0.0.1", ID: 77, Creation: 1}
	if rec.named[0] != (gen.ProcessID{Name: "proton_stream", Node: "ps@127.0.0.1"}) || rec.from[0] != wantFrom {
		t.Fatalf("routed to %#v from %#v, want proton_stream on ps@127.0.0.1 from %#v", rec.named[0], rec.from[0], wantFrom)
	}
	if m, ok := rec.sends[0].(etf.Tuple); !ok || len(m) != 3 || m[0] != etf.Atom("$gen_call") || m[2] != etf.Atom("ping") {
		t.Fatalf("routed %#v, want the call", rec.sends[0])
	}

	monitor := tuple(small(19), peerPid, atomBytes("proton_stream"), longRef("peer@127.0.0.1", 1, 3))
	f.send(append(otpPacket(monitor, nil), otpPacket(regSend, call)...), 0)
	want := append(ergoPacket(monitor, nil), ergoPacket(regSend, call)...)
	if got := readN(t, c, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatalf("ergo got % x\nwant the MONITOR then the REG_SEND % x", got, want)
	}
	if c.stats.onReader.Load() != 1 {
		t.Fatal("a REG_SEND was handled on the reader while ergo still held a MONITOR before it")
	}
	// ergo routes both (the recorder stands in for its core; each call
	// counts one packet).
	counting.RouteLink(etf.Pid{}, etf.Pid{})
	counting.RouteSendReg(etf.Pid{}, gen.ProcessID{}, nil)
	if !c.ergoIdle() {
		t.Fatal("ergo not idle after routing both")
	}
}

// A packet ergo routes in a way not known here (GROUP_LEADER) ends the
// reader's deliveries for the connection.
func TestDistConnStopsDeliveringAfterAnUnknownPacket(t *testing.T) {
	f, c, rec, _ := localConn()
	gl := tuple(small(7), peerPid, ourPid)
	send := tuple(small(opSend), atomBytes(""), ourPid)
	msg := small(1)
	f.send(append(otpPacket(gl, nil), otpPacket(send, msg)...), 0)
	want := append(ergoPacket(gl, nil), ergoPacket(send, msg)...)
	if got := readN(t, c, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatalf("ergo got % x\nwant % x", got, want)
	}
	if rec.count() != 0 || !c.readerOff {
		t.Fatalf("%d handled on the reader after GROUP_LEADER (reader off: %v)", rec.count(), c.readerOff)
	}
}

func TestCountingRouterCountsAfterTheCall(t *testing.T) {
	var n atomic.Uint64
	seen := uint64(99)
	inner := &countProbe{n: &n, seen: &seen}
	r := countingRouter{CoreRouter: inner, n: &n}
	r.RouteSend(etf.Pid{}, etf.Pid{}, nil)
	if seen != 0 || n.Load() != 1 {
		t.Fatalf("count during the call %d, after %d; want 0 and 1", seen, n.Load())
	}
}

type countProbe struct {
	ergonode.CoreRouter
	n    *atomic.Uint64
	seen *uint64
}

func (p *countProbe) RouteSend(from, to etf.Pid, message etf.Term) error {
	*p.seen = p.n.Load()
	return nil
}

// RegSendPacket's packet is what an OTP node sends for a REG_SEND: the
// reader turns it into the packet ergo reads, control and message intact.
func TestRegSendPacketIsAWholePassThroughPacket(t *testing.T) {
	msg := tuple(atomBytes("$gen_call"), tuple(ourPid, small(7)), atomBytes("ping"))
	p := RegSendPacket(ourPid, "rex", msg)
	if n := int(binary.BigEndian.Uint32(p)); n != len(p)-4 {
		t.Fatalf("length field %d, packet of %d bytes after it", n, len(p)-4)
	}
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	f.send(p, 0)
	ctl := tuple(small(6), ourPid, atomBytes(""), atomBytes("rex"))
	if got, want := readN(t, c, len(ergoPacket(ctl, msg)), 1<<16), ergoPacket(ctl, msg); !bytes.Equal(got, want) {
		t.Fatalf("ergo got % x\nwant % x", got, want)
	}
}

// A reply the node writes itself to a call made with an alias: the
// ALIAS_SEND head carries the alias as the peer sent it (WholeRef puts
// back the words ergo cut from an OTP 26+ reference it saw in the call's
// MONITOR), and the packet is whole.
func TestAliasSendHeadWithTheWholeReference(t *testing.T) {
	ref5 := longRef("peer@127.0.0.1", 1, 5)
	ref3 := longRef("peer@127.0.0.1", 1, 3) // ergo's encoding of ref5
	binary.BigEndian.PutUint32(ref3[len(ref3)-12:], binary.BigEndian.Uint32(ref3[len(ref3)-12:])&(1<<18-1))
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	if got := c.WholeRef(ref3); !bytes.Equal(got, ref3) {
		t.Fatalf("WholeRef before any long reference was seen: % x, want it unchanged", got)
	}
	monitor := tuple(small(19), peerPid, atomBytes("proton_stream"), ref5)
	f.send(otpPacket(monitor, nil), 0)
	readN(t, c, len(ergoPacket(monitor, nil)), 1<<16)
	alias := c.WholeRef(ref3)
	if !bytes.Equal(alias, ref5) {
		t.Fatalf("WholeRef: % x\nwant the peer's % x", alias, ref5)
	}
	msg := tuple(aliasTag(alias), tuple(atomBytes("ok"), ourPid))
	head := AliasSendHead(ourPid, alias, len(msg))
	if err := c.WriteDirect(head, msg); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, f, otpPacket(tuple(small(opAliasSend), ourPid, ref5), msg))
}
