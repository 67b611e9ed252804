package otpdist

import (
	"bytes"
	"encoding/binary"
	"io"
	"log"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeConn is the socket under a distConn: what the peer sends comes from
// in, in the chunks given; what is written is kept.
type fakeConn struct {
	in      chan []byte
	pending []byte
	mu      sync.Mutex
	out     bytes.Buffer
}

func newFakeConn() *fakeConn { return &fakeConn{in: make(chan []byte, 1<<20)} }

func (f *fakeConn) Read(p []byte) (int, error) {
	if len(f.pending) == 0 {
		c, ok := <-f.in
		if !ok {
			return 0, io.EOF
		}
		f.pending = c
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out.Write(p)
}

func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }

func (f *fakeConn) written() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.out.Bytes()...)
}

// send queues b for the reader, cut into pieces of chunk bytes (0: whole).
func (f *fakeConn) send(b []byte, chunk int) {
	for len(b) > 0 {
		n := len(b)
		if chunk > 0 && chunk < n {
			n = chunk
		}
		f.in <- append([]byte(nil), b[:n]...)
		b = b[n:]
	}
}

// Terms, as bytes without the 131.

func atomBytes(s string) []byte { return append([]byte{119, byte(len(s))}, s...) }
func small(i byte) []byte       { return []byte{97, i} }
func binBytes(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{109}, uint32(len(b))), b...)
}

func tuple(elems ...[]byte) []byte {
	b := []byte{104, byte(len(elems))}
	for _, e := range elems {
		b = append(b, e...)
	}
	return b
}

func pidBytes(node string, id uint32) []byte {
	b := append([]byte{88}, atomBytes(node)...)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, 0)
	return binary.BigEndian.AppendUint32(b, 1)
}

// longRef is a NEWER_REFERENCE_EXT of the given words; words above the
// third carry bits that a 3-word copy loses.
func longRef(node string, seed uint32, words int) []byte {
	b := binary.BigEndian.AppendUint16([]byte{90}, uint16(words))
	b = append(b, atomBytes(node)...)
	b = binary.BigEndian.AppendUint32(b, 0x6b0498a5) // creation
	for i := 0; i < words; i++ {
		b = binary.BigEndian.AppendUint32(b, seed*0x01000193+uint32(i)*0x9e3779b9)
	}
	return b
}

// aliasTag is [alias | Ref].
func aliasTag(ref []byte) []byte {
	b := []byte{108, 0, 0, 0, 1}
	b = append(b, atomBytes("alias")...)
	return append(b, ref...)
}

// otpPacket is a pass-through packet as an OTP peer without the atom cache
// sends it; msg nil: a control message alone.
func otpPacket(ctl, msg []byte) []byte {
	body := append([]byte{passThrough, versionMagic}, ctl...)
	if msg != nil {
		body = append(append(body, versionMagic), msg...)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// ergoPacket is the same packet as ergo reads and writes it.
func ergoPacket(ctl, msg []byte) []byte {
	body := append([]byte{versionMagic, distHeader, 0}, ctl...)
	body = append(body, msg...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

var (
	peerPid = pidBytes("peer@127.0.0.1", 77)
	ourPid  = pidBytes("ps@127.0.0.1", 1011)
	ourPid2 = pidBytes("ps@127.0.0.1", 1012)
	tick    = []byte{0, 0, 0, 0}
)

// readN reads exactly n bytes from r, with reads of at most max bytes.
func readN(t *testing.T, r io.Reader, n, max int) []byte {
	t.Helper()
	got := make([]byte, 0, n)
	buf := make([]byte, max)
	done := make(chan error, 1)
	go func() {
		for len(got) < n {
			k, err := r.Read(buf[:min(max, n-len(got))])
			if k == 0 && err == nil {
				done <- io.ErrNoProgress
				return
			}
			got = append(got, buf[:k]...)
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read %d of %d bytes: %v", len(got), n, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("read: no %d bytes after 10 s", n)
	}
	return got
}

func waitWritten(t *testing.T, f *fakeConn, want []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Equal(f.written(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("written:\n% x\nwant:\n% x", f.written(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDistConnReadsPassThroughPackets(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 7000)
	send := tuple(small(opSend), atomBytes(""), ourPid)
	link := tuple(small(1), peerPid, ourPid)
	reg := tuple(small(6), peerPid, atomBytes(""), atomBytes("proton_stream"))
	msg1 := tuple(atomBytes("command"), binBytes([]byte("hello\n")))
	msg2 := tuple(peerPid, tuple(atomBytes("command"), binBytes(big)))
	var in, want []byte
	for _, p := range [][2][]byte{{send, msg1}, {link, nil}, {reg, msg2}, {send, msg1}} {
		in = append(in, otpPacket(p[0], p[1])...)
		want = append(want, ergoPacket(p[0], p[1])...)
		in = append(in, tick...)
		want = append(want, tick...)
	}
	for _, chunk := range []int{1, 3, 7, 4096, 0} {
		for _, max := range []int{1, 5, 1 << 16} {
			if chunk == 1 && max == 1 {
				continue // slow and adds nothing
			}
			f := newFakeConn()
			c := newDistConn(f, true, nil)
			f.send(in, chunk)
			if got := readN(t, c, len(want), max); !bytes.Equal(got, want) {
				t.Fatalf("chunks of %d, reads of %d: ergo got a different stream", chunk, max)
			}
		}
	}
}

func TestDistConnTakesBytesReadWithTheHandshake(t *testing.T) {
	ctl := tuple(small(1), peerPid, ourPid)
	p := otpPacket(ctl, nil)
	f := newFakeConn()
	c := newDistConn(f, true, p[:5])
	f.send(p[5:], 0)
	if got, want := readN(t, c, len(ergoPacket(ctl, nil)), 100), ergoPacket(ctl, nil); !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
}

func TestDistConnLeavesErgoPacketsAlone(t *testing.T) {
	p := ergoPacket(tuple(small(opSend), atomBytes(""), ourPid), binBytes([]byte("x")))
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	f.send(p, 3)
	if got := readN(t, c, len(p), 64); !bytes.Equal(got, p) {
		t.Fatalf("got % x\nwant % x", got, p)
	}
}

func TestDistConnUnlinkIDFromThePeer(t *testing.T) {
	id := []byte{110, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8} // a bignum id, as OTP makes them
	unlinkID := tuple(small(opUnlinkID), id, peerPid, ourPid)
	send := tuple(small(opSend), atomBytes(""), ourPid)
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	f.send(append(otpPacket(unlinkID, nil), otpPacket(send, small(5))...), 2)
	want := append(ergoPacket(tuple(small(opUnlink), peerPid, ourPid), nil), ergoPacket(send, small(5))...)
	if got := readN(t, c, len(want), 1000); !bytes.Equal(got, want) {
		t.Fatalf("ergo got\n% x\nwant\n% x", got, want)
	}
	waitWritten(t, f, otpPacket(tuple(small(opUnlinkIDAck), id, ourPid, peerPid), nil))
	if c.stats.unlinkIDIn.Load() != 1 || c.stats.unlinkIDAckOut.Load() != 1 {
		t.Fatalf("stats %+v", &c.stats)
	}
}

func TestDistConnConsumesUnlinkIDAck(t *testing.T) {
	ack := tuple(small(opUnlinkIDAck), small(1), peerPid, ourPid)
	send := tuple(small(opSend), atomBytes(""), ourPid)
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	f.send(append(otpPacket(ack, nil), otpPacket(send, small(5))...), 0)
	if got, want := readN(t, c, len(ergoPacket(send, small(5))), 1000), ergoPacket(send, small(5)); !bytes.Equal(got, want) {
		t.Fatalf("ergo got\n% x\nwant\n% x", got, want)
	}
	if c.stats.unlinkIDAckIn.Load() != 1 {
		t.Fatalf("stats %+v", &c.stats)
	}
}

// ergoStream is a stream of packets as ergo writes them, and what the peer
// must get for it (UNLINK_IDs numbered from 1).
func ergoStream() (in, want []byte) {
	big := bytes.Repeat([]byte("abcdefgh"), 9000)
	send := tuple(small(opSend), atomBytes(""), peerPid)
	data := tuple(ourPid, tuple(atomBytes("data"), binBytes(big)))
	link := tuple(small(1), ourPid, peerPid)
	unlink := tuple(small(opUnlink), ourPid, peerPid)
	unlinkID := func(id byte) []byte { return tuple(small(opUnlinkID), small(id), ourPid, peerPid) }
	closed := tuple(ourPid, atomBytes("closed"))
	add := func(ctl, msg, wctl []byte) {
		in = append(in, ergoPacket(ctl, msg)...)
		want = append(want, otpPacket(wctl, msg)...)
	}
	add(send, data, send)
	add(link, nil, link)
	in, want = append(in, tick...), append(want, tick...)
	add(unlink, nil, unlinkID(1))
	add(send, closed, send)
	add(unlink, nil, unlinkID(2))
	add(send, data, send)
	return in, want
}

func TestDistConnWritesPassThroughPackets(t *testing.T) {
	in, want := ergoStream()
	rnd := rand.New(rand.NewSource(1))
	for _, chunk := range []int{1, 2, 5, 13, 4096, 64001, -1, 0} {
		f := newFakeConn()
		c := newDistConn(f, true, nil)
		for b := in; len(b) > 0; {
			n := len(b)
			switch {
			case chunk > 0:
				n = min(chunk, n)
			case chunk < 0:
				n = min(1+rnd.Intn(300), n)
			}
			if k, err := c.Write(b[:n]); k != n || err != nil {
				t.Fatalf("Write = %d, %v", k, err)
			}
			b = b[n:]
		}
		if got := f.written(); !bytes.Equal(got, want) {
			t.Fatalf("chunks of %d: the peer got a different stream (%d bytes, want %d)", chunk, len(got), len(want))
		}
		if c.stats.unlinkIDOut.Load() != 2 {
			t.Fatalf("stats %+v", &c.stats)
		}
	}
}

func TestDistConnWithoutUnlinkIDKeepsUnlink(t *testing.T) {
	unlink := tuple(small(opUnlink), ourPid, peerPid)
	f := newFakeConn()
	c := newDistConn(f, false, nil)
	c.Write(ergoPacket(unlink, nil))
	if got, want := f.written(), otpPacket(unlink, nil); !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
}

func TestDistConnRefusesWhatItCannotConvert(t *testing.T) {
	for _, p := range [][]byte{
		{0, 0, 0, 3, 131, 69, 0},                  // a fragment
		{0, 0, 0, 5, 131, 68, 1, 0, 0},            // cached atoms
		{0, 0, 0, 4, 141, 1, 2, 3},                // ergo proxy
		{0, 0, 0, 5, 131, 68, 0, 104, 9},          // control cut short
		append([]byte{0, 0, 0, 4, 131, 68, 0}, 1), // bad control
	} {
		c := newDistConn(newFakeConn(), true, nil)
		if _, err := c.Write(p); err == nil {
			t.Errorf("Write(% x) took it", p)
		}
	}
	for _, p := range [][]byte{
		{0, 0, 0, 3, 112, 97, 1},         // no 131
		{0, 0, 0, 4, 112, 131, 104, 9},   // control cut short
		{0, 0, 0, 5, 112, 131, 97, 1, 0}, // no 131 before the message
		// (A packet too big is replaced, not refused: request_test.go.)
		{0, 0, 0, 9, 112, 131, 97, 1, 131, 108, 255, 255, 255}, // a list that claims more than it holds
	} {
		f := newFakeConn()
		c := newDistConn(f, true, nil)
		f.send(p, 0)
		close(f.in)
		if _, err := c.Read(make([]byte, 100)); err == nil || err == io.EOF {
			t.Errorf("Read of % x: %v", p, err)
		}
	}
}

// An ack the reader queues while ergo is in the middle of a packet goes
// out after that packet, never inside it.
func TestDistConnAckWaitsForThePacketBoundary(t *testing.T) {
	data := tuple(ourPid, tuple(atomBytes("data"), binBytes(bytes.Repeat([]byte("z"), 5000))))
	p := ergoPacket(tuple(small(opSend), atomBytes(""), peerPid), data)
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	c.Write(p[:3000])
	unlinkID := tuple(small(opUnlinkID), small(9), peerPid, ourPid)
	f.send(otpPacket(unlinkID, nil), 0)
	readN(t, c, len(ergoPacket(tuple(small(opUnlink), peerPid, ourPid), nil)), 100)
	time.Sleep(50 * time.Millisecond)
	half := f.written()
	c.Write(p[3000:])
	want := append(otpPacket(tuple(small(opSend), atomBytes(""), peerPid), data),
		otpPacket(tuple(small(opUnlinkIDAck), small(9), ourPid, peerPid), nil)...)
	waitWritten(t, f, want)
	if len(half) >= len(want)-len(otpPacket(tuple(small(opUnlinkIDAck), small(9), ourPid, peerPid), nil)) {
		t.Fatalf("%d bytes out before the packet was complete", len(half))
	}
}

func TestDistConnRestoresLongReferences(t *testing.T) {
	ref5 := longRef("peer@127.0.0.1", 1, 5)
	ref3 := longRef("peer@127.0.0.1", 1, 3) // what ergo makes of ref5
	// ergo keeps only 18 bits of the first word.
	binary.BigEndian.PutUint32(ref3[len(ref3)-12:], binary.BigEndian.Uint32(ref3[len(ref3)-12:])&(1<<18-1))
	other5 := longRef("peer@127.0.0.1", 2, 5)
	other3 := longRef("peer@127.0.0.1", 2, 3)
	binary.BigEndian.PutUint32(other3[len(other3)-12:], binary.BigEndian.Uint32(other3[len(other3)-12:])&(1<<18-1))
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	// The peer's gen_server:call: MONITOR with the alias, then the call.
	monitor := tuple(small(19), peerPid, atomBytes("proton_stream"), ref5)
	call := tuple(atomBytes("$gen_call"), tuple(peerPid, aliasTag(ref5)), atomBytes("what"))
	monitor2 := tuple(small(19), peerPid, ourPid2, other5)
	demonitor2 := tuple(small(opDemonitor), peerPid, ourPid2, other5)
	in := otpPacket(monitor, nil)
	in = append(in, otpPacket(tuple(small(6), peerPid, atomBytes(""), atomBytes("proton_stream")), call)...)
	in = append(in, otpPacket(monitor2, nil)...)
	in = append(in, otpPacket(demonitor2, nil)...)
	f.send(in, 0)
	toErgo := ergoPacket(monitor, nil)
	toErgo = append(toErgo, ergoPacket(tuple(small(6), peerPid, atomBytes(""), atomBytes("proton_stream")), call)...)
	toErgo = append(toErgo, ergoPacket(monitor2, nil)...)
	toErgo = append(toErgo, ergoPacket(demonitor2, nil)...)
	if got := readN(t, c, len(toErgo), 1000); !bytes.Equal(got, toErgo) {
		t.Fatalf("ergo got\n% x\nwant\n% x", got, toErgo)
	}
	if c.refs.len() != 1 {
		t.Fatalf("%d long references kept, want 1 (the other was demonitored)", c.refs.len())
	}

	reply := tuple(aliasTag(ref3), tuple(atomBytes("ok"), ourPid))
	aliasSend := tuple(small(opAliasSend), ourPid, ref3)
	c.Write(ergoPacket(aliasSend, reply))
	want := otpPacket(tuple(small(opAliasSend), ourPid, ref5), tuple(aliasTag(ref5), tuple(atomBytes("ok"), ourPid)))
	// A reply sent to the pid: {Ref, Reply}.
	c.Write(ergoPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(ref3, atomBytes("x"))))
	want = append(want, otpPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(ref5, atomBytes("x")))...)
	// Data is left alone; so is a reference nobody sent long.
	data := tuple(ourPid, tuple(atomBytes("data"), binBytes([]byte("d"))))
	c.Write(ergoPacket(tuple(small(opSend), atomBytes(""), peerPid), data))
	want = append(want, otpPacket(tuple(small(opSend), atomBytes(""), peerPid), data)...)
	c.Write(ergoPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(other3, atomBytes("late"))))
	want = append(want, otpPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(other3, atomBytes("late")))...)
	// The DOWN of the peer's monitor carries the whole reference, once.
	down := tuple(small(opMonitorPExit), atomBytes("proton_stream"), peerPid, ref3, atomBytes("normal"))
	c.Write(ergoPacket(down, nil))
	want = append(want, otpPacket(tuple(small(opMonitorPExit), atomBytes("proton_stream"), peerPid, ref5, atomBytes("normal")), nil)...)
	waitWritten(t, f, want)
	if c.refs.len() != 0 || c.stats.refsExpanded.Load() != 4 {
		t.Fatalf("%d references kept, %d expanded", c.refs.len(), c.stats.refsExpanded.Load())
	}
}

func TestRefTableIsBounded(t *testing.T) {
	rt := newRefTable()
	for i := 0; i < maxLongRefs+10; i++ {
		rt.add(longRef("p@h", uint32(i), 5))
	}
	if rt.len() != maxLongRefs {
		t.Fatalf("%d entries", rt.len())
	}
	if _, ok := rt.full(longRef("p@h", 0, 3)); ok {
		t.Fatalf("the oldest entry is still there")
	}
	if _, ok := rt.full(longRef("p@h", maxLongRefs+9, 3)); !ok {
		t.Fatalf("the newest entry is gone")
	}
	// Adding and removing forever does not grow it.
	for i := 0; i < 3*maxLongRefs; i++ {
		r := longRef("q@h", uint32(i), 5)
		rt.add(r)
		rt.remove(r)
	}
	if len(rt.order)-rt.head > 2*rt.len()+1024 {
		t.Fatalf("order holds %d keys for %d entries", len(rt.order)-rt.head, rt.len())
	}
}

func TestHandshakeConnAddsAndReadsFlags(t *testing.T) {
	f := newFakeConn()
	h := newHandshakeConn(f, false)
	// Our name, version 6: 'N', flags (8), creation (4), name length, name.
	name := []byte{0, 0, 'N'}
	name = binary.BigEndian.AppendUint64(name, 0x1000000|dflagDistHdrAtomCache|dflagFragments|0x4)
	name = append(name, 0, 0, 0, 1, 0, 2, 'p', 's')
	binary.BigEndian.PutUint16(name, uint16(len(name)-2))
	orig := append([]byte(nil), name...)
	if n, err := h.Write(name); n != len(name) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	got := f.written()
	if flags := binary.BigEndian.Uint64(got[3:11]); flags != 0x1000000|0x4|dflagUnlinkID|dflagMandatory25Digest {
		t.Fatalf("flags sent %x", flags)
	}
	if !bytes.Equal(got[11:], name[11:]) || !bytes.Equal(name, orig) {
		t.Fatalf("the rest changed, or ergo's buffer did")
	}
	// A version 5 challenge: 'n', version (2), flags (4), challenge, name.
	ch := []byte{0, 0, 'n', 0, 5, 0, 0, 0x20, 0x04, 1, 2, 3, 4, 'p', 's'}
	binary.BigEndian.PutUint16(ch, uint16(len(ch)-2))
	h.Write(ch)
	got = f.written()[len(got):]
	if flags := binary.BigEndian.Uint32(got[5:9]); flags != 0x4|dflagUnlinkID|dflagMandatory25Digest {
		t.Fatalf("v5 flags sent %x", flags)
	}
	// The peer: status, then its challenge with its flags, read in one go.
	peer := []byte{0, 3, 's', 'o', 'k', 0, 0, 'N'}
	peer = binary.BigEndian.AppendUint64(peer, 0x4_0000_0000|dflagUnlinkID)
	peer = append(peer, 1, 2, 3, 4, 0, 0, 0, 9, 0, 1, 'e')
	binary.BigEndian.PutUint16(peer[5:], uint16(len(peer)-7))
	f.send(peer, 0)
	buf := make([]byte, 512)
	n, _ := h.Read(buf)
	if !bytes.Equal(buf[:n], peer) {
		t.Fatalf("the peer's bytes changed")
	}
	if h.peerFlags != 0x4_0000_0000|dflagUnlinkID {
		t.Fatalf("peer flags %x", h.peerFlags)
	}
}

// ergoFragments is a message as ergo fragments it with unit.
func ergoFragments(seq uint64, ctl, msg []byte, unit int) []byte {
	data := append(append([]byte(nil), ctl...), msg...)
	n := len(data)/unit + 1
	var out []byte
	for i := 0; i < n; i++ {
		body := []byte{versionMagic, distFragmentN}
		if i == 0 {
			body[1] = distFragment1
		}
		body = binary.BigEndian.AppendUint64(body, seq)
		body = binary.BigEndian.AppendUint64(body, uint64(n-i))
		if i == 0 {
			body = append(body, 0)
		}
		body = append(body, data[min(i*unit, len(data)):min((i+1)*unit, len(data))]...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(body)))
		out = append(out, body...)
	}
	return out
}

func TestDistConnPutsFragmentsTogether(t *testing.T) {
	send := tuple(small(opSend), atomBytes(""), peerPid)
	data := func(n int) []byte {
		return tuple(ourPid, tuple(atomBytes("data"), binBytes(bytes.Repeat([]byte{'q'}, n))))
	}
	var in, want []byte
	in = append(in, ergoPacket(send, data(10))...)
	want = append(want, otpPacket(send, data(10))...)
	frags := ergoFragments(7, send, data(150000), fragmentUnit)
	// a keepalive between two fragments goes out at once
	first := 4 + int(binary.BigEndian.Uint32(frags))
	in = append(append(append(in, frags[:first]...), tick...), frags[first:]...)
	want = append(append(want, tick...), otpPacket(send, data(150000))...)
	// exactly a multiple of the unit: the last fragment is empty
	exact := tuple(atomBytes("x"), binBytes(make([]byte, 2*fragmentUnit-len(send)-10)))
	if len(send)+len(exact) != 2*fragmentUnit {
		t.Fatalf("%d bytes", len(send)+len(exact))
	}
	in = append(in, ergoFragments(8, send, exact, fragmentUnit)...)
	want = append(want, otpPacket(send, exact)...)
	in = append(in, ergoFragments(9, tuple(small(opUnlink), ourPid, peerPid), nil, fragmentUnit)...)
	want = append(want, otpPacket(tuple(small(opUnlinkID), small(1), ourPid, peerPid), nil)...)
	in = append(in, ergoPacket(send, data(20))...)
	want = append(want, otpPacket(send, data(20))...)
	for _, chunk := range []int{7, 4096, 0} {
		f := newFakeConn()
		c := newDistConn(f, true, nil)
		for b := in; len(b) > 0; {
			n := len(b)
			if chunk > 0 {
				n = min(n, chunk)
			}
			if k, err := c.Write(b[:n]); k != n || err != nil {
				t.Fatalf("chunks of %d: Write = %d, %v", chunk, k, err)
			}
			b = b[n:]
		}
		if got := f.written(); !bytes.Equal(got, want) {
			t.Fatalf("chunks of %d: the peer got a different stream (%d bytes, want %d)", chunk, len(got), len(want))
		}
	}
	// A packet inside a fragmented message is an error.
	c := newDistConn(newFakeConn(), true, nil)
	frags = ergoFragments(1, send, data(100000), fragmentUnit)
	c.Write(frags[:first])
	if _, err := c.Write(ergoPacket(send, data(1))); err == nil {
		t.Fatalf("a packet between two fragments was taken")
	}
}

type closeRecorder struct{ closed int }

func (c *closeRecorder) Close() error { c.closed++; return nil }

func TestDistConnDropsTheConnectionOnWhatItCannotConvert(t *testing.T) {
	var logged strings.Builder
	cl := &closeRecorder{}
	c := newDistConn(newFakeConn(), true, nil)
	c.peer, c.log, c.closer = "erl@h", log.New(&logged, "", 0), cl
	if _, err := c.Write([]byte{0, 0, 0, 3, 131, 1, 2}); err == nil {
		t.Fatal("took a bad packet")
	}
	c.Write([]byte{0, 0, 0, 3, 131, 1, 2})
	if cl.closed != 1 || !strings.Contains(logged.String(), "distribution to erl@h: ") {
		t.Fatalf("closed %d times, logged %q", cl.closed, logged.String())
	}
}

// discardConn is a socket that takes everything and has nothing to read.
type discardConn struct{}

func (discardConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// Per packet: ergo's data message to the owner, as it reaches distConn.
func benchmarkWrite(b *testing.B, payload int) {
	p := ergoPacket(tuple(small(opSend), atomBytes(""), peerPid),
		tuple(ourPid, tuple(atomBytes("data"), binBytes(make([]byte, payload)))))
	c := newDistConn(&discardConn{}, true, nil)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Write(p)
	}
}

func BenchmarkDistConnWriteLine(b *testing.B) { benchmarkWrite(b, 6) }
func BenchmarkDistConnWrite64K(b *testing.B)  { benchmarkWrite(b, 60000) }

// readerConn is a socket with r to read.
type readerConn struct {
	discardConn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Per packet: an owner's {Self, {command, Line}} as OTP sends it.
func BenchmarkDistConnReadCommand(b *testing.B) {
	one := otpPacket(tuple(small(opSend), atomBytes(""), ourPid),
		tuple(peerPid, tuple(atomBytes("command"), binBytes([]byte("12345\n")))))
	const batch = 1000
	in := bytes.Repeat(one, batch)
	out := make([]byte, 64<<10)
	src := &readerConn{r: bytes.NewReader(in)}
	c := newDistConn(src, true, nil)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	for i := 0; i < b.N; i += batch {
		src.r = bytes.NewReader(in)
		for got := 0; got < len(in); {
			n, err := c.Read(out)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}
