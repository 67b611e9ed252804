package etf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"unicode/utf8"
)

// A DecodeError describes why [Decode] rejected its input.
type DecodeError struct {
	// Offset is the position in the input of the tag byte of the term
	// that could not be decoded, or of the offending byte when Tag is 0.
	Offset int
	// Tag is the tag byte of the term that could not be decoded, or 0 if
	// the error is not about a term (a bad version byte, trailing bytes).
	Tag byte
	// Err is the underlying problem. It is io.ErrUnexpectedEOF when the
	// input ends before the term does, including when a length or arity
	// field promises more data than the input holds.
	Err error
}

// Error returns the error text: "etf: offset N: " followed by the tag, if
// any, and the problem.
func (e *DecodeError) Error() string {
	if e.Tag == 0 {
		return fmt.Sprintf("etf: offset %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("etf: offset %d: tag %d (%s): %v", e.Offset, e.Tag, TagName(e.Tag), e.Err)
}

// Unwrap returns e.Err.
func (e *DecodeError) Unwrap() error { return e.Err }

var (
	errUnsupported = errors.New("term type not supported")
	errTooDeep     = fmt.Errorf("tuples and lists nested more than %d deep", MaxDepth)
)

// emptyList is the boxed empty list, shared so that decoding [] does not
// allocate. It has capacity 0, so appending to it never writes into it.
var emptyList Term = List{}

// Decode decodes b, which must hold exactly one term in external term
// format, starting with the version byte 131. Errors are of type
// *[DecodeError].
//
// Decode is stricter than binary_to_term: bytes after the term, improper
// lists and bignums with a sign byte other than 0 or 1 are errors, and so
// is nesting deeper than [MaxDepth].
//
// Binaries in the result are not copied: they share memory with b (with
// their capacity capped so that appending to them cannot overwrite b).
// A caller that reuses b must copy them first.
func Decode(b []byte) (Term, error) {
	if len(b) == 0 {
		return nil, &DecodeError{Err: io.ErrUnexpectedEOF}
	}
	if b[0] != VersionMagic {
		return nil, &DecodeError{Err: fmt.Errorf("version byte is %d, want %d", b[0], VersionMagic)}
	}
	d := decoder{b: b, off: 1}
	t, err := d.term(0)
	if err != nil {
		return nil, err
	}
	if d.off != len(b) {
		return nil, &DecodeError{Offset: d.off, Err: fmt.Errorf("%d trailing bytes after the term", len(b)-d.off)}
	}
	return t, nil
}

type decoder struct {
	b   []byte
	off int
}

// term decodes the term at d.off. Tuples and lists at depth MaxDepth or
// deeper are rejected.
func (d *decoder) term(depth int) (Term, error) {
	start := d.off
	if start >= len(d.b) {
		return nil, &DecodeError{Offset: start, Err: io.ErrUnexpectedEOF}
	}
	tag := d.b[start]
	d.off++
	t, err := d.body(tag, depth)
	if err != nil {
		if _, ok := err.(*DecodeError); ok {
			return nil, err
		}
		return nil, &DecodeError{Offset: start, Tag: tag, Err: err}
	}
	return t, nil
}

// take consumes n bytes, or fails if fewer remain.
func (d *decoder) take(n uint64) ([]byte, error) {
	if n > uint64(len(d.b)-d.off) {
		return nil, io.ErrUnexpectedEOF
	}
	p := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return p, nil
}

// length consumes a big-endian length field of size bytes (1, 2 or 4).
func (d *decoder) length(size int) (uint64, error) {
	p, err := d.take(uint64(size))
	if err != nil {
		return 0, err
	}
	switch size {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	default:
		return uint64(binary.BigEndian.Uint32(p)), nil
	}
}

// remains reports whether at least n more bytes remain.
func (d *decoder) remains(n uint64) bool {
	return n <= uint64(len(d.b)-d.off)
}

func (d *decoder) body(tag byte, depth int) (Term, error) {
	switch tag {
	case TagSmallInteger:
		p, err := d.take(1)
		if err != nil {
			return nil, err
		}
		return int64(p[0]), nil
	case TagInteger:
		p, err := d.take(4)
		if err != nil {
			return nil, err
		}
		return int64(int32(binary.BigEndian.Uint32(p))), nil
	case TagSmallBig, TagLargeBig:
		size := 1
		if tag == TagLargeBig {
			size = 4
		}
		n, err := d.length(size)
		if err != nil {
			return nil, err
		}
		return d.bignum(n)
	case TagAtom, TagAtomUTF8, TagSmallAtom, TagSmallAtomUTF8:
		size := 2
		if tag == TagSmallAtom || tag == TagSmallAtomUTF8 {
			size = 1
		}
		n, err := d.length(size)
		if err != nil {
			return nil, err
		}
		p, err := d.take(n)
		if err != nil {
			return nil, err
		}
		return atom(p, tag == TagAtom || tag == TagSmallAtom)
	case TagSmallTuple, TagLargeTuple:
		if depth >= MaxDepth {
			return nil, errTooDeep
		}
		size := 1
		if tag == TagLargeTuple {
			size = 4
		}
		n, err := d.length(size)
		if err != nil {
			return nil, err
		}
		if !d.remains(n) { // every element takes at least one byte
			return nil, io.ErrUnexpectedEOF
		}
		t := make(Tuple, n)
		for i := range t {
			if t[i], err = d.term(depth + 1); err != nil {
				return nil, err
			}
		}
		return t, nil
	case TagNil:
		return emptyList, nil
	case TagString:
		n, err := d.length(2)
		if err != nil {
			return nil, err
		}
		p, err := d.take(n)
		if err != nil {
			return nil, err
		}
		l := make(List, len(p))
		for i, c := range p {
			l[i] = int64(c)
		}
		return l, nil
	case TagList:
		if depth >= MaxDepth {
			return nil, errTooDeep
		}
		n, err := d.length(4)
		if err != nil {
			return nil, err
		}
		if !d.remains(n + 1) { // elements and tail take at least one byte each
			return nil, io.ErrUnexpectedEOF
		}
		l := make(List, n)
		for i := range l {
			if l[i], err = d.term(depth + 1); err != nil {
				return nil, err
			}
		}
		tailOff := d.off
		tail, err := d.term(depth + 1)
		if err != nil {
			return nil, err
		}
		tl, ok := tail.(List)
		if !ok {
			return nil, fmt.Errorf("improper list: the tail at offset %d is not a list", tailOff)
		}
		// binary_to_term accepts a list whose tail is another encoded
		// list, such as [1 | [2, 3]]; the result is a proper list.
		return append(l, tl...), nil
	case TagBinary:
		n, err := d.length(4)
		if err != nil {
			return nil, err
		}
		p, err := d.take(n)
		if err != nil {
			return nil, err
		}
		return p, nil
	case 0:
		return nil, errors.New("byte 0 is not a term tag")
	}
	return nil, errUnsupported
}

// bignum decodes the sign byte and n little-endian digit bytes of a
// SMALL_BIG_EXT or LARGE_BIG_EXT.
func (d *decoder) bignum(n uint64) (Term, error) {
	if !d.remains(n + 1) {
		return nil, io.ErrUnexpectedEOF
	}
	sign := d.b[d.off]
	d.off++
	digits, _ := d.take(n)
	if sign > 1 {
		return nil, fmt.Errorf("sign byte is %d, want 0 or 1", sign)
	}
	for len(digits) > 0 && digits[len(digits)-1] == 0 {
		digits = digits[:len(digits)-1]
	}
	if len(digits) <= 8 {
		var m uint64
		for i := len(digits) - 1; i >= 0; i-- {
			m = m<<8 | uint64(digits[i])
		}
		if sign == 0 && m <= math.MaxInt64 {
			return int64(m), nil
		}
		if sign == 1 && m <= 1<<63 {
			return int64(-m), nil
		}
	}
	be := make([]byte, len(digits))
	for i, c := range digits {
		be[len(be)-1-i] = c
	}
	x := new(big.Int).SetBytes(be)
	if sign == 1 {
		x.Neg(x)
	}
	return x, nil
}

// atom converts the text of an atom, in Latin-1 or UTF-8, to an Atom.
func atom(p []byte, latin1 bool) (Term, error) {
	if a, ok := knownAtoms[string(p)]; ok {
		return a, nil
	}
	if latin1 {
		if len(p) > maxAtomChars {
			return nil, fmt.Errorf("atom has %d characters, more than %d", len(p), maxAtomChars)
		}
		ascii := true
		for _, c := range p {
			if c >= utf8.RuneSelf {
				ascii = false
				break
			}
		}
		if ascii {
			return Atom(p), nil
		}
		u := make([]byte, 0, 2*len(p))
		for _, c := range p {
			u = utf8.AppendRune(u, rune(c))
		}
		return Atom(u), nil
	}
	if !utf8.Valid(p) {
		return nil, errors.New("atom is not valid UTF-8")
	}
	if n := utf8.RuneCount(p); n > maxAtomChars {
		return nil, fmt.Errorf("atom has %d characters, more than %d", n, maxAtomChars)
	}
	return Atom(p), nil
}
