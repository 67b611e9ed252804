package otpdist

import (
	"encoding/binary"
	"sync"

	"github.com/protonstream/ps_port/etf"
)

// OTP 26 and later make references of up to 5 words (DFLAG_V4_NC): the
// alias a gen_server:call monitors and replies through is one. ergo decodes
// them whole but encodes every reference with 3 words, so a reply to such a
// call, or the DOWN of such a monitor, would carry a reference the caller
// does not know, and be lost. refTable remembers the long references the
// peer sent in control messages (MONITOR carries the alias of every call)
// and distConn puts the missing words back into the references ergo sends.
//
// An entry lives until the peer's DEMONITOR or this node's MONITOR_EXIT for
// it, or until the connection closes; at most maxLongRefs are kept (the
// oldest go first).

const maxLongRefs = 1 << 18

type refTable struct {
	mu    sync.Mutex
	m     map[string][]byte // key -> the whole reference as the peer sent it
	order []string          // keys by age, for the bound
	head  int
}

func newRefTable() *refTable {
	return &refTable{m: make(map[string][]byte)}
}

// refKey identifies a NEWER_REFERENCE_EXT by node, creation and first three
// words, as ergo keeps them (it drops the first word's bits above 18).
// words is the reference's length in words.
func refKey(ref []byte) (key string, words int, ok bool) {
	if len(ref) < 3 || ref[0] != etf.TagNewerReference {
		return "", 0, false
	}
	words = int(binary.BigEndian.Uint16(ref[1:3]))
	i := 3
	k, err := skipNodeAtom(ref, i)
	if err != nil {
		return "", 0, false
	}
	var text []byte
	switch ref[i] {
	case etf.TagAtom, etf.TagAtomUTF8:
		text = ref[i+3 : i+k]
	default:
		text = ref[i+2 : i+k]
	}
	i += k
	if words < 3 || len(ref) < i+4+4*words {
		return "", words, false
	}
	kb := make([]byte, 0, len(text)+1+16)
	kb = append(kb, text...)
	kb = append(kb, 0)
	kb = append(kb, ref[i:i+4]...) // creation
	kb = binary.BigEndian.AppendUint32(kb, binary.BigEndian.Uint32(ref[i+4:])&(1<<18-1))
	kb = append(kb, ref[i+8:i+16]...)
	return string(kb), words, true
}

// add remembers ref when it is longer than 3 words.
func (t *refTable) add(ref []byte) {
	key, words, ok := refKey(ref)
	if !ok || words <= 3 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[key]; ok {
		return
	}
	if len(t.m) >= maxLongRefs {
		t.evictOldest()
	}
	t.m[key] = append([]byte(nil), ref...)
	t.order = append(t.order, key)
	if len(t.order)-t.head > 2*len(t.m)+1024 {
		t.compact()
	}
}

// compact drops the keys of removed entries from order.
func (t *refTable) compact() {
	seen := make(map[string]bool, len(t.m))
	kept := make([]string, 0, len(t.m))
	for _, k := range t.order[t.head:] {
		if _, ok := t.m[k]; ok && !seen[k] {
			seen[k] = true
			kept = append(kept, k)
		}
	}
	t.order, t.head = kept, 0
}

func (t *refTable) evictOldest() {
	for t.head < len(t.order) {
		k := t.order[t.head]
		t.order[t.head] = ""
		t.head++
		if _, ok := t.m[k]; ok {
			delete(t.m, k)
			break
		}
	}
	if t.head > len(t.order)/2 {
		t.order = append([]string(nil), t.order[t.head:]...)
		t.head = 0
	}
}

// remove forgets ref (of any length).
func (t *refTable) remove(ref []byte) {
	key, _, ok := refKey(ref)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
	if len(t.m) == 0 {
		t.order, t.head = t.order[:0], 0
	}
}

// full returns the whole reference for a 3-word ref, if the peer sent a
// longer one with the same key.
func (t *refTable) full(ref []byte) ([]byte, bool) {
	key, words, ok := refKey(ref)
	if !ok || words != 3 {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[key]
	return f, ok
}

// len is the number of references kept.
func (t *refTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// WholeRef implements Direct: ref as the peer sent it, when it sent a
// longer one than ergo keeps (see refTable).
func (c *distConn) WholeRef(ref []byte) []byte {
	if c.refs.len() == 0 {
		return ref
	}
	if full, ok := c.refs.full(ref); ok {
		return full
	}
	return ref
}
