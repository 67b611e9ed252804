package node

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ergo-services/ergo/etf"
)

// longDirect stands in for a connection whose peer sent a 5-word
// reference (OTP 26+): WholeRef gives it back for ergo's 3-word encoding.
type longDirect struct{ short, whole []byte }

func (d longDirect) WriteDirect(parts ...[]byte) error            { return nil }
func (d longDirect) MoveDirect(h []byte, fd, n int) (bool, error) { return false, nil }
func (d longDirect) Cork()                                        {}
func (d longDirect) Uncork() error                                { return nil }
func (d longDirect) WholeRef(ref []byte) []byte {
	if bytes.Equal(ref, d.short) {
		return d.whole
	}
	return ref
}

// decodePacket splits a pass-through packet into its control message and
// message, decoded.
func decodePacket(t *testing.T, parts [][]byte) (ctl, msg etf.Term) {
	t.Helper()
	p := bytes.Join(parts, nil)
	if n := int(binary.BigEndian.Uint32(p)); n != len(p)-4 {
		t.Fatalf("length field %d, %d bytes after it", n, len(p)-4)
	}
	if p[4] != 112 || p[5] != 131 {
		t.Fatalf("packet starts % x, want a pass-through packet (112 131)", p[4:6])
	}
	opts := etf.DecodeOptions{FlagBigPidRef: true}
	ctl, rest, err := etf.Decode(p[6:], nil, opts)
	if err != nil || len(rest) == 0 || rest[0] != 131 {
		t.Fatalf("control message: %v (rest % x)", err, rest)
	}
	msg, rest, err = etf.Decode(rest[1:], nil, opts)
	if err != nil || len(rest) != 0 {
		t.Fatalf("message: %v, %d bytes left", err, len(rest))
	}
	return ctl, msg
}

func TestReplyPacketToAnAliasCarriesTheWholeReference(t *testing.T) {
	spawner := etf.Pid{Node: "ps@127.0.0.1", ID: 1011, Creation: 7}
	caller := etf.Pid{Node: "owner@127.0.0.1", ID: 88, Creation: 3}
	short := etf.Ref{Node: "owner@127.0.0.1", Creation: 3, ID: [5]uint32{1, 2, 3}}
	long := etf.Ref{Node: "owner@127.0.0.1", Creation: 3, ID: [5]uint32{1, 2, 3, 4, 5}}
	shortEnc, _ := encodeTerm(short)
	longEnc := append([]byte{90, 0, 5}, shortEnc[3:len(shortEnc)-12]...) // NEWER_REFERENCE_EXT, node, creation
	for _, w := range long.ID {
		longEnc = binary.BigEndian.AppendUint32(longEnc, w)
	}
	self, _ := encodeTerm(spawner)
	reply := etf.Tuple{atomOK, etf.Pid{Node: "ps@127.0.0.1", ID: 2000, Creation: 7}}
	parts, ok := replyPacket(longDirect{short: shortEnc, whole: longEnc}, self, callFrom{pid: caller, ref: short, alias: true}, reply)
	if !ok {
		t.Fatal("no packet")
	}
	ctl, msg := decodePacket(t, parts)
	want := etf.Tuple{33, spawner, long}
	if c, ok := ctl.(etf.Tuple); !ok || len(c) != 3 || c[0] != want[0] || c[1] != want[1] || c[2] != want[2] {
		t.Fatalf("control %#v, want ALIAS_SEND %#v", ctl, want)
	}
	m, ok := msg.(etf.Tuple)
	if !ok || len(m) != 2 {
		t.Fatalf("message %#v, want {[alias | Ref], Reply}", msg)
	}
	tag, ok := m[0].(etf.List) // ergo decodes [alias | Ref] as a list of both (as parseCall reads it)
	if !ok || len(tag) != 2 || tag[0] != etf.Atom("alias") || tag[1] != long {
		t.Fatalf("tag %#v, want [alias | %v]", m[0], long)
	}
	if r, ok := m[1].(etf.Tuple); !ok || len(r) != 2 || r[0] != atomOK || r[1] != reply[1] {
		t.Fatalf("reply %#v, want %#v", m[1], reply)
	}
}

func TestReplyPacketToAPid(t *testing.T) {
	caller := etf.Pid{Node: "owner@127.0.0.1", ID: 88, Creation: 3}
	ref := etf.Ref{Node: "owner@127.0.0.1", Creation: 3, ID: [5]uint32{9, 8, 7}}
	self, _ := encodeTerm(etf.Pid{Node: "ps@127.0.0.1", ID: 1011, Creation: 7})
	reply := errorTerm(etf.Tuple{etf.Atom("badcall"), etf.Atom("x")})
	parts, ok := replyPacket(longDirect{}, self, callFrom{pid: caller, ref: ref}, reply)
	if !ok {
		t.Fatal("no packet")
	}
	ctl, msg := decodePacket(t, parts)
	if c, ok := ctl.(etf.Tuple); !ok || len(c) != 3 || c[0] != 2 || c[1] != etf.Atom("") || c[2] != caller {
		t.Fatalf("control %#v, want SEND {2, '', %v}", ctl, caller)
	}
	m, ok := msg.(etf.Tuple)
	if !ok || len(m) != 2 || m[0] != ref {
		t.Fatalf("message %#v, want {%v, Reply}", msg, ref)
	}
	if r, ok := m[1].(etf.Tuple); !ok || len(r) != 2 || r[0] != atomError {
		t.Fatalf("reply %#v, want %#v", m[1], reply)
	}
}
