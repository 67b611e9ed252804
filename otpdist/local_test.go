package otpdist

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ergo-services/ergo/etf"
	ergonode "github.com/ergo-services/ergo/node"
)

// sendRecorder is a connection's router that keeps what RouteSend and
// RouteLink were given (other methods are not called in these tests).
type sendRecorder struct {
	ergonode.CoreRouter
	mu    sync.Mutex
	sends []etf.Term
	to    []etf.Pid
	links int
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
		"a registered name":  tuple(small(6), peerPid, atomBytes(""), atomBytes("proton_stream")),
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
