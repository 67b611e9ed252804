package otpdist

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/protonstream/ps_port/etf"
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
	return fmt.Sprintf("malformed term at byte %d (tag %d, %s): %s", e.at, e.tag, etf.TagName(e.tag), e.why)
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
	w := walker{b: b, refs: refs}
	pending := n // terms still to skip
	total := n   // terms seen
	for pending > 0 {
		pending--
		elems, err := w.term()
		if err != nil {
			return 0, 0, err
		}
		pending += elems
		total += elems
		// Every term takes at least one byte: more pending terms than bytes
		// left means the buffer cannot hold them yet (or they are bogus;
		// the caller tells the two apart by whether more bytes may come).
		if pending > uint64(len(b)-w.i) {
			return 0, 0, errShort
		}
	}
	return w.i, total, nil
}

// walker skips terms in b from i on.
type walker struct {
	b    []byte
	i    int
	refs *[]span // where NEWER_REFERENCE_EXTs sit, when not nil
}

// skip passes k bytes.
func (w *walker) skip(k uint64) error {
	if uint64(len(w.b)-w.i) < k {
		return errShort
	}
	w.i += int(k)
	return nil
}

// uint reads a big-endian unsigned integer of size bytes (1, 2 or 4).
func (w *walker) uint(size int) (uint64, error) {
	if len(w.b)-w.i < size {
		return 0, errShort
	}
	var v uint64
	switch size {
	case 1:
		v = uint64(w.b[w.i])
	case 2:
		v = uint64(binary.BigEndian.Uint16(w.b[w.i:]))
	default:
		v = uint64(binary.BigEndian.Uint32(w.b[w.i:]))
	}
	w.i += size
	return v, nil
}

// sized skips a length of lenSize bytes, extra bytes, and length bytes.
func (w *walker) sized(lenSize int, extra uint64) error {
	l, err := w.uint(lenSize)
	if err != nil {
		return err
	}
	return w.skip(extra + l)
}

// term skips the term at i, except for the elements of a compound term,
// whose number it returns: they follow it as terms of their own.
func (w *walker) term() (elems uint64, err error) {
	if err := w.skip(1); err != nil {
		return 0, err
	}
	at := w.i - 1
	switch tag := w.b[at]; tag {
	case etf.TagSmallInteger:
		return 0, w.skip(1)
	case etf.TagInteger:
		return 0, w.skip(4)
	case etf.TagNewFloat:
		return 0, w.skip(8)
	case etf.TagFloat:
		return 0, w.skip(31)
	case etf.TagAtom, etf.TagAtomUTF8:
		return 0, w.sized(2, 0)
	case etf.TagSmallAtom, etf.TagSmallAtomUTF8:
		return 0, w.sized(1, 0)
	case etf.TagNil:
		return 0, nil
	case etf.TagString:
		return 0, w.sized(2, 0)
	case etf.TagBinary:
		return 0, w.sized(4, 0)
	case etf.TagBitBinary: // Len, Bits, Data
		return 0, w.sized(4, 1)
	case etf.TagSmallBig: // n, Sign, Digits
		return 0, w.sized(1, 1)
	case etf.TagLargeBig:
		return 0, w.sized(4, 1)
	case etf.TagSmallTuple:
		return w.uint(1)
	case etf.TagLargeTuple:
		return w.uint(4)
	case etf.TagList: // elements, then the tail
		n, err := w.uint(4)
		return n + 1, err
	case etf.TagMap:
		n, err := w.uint(4)
		return 2 * n, err
	case etf.TagExport: // module, function, arity
		return 3, nil
	case etf.TagNewFun: // Size counts itself and everything after it
		l, err := w.uint(4)
		if err != nil {
			return 0, err
		}
		if l < 4 {
			return 0, &errTerm{at, tag, "fun size below 4"}
		}
		return 0, w.skip(l - 4)
	case etf.TagNewPid: // node, ID, Serial, Creation
		return 0, w.nodeThen(4 + 4 + 4)
	case etf.TagPid:
		return 0, w.nodeThen(4 + 4 + 1)
	case etf.TagNewPort: // node, ID, Creation
		return 0, w.nodeThen(4 + 4)
	case etf.TagPort:
		return 0, w.nodeThen(4 + 1)
	case etf.TagV4Port:
		return 0, w.nodeThen(8 + 4)
	case etf.TagReference: // node, ID, Creation
		return 0, w.nodeThen(4 + 1)
	case etf.TagNewerReference, etf.TagNewReference: // Len, node, Creation, ID*Len
		words, err := w.uint(2)
		if err != nil {
			return 0, err
		}
		creation := uint64(4)
		if tag == etf.TagNewReference {
			creation = 1
		}
		if err := w.nodeThen(creation + 4*words); err != nil {
			return 0, err
		}
		if w.refs != nil && tag == etf.TagNewerReference {
			*w.refs = append(*w.refs, span{at, w.i})
		}
		return 0, nil
	case etf.TagAtomCacheRef:
		return 0, &errTerm{at, tag, "atom cache reference on a connection without the atom cache"}
	default:
		return 0, &errTerm{at, tag, "unknown tag"}
	}
}

// nodeThen skips the node-name atom (with its tag) inside a pid, port or
// reference, then fixed bytes.
func (w *walker) nodeThen(fixed uint64) error {
	if err := w.skip(1); err != nil {
		return err
	}
	switch tag := w.b[w.i-1]; tag {
	case etf.TagAtom, etf.TagAtomUTF8:
		if err := w.sized(2, 0); err != nil {
			return err
		}
	case etf.TagSmallAtom, etf.TagSmallAtomUTF8:
		if err := w.sized(1, 0); err != nil {
			return err
		}
	case etf.TagAtomCacheRef:
		return &errTerm{w.i - 1, tag, "atom cache reference on a connection without the atom cache"}
	default:
		return &errTerm{w.i - 1, tag, "node name is not an atom"}
	}
	return w.skip(fixed)
}

// skipNodeAtom returns the length of the node-name atom (with its tag) at
// b[i:] inside a pid, port or reference.
func skipNodeAtom(b []byte, i int) (int, error) {
	w := walker{b: b, i: i}
	err := w.nodeThen(0)
	return w.i - i, err
}
