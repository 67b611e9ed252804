package otpdist

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Skipping external-term-format terms without decoding them: the
// distribution translation (conn.go) needs to know where a control
// message ends and to cut its elements apart, nothing more. Terms here
// carry no version byte (131) and no atom cache references: the
// translation only runs on connections without the distribution header
// atom cache.

// errShort means the buffer ends inside the term.
var errShort = errors.New("term continues past the end of the buffer")

// errTerm is a malformed term.
type errTerm struct {
	at  int
	tag byte
	why string
}

func (e *errTerm) Error() string {
	return fmt.Sprintf("malformed term at byte %d (tag %d): %s", e.at, e.tag, e.why)
}

// span is where a term sits in a buffer: b[start:end].
type span struct{ start, end int }

// skipTerm returns the length of the term at the start of b.
func skipTerm(b []byte) (int, error) {
	return walkTerms(b, 1, nil)
}

// walkTerms returns the length of the n consecutive terms at the start of
// b, and appends to *refs (when refs is not nil) where every
// NEWER_REFERENCE_EXT among them sits. It walks the terms iteratively
// (nesting costs no stack), and never reads or allocates more than b holds.
func walkTerms(b []byte, n uint64, refs *[]span) (int, error) {
	k, _, err := walkCount(b, n, refs)
	return k, err
}

// termWeight returns the length of the term at the start of b and how many
// elements its tuples, lists and maps hold (a map entry counts two): what
// decoding it costs beyond its bytes.
func termWeight(b []byte) (length int, elems uint64, err error) {
	return walkCount(b, 1, nil)
}

// walkCount is walkTerms that also counts the elements of compound terms.
func walkCount(b []byte, n uint64, refs *[]span) (int, uint64, error) {
	i := 0
	pending := n // terms still to skip
	total := n   // terms seen
	need := func(k uint64) bool { return uint64(len(b)-i) >= k }
	for pending > 0 {
		pending--
		if !need(1) {
			return 0, 0, errShort
		}
		tag := b[i]
		at := i
		i++
		switch tag {
		case 97: // SMALL_INTEGER_EXT
			if !need(1) {
				return 0, 0, errShort
			}
			i++
		case 98: // INTEGER_EXT
			if !need(4) {
				return 0, 0, errShort
			}
			i += 4
		case 70: // NEW_FLOAT_EXT
			if !need(8) {
				return 0, 0, errShort
			}
			i += 8
		case 99: // FLOAT_EXT
			if !need(31) {
				return 0, 0, errShort
			}
			i += 31
		case 100, 118: // ATOM_EXT, ATOM_UTF8_EXT
			k, err := skipAtomBody(b, i, tag)
			if err != nil {
				return 0, 0, err
			}
			i += k
		case 115, 119: // SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
			k, err := skipAtomBody(b, i, tag)
			if err != nil {
				return 0, 0, err
			}
			i += k
		case 106: // NIL_EXT
		case 107: // STRING_EXT
			if !need(2) {
				return 0, 0, errShort
			}
			l := uint64(binary.BigEndian.Uint16(b[i:]))
			if !need(2 + l) {
				return 0, 0, errShort
			}
			i += 2 + int(l)
		case 109: // BINARY_EXT
			if !need(4) {
				return 0, 0, errShort
			}
			l := uint64(binary.BigEndian.Uint32(b[i:]))
			if !need(4 + l) {
				return 0, 0, errShort
			}
			i += 4 + int(l)
		case 77: // BIT_BINARY_EXT
			if !need(5) {
				return 0, 0, errShort
			}
			l := uint64(binary.BigEndian.Uint32(b[i:]))
			if !need(5 + l) {
				return 0, 0, errShort
			}
			i += 5 + int(l)
		case 110: // SMALL_BIG_EXT
			if !need(2) {
				return 0, 0, errShort
			}
			l := uint64(b[i])
			if !need(2 + l) {
				return 0, 0, errShort
			}
			i += 2 + int(l)
		case 111: // LARGE_BIG_EXT
			if !need(5) {
				return 0, 0, errShort
			}
			l := uint64(binary.BigEndian.Uint32(b[i:]))
			if !need(5 + l) {
				return 0, 0, errShort
			}
			i += 5 + int(l)
		case 104: // SMALL_TUPLE_EXT
			if !need(1) {
				return 0, 0, errShort
			}
			pending += uint64(b[i])
			total += uint64(b[i])
			i++
		case 105: // LARGE_TUPLE_EXT
			if !need(4) {
				return 0, 0, errShort
			}
			pending += uint64(binary.BigEndian.Uint32(b[i:]))
			total += uint64(binary.BigEndian.Uint32(b[i:]))
			i += 4
		case 108: // LIST_EXT: elements, then the tail
			if !need(4) {
				return 0, 0, errShort
			}
			pending += uint64(binary.BigEndian.Uint32(b[i:])) + 1
			total += uint64(binary.BigEndian.Uint32(b[i:])) + 1
			i += 4
		case 116: // MAP_EXT
			if !need(4) {
				return 0, 0, errShort
			}
			pending += 2 * uint64(binary.BigEndian.Uint32(b[i:]))
			total += 2 * uint64(binary.BigEndian.Uint32(b[i:]))
			i += 4
		case 113: // EXPORT_EXT: module, function, arity
			pending += 3
			total += 3
		case 112: // NEW_FUN_EXT: Size counts itself and everything after it
			if !need(4) {
				return 0, 0, errShort
			}
			l := uint64(binary.BigEndian.Uint32(b[i:]))
			if l < 4 {
				return 0, 0, &errTerm{at, tag, "fun size below 4"}
			}
			if !need(l) {
				return 0, 0, errShort
			}
			i += int(l)
		case 88, 103: // NEW_PID_EXT, PID_EXT: node, ID, Serial, Creation
			k, err := skipNodeAtom(b, i)
			if err != nil {
				return 0, 0, err
			}
			i += k
			fixed := uint64(4 + 4 + 4)
			if tag == 103 {
				fixed = 4 + 4 + 1
			}
			if !need(fixed) {
				return 0, 0, errShort
			}
			i += int(fixed)
		case 89, 102, 120: // NEW_PORT_EXT, PORT_EXT, V4_PORT_EXT
			k, err := skipNodeAtom(b, i)
			if err != nil {
				return 0, 0, err
			}
			i += k
			fixed := uint64(4 + 4) // NEW_PORT_EXT: ID, Creation
			switch tag {
			case 102:
				fixed = 4 + 1
			case 120:
				fixed = 8 + 4
			}
			if !need(fixed) {
				return 0, 0, errShort
			}
			i += int(fixed)
		case 90, 114: // NEWER_REFERENCE_EXT, NEW_REFERENCE_EXT: Len, node, Creation, ID*Len
			if !need(2) {
				return 0, 0, errShort
			}
			words := uint64(binary.BigEndian.Uint16(b[i:]))
			i += 2
			k, err := skipNodeAtom(b, i)
			if err != nil {
				return 0, 0, err
			}
			i += k
			creation := uint64(4)
			if tag == 114 {
				creation = 1
			}
			if !need(creation + 4*words) {
				return 0, 0, errShort
			}
			i += int(creation + 4*words)
			if refs != nil && tag == 90 {
				*refs = append(*refs, span{at, i})
			}
		case 101: // REFERENCE_EXT: node, ID, Creation
			k, err := skipNodeAtom(b, i)
			if err != nil {
				return 0, 0, err
			}
			i += k
			if !need(5) {
				return 0, 0, errShort
			}
			i += 5
		case 82:
			return 0, 0, &errTerm{at, tag, "atom cache reference on a connection without the atom cache"}
		default:
			return 0, 0, &errTerm{at, tag, "unknown tag"}
		}
		// Every term takes at least one byte: more pending terms than bytes
		// left means the buffer cannot hold them yet (or they are bogus;
		// the caller tells the two apart by whether more bytes may come).
		if pending > uint64(len(b)-i) {
			return 0, 0, errShort
		}
	}
	return i, total, nil
}

// skipAtomBody skips an atom's length and text; i is just past the tag.
func skipAtomBody(b []byte, i int, tag byte) (int, error) {
	left := len(b) - i
	switch tag {
	case 100, 118:
		if left < 2 {
			return 0, errShort
		}
		l := int(binary.BigEndian.Uint16(b[i:]))
		if left < 2+l {
			return 0, errShort
		}
		return 2 + l, nil
	default: // 115, 119
		if left < 1 {
			return 0, errShort
		}
		l := int(b[i])
		if left < 1+l {
			return 0, errShort
		}
		return 1 + l, nil
	}
}

// skipNodeAtom skips the node-name atom (with its tag) at b[i:] inside a
// pid, port or reference.
func skipNodeAtom(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errShort
	}
	switch tag := b[i]; tag {
	case 100, 118, 115, 119:
		k, err := skipAtomBody(b, i+1, tag)
		if err != nil {
			return 0, err
		}
		return 1 + k, nil
	case 82:
		return 0, &errTerm{i, tag, "atom cache reference on a connection without the atom cache"}
	default:
		return 0, &errTerm{i, tag, "node name is not an atom"}
	}
}
