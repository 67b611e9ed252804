package otpdist

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	ergonode "github.com/ergo-services/ergo/node"
)

// tooLargeMark is {'$ps_too_large', weight, max}.
func tooLargeMark(weight, max int) []byte {
	b := tuple(atomBytes(TooLargeAtom))
	b[1] = 3
	b = binary.BigEndian.AppendUint32(append(b, 98), uint32(weight))
	return binary.BigEndian.AppendUint32(append(b, 98), uint32(max))
}

// A message over --max-request reaches ergo as a small one that says so,
// to the same process, keeping what names whom to answer; the rest of the
// packet is thrown away and the packets after it pass unchanged.
func TestDistConnReplacesRequestsTooLarge(t *testing.T) {
	const max = 1 << 16
	reg := tuple(small(6), peerPid, atomBytes(""), atomBytes("proton_stream"))
	send := tuple(small(opSend), atomBytes(""), ourPid)
	from := tuple(peerPid, aliasTag(longRef("peer@127.0.0.1", 5, 5)))
	bigBin := binBytes(bytes.Repeat([]byte("x"), 3*max))
	// A charlist as OTP sends one longer than 65535: a list of small
	// integers, 2 bytes each, 16 decoded: light on the wire, heavy decoded.
	heavy := binary.BigEndian.AppendUint32([]byte{108}, max/4)
	for i := 0; i < max/4; i++ {
		heavy = append(heavy, 97, 'a')
	}
	heavy = append(heavy, 106)
	call := func(req []byte) []byte { return tuple(atomBytes("$gen_call"), from, req) }
	cmd := func(data []byte) []byte { return tuple(peerPid, tuple(atomBytes("command"), data)) }
	ok := tuple(peerPid, tuple(atomBytes("command"), binBytes([]byte("fine"))))
	heavyWeight := len(cmd(heavy)) + elemCost*(1+2+2+max/4+1) // the term itself, then its elements
	cases := []struct {
		name     string
		ctl, msg []byte
		wantMsg  []byte
	}{
		{"a call by bytes", reg, call(tuple(atomBytes("open"), bigBin)),
			append(tuple(atomBytes("$gen_call"), from), tooLargeMark(len(call(tuple(atomBytes("open"), bigBin)))+2+len(reg)+1, max)...)},
		{"a command by bytes", send, cmd(bigBin),
			append(tuple(peerPid), tooLargeMark(len(cmd(bigBin))+2+len(send)+1, max)...)},
		{"a command by weight", send, cmd(heavy),
			append(tuple(peerPid), tooLargeMark(heavyWeight, max)...)},
		{"anything else", send, bigBin, tooLargeMark(len(bigBin)+2+len(send)+1, max)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The two-element heads were built as 1-tuples: fix their arity.
			if c.wantMsg[0] == 104 && c.wantMsg[1] == 1 {
				c.wantMsg[1] = 2
			} else if c.wantMsg[0] == 104 && c.wantMsg[1] == 2 && bytes.HasPrefix(c.wantMsg[2:], atomBytes("$gen_call")) {
				c.wantMsg[1] = 3
			}
			in := append(otpPacket(c.ctl, c.msg), tick...)
			in = append(in, otpPacket(send, ok)...)
			want := append(ergoPacket(c.ctl, c.wantMsg), tick...)
			want = append(want, ergoPacket(send, ok)...)
			for _, chunk := range []int{7, 4096, 0} {
				f := newFakeConn()
				dc := newDistConn(f, true, nil)
				dc.maxReq = max
				f.send(in, chunk)
				if got := readN(t, dc, len(want), 1<<16); !bytes.Equal(got, want) {
					t.Fatalf("chunks of %d: ergo got\n% x\nwant\n% x", chunk, got[:min(len(got), 200)], want[:min(len(want), 200)])
				}
				if cap(dc.rbuf) > 4*max {
					t.Fatalf("chunks of %d: distConn kept a buffer of %d bytes", chunk, cap(dc.rbuf))
				}
			}
		})
	}
	// Within the limit, the message passes unchanged.
	f := newFakeConn()
	dc := newDistConn(f, true, nil)
	dc.maxReq = 4 * max
	msg := cmd(bigBin)
	f.send(otpPacket(send, msg), 1000)
	want := ergoPacket(send, msg)
	if got := readN(t, dc, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatal("a message within --max-request was changed")
	}
	// A command of exactly --max-request bytes passes: its envelope (pids,
	// tuple headers, the control term) is not counted against it.
	f = newFakeConn()
	dc = newDistConn(f, true, nil)
	dc.maxReq = max
	msg = cmd(binBytes(bytes.Repeat([]byte("y"), max)))
	f.send(otpPacket(send, msg), 1000)
	want = ergoPacket(send, msg)
	if got := readN(t, dc, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatal("a command of exactly --max-request bytes was refused or changed")
	}
}

// A list that claims more elements than its packet holds never reaches
// ergo (which would size it by the claim): the connection is dropped. Also
// in ergo's own packet format, which is weighed like the pass-through one.
func TestDistConnRefusesListsLargerThanTheirPacket(t *testing.T) {
	send := tuple(small(opSend), atomBytes(""), ourPid)
	bomb := []byte{108, 0xff, 0xff, 0xff, 0xf0, 97, 1, 106}
	for name, p := range map[string][]byte{
		"pass-through": otpPacket(send, tuple(peerPid, bomb)),
		"131 68 0":     ergoPacket(send, tuple(peerPid, bomb)),
		"cached atoms": append(binary.BigEndian.AppendUint32(nil, 4), 131, 68, 1, 0),
	} {
		f := newFakeConn()
		c := newDistConn(f, true, nil)
		f.send(p, 0)
		close(f.in)
		if n, err := c.Read(make([]byte, 100)); err == nil || err == io.EOF {
			t.Errorf("%s: Read took it (%d bytes, %v)", name, n, err)
		}
	}
	// Heavy in ergo's format: replaced like a pass-through one.
	const max = 1 << 16
	heavy := binary.BigEndian.AppendUint32([]byte{108}, max/4)
	for i := 0; i < max/4; i++ {
		heavy = append(heavy, 97, 'a')
	}
	heavy = append(heavy, 106)
	msg := tuple(peerPid, heavy)
	f := newFakeConn()
	c := newDistConn(f, true, nil)
	c.maxReq = max
	f.send(ergoPacket(send, msg), 100)
	out := append(tuple(peerPid), tooLargeMark(len(msg)+elemCost*(1+2+max/4+1), max)...)
	out[1] = 2
	want := ergoPacket(send, out)
	if got := readN(t, c, len(want), 1<<16); !bytes.Equal(got, want) {
		t.Fatalf("got\n% x\nwant\n% x", got, want)
	}
}

// A peer that claims ergo's own flags would bypass distConn: refused.
func TestDistProtoRefusesErgoPeers(t *testing.T) {
	p := newDistProto(ergonode.DefaultProtoOptions())
	var details ergonode.HandshakeDetails
	details.Name = "intruder@127.0.0.1"
	details.Flags.EnableCompression = true
	if _, err := p.Init(context.Background(), newFakeConn(), "ps@127.0.0.1", details); err == nil ||
		!strings.Contains(err.Error(), "Erlang/OTP nodes only") {
		t.Fatalf("Init for a peer with ergo's flags: %v", err)
	}
}
