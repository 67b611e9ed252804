package etf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"unicode/utf8"
)

// Encode returns the external term format of t, starting with the version
// byte 131: the same bytes as term_to_binary(T, [{minor_version, 2}]).
//
// t must be built from the types listed for [Term]. Encode fails on other
// types, on nil, on atoms that are not valid UTF-8 or have more than 255
// characters, and on nesting deeper than [MaxDepth].
func Encode(t Term) ([]byte, error) {
	return AppendTerm(nil, t)
}

// AppendTerm appends the encoding of t, as returned by [Encode], to dst
// and returns the extended buffer. On error it returns dst unchanged.
func AppendTerm(dst []byte, t Term) ([]byte, error) {
	n := len(dst)
	b, err := appendTerm(append(dst, VersionMagic), t, 0)
	if err != nil {
		return dst[:n], err
	}
	return b, nil
}

// AppendBinaryTupleHeader appends the encoding of {tag, <<_:n/binary>>}
// without its last n bytes, the contents of the binary. The caller sends
// the n payload bytes right after the header, for instance with one
// writev, so the payload is never copied:
//
//	hdr := etf.AppendBinaryTupleHeader(buf[:0], "stdout", len(p))
//	// hdr followed by p is the encoding of etf.Tuple{etf.Atom("stdout"), p}
//
// It panics if tag is not a valid atom or n is negative or does not fit
// in 32 bits, the limit of a binary in the external term format.
func AppendBinaryTupleHeader(dst []byte, tag Atom, n int) []byte {
	if n < 0 || uint64(n) > math.MaxUint32 {
		panic(fmt.Sprintf("etf: AppendBinaryTupleHeader: binary length %d out of range", n))
	}
	dst = append(dst, VersionMagic, TagSmallTuple, 2)
	dst, err := appendAtom(dst, tag)
	if err != nil {
		panic("etf: AppendBinaryTupleHeader: " + err.Error())
	}
	dst = append(dst, TagBinary)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// AppendIDBinaryTupleHeader appends the encoding of {tag, id,
// <<_:n/binary>>} without its last n bytes, id written as INTEGER_EXT (see
// [Int32]), like [AppendBinaryTupleHeader] does for {tag, binary}.
func AppendIDBinaryTupleHeader(dst []byte, tag Atom, id int32, n int) []byte {
	if n < 0 || uint64(n) > math.MaxUint32 {
		panic(fmt.Sprintf("etf: AppendIDBinaryTupleHeader: binary length %d out of range", n))
	}
	dst = append(dst, VersionMagic, TagSmallTuple, 3)
	dst, err := appendAtom(dst, tag)
	if err != nil {
		panic("etf: AppendIDBinaryTupleHeader: " + err.Error())
	}
	dst = binary.BigEndian.AppendUint32(append(dst, TagInteger), uint32(id))
	dst = append(dst, TagBinary)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

func appendTerm(b []byte, t Term, depth int) ([]byte, error) {
	switch v := t.(type) {
	case Atom:
		return appendAtom(b, v)
	case int64:
		return appendInt(b, v), nil
	case int:
		return appendInt(b, int64(v)), nil
	case Int32:
		return binary.BigEndian.AppendUint32(append(b, TagInteger), uint32(v)), nil
	case uint64:
		if v <= math.MaxInt64 {
			return appendInt(b, int64(v)), nil
		}
		return appendBig64(b, 0, v), nil
	case *big.Int:
		if v == nil {
			return b, errors.New("etf: cannot encode a nil *big.Int")
		}
		if v.IsInt64() {
			return appendInt(b, v.Int64()), nil
		}
		return appendBig(b, v)
	case []byte:
		return appendBinary(b, v)
	case string:
		return appendBinary(b, v)
	case Tuple:
		if depth >= MaxDepth {
			return b, errEncodeTooDeep
		}
		if len(v) <= math.MaxUint8 {
			b = append(b, TagSmallTuple, byte(len(v)))
		} else if uint64(len(v)) <= math.MaxUint32 {
			b = append(b, TagLargeTuple)
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		} else {
			return b, errors.New("etf: tuple has more than 2^32-1 elements")
		}
		var err error
		for _, e := range v {
			if b, err = appendTerm(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return b, nil
	case List:
		if len(v) == 0 {
			return append(b, TagNil), nil
		}
		if isByteList(v) {
			b = append(b, TagString)
			b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
			for _, e := range v {
				c, _ := byteValue(e)
				b = append(b, c)
			}
			return b, nil
		}
		if depth >= MaxDepth {
			return b, errEncodeTooDeep
		}
		if uint64(len(v)) > math.MaxUint32 {
			return b, errors.New("etf: list has more than 2^32-1 elements")
		}
		b = append(b, TagList)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		var err error
		for _, e := range v {
			if b, err = appendTerm(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, TagNil), nil
	}
	return b, fmt.Errorf("etf: cannot encode a value of type %T", t)
}

var errEncodeTooDeep = fmt.Errorf("etf: tuples and lists nested more than %d deep", MaxDepth)

func appendAtom(b []byte, a Atom) ([]byte, error) {
	if !utf8.ValidString(string(a)) {
		return b, fmt.Errorf("etf: atom %q is not valid UTF-8", a)
	}
	if len(a) <= math.MaxUint8 {
		// At most 255 bytes, so at most 255 characters.
		b = append(b, TagSmallAtomUTF8, byte(len(a)))
	} else {
		if n := utf8.RuneCountInString(string(a)); n > maxAtomChars {
			return b, fmt.Errorf("etf: atom has %d characters, more than %d", n, maxAtomChars)
		}
		b = append(b, TagAtomUTF8)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
	}
	return append(b, a...), nil
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case 0 <= v && v <= math.MaxUint8:
		return append(b, TagSmallInteger, byte(v))
	case math.MinInt32 <= v && v <= math.MaxInt32:
		b = append(b, TagInteger)
		return binary.BigEndian.AppendUint32(b, uint32(v))
	case v < 0:
		return appendBig64(b, 1, -uint64(v))
	default:
		return appendBig64(b, 0, uint64(v))
	}
}

// appendBig64 appends a SMALL_BIG_EXT with the given sign and magnitude.
func appendBig64(b []byte, sign byte, m uint64) []byte {
	n := (bits.Len64(m) + 7) / 8
	b = append(b, TagSmallBig, byte(n), sign)
	for range n {
		b = append(b, byte(m))
		m >>= 8
	}
	return b
}

func appendBig(b []byte, x *big.Int) ([]byte, error) {
	n := (x.BitLen() + 7) / 8
	if n <= math.MaxUint8 {
		b = append(b, TagSmallBig, byte(n))
	} else if uint64(n) <= math.MaxUint32 {
		b = append(b, TagLargeBig)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	} else {
		return b, errors.New("etf: integer too large")
	}
	var sign byte
	if x.Sign() < 0 {
		sign = 1
	}
	b = append(b, sign)
	const wordBytes = bits.UintSize / 8
	words := x.Bits()
	for i := range n {
		b = append(b, byte(words[i/wordBytes]>>(8*(i%wordBytes))))
	}
	return b, nil
}

func appendBinary[S []byte | string](b []byte, s S) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return b, errors.New("etf: binary longer than 2^32-1 bytes")
	}
	b = append(b, TagBinary)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...), nil
}

// isByteList reports whether the BEAM writes l as a STRING_EXT: a list of
// at most 65535 integers in 0..255.
func isByteList(l List) bool {
	if len(l) > maxStringExtLength {
		return false
	}
	for _, e := range l {
		if _, ok := byteValue(e); !ok {
			return false
		}
	}
	return true
}

func byteValue(t Term) (byte, bool) {
	var v int64
	switch x := t.(type) {
	case int64:
		v = x
	case int:
		v = int64(x)
	case uint64:
		if x > math.MaxUint8 {
			return 0, false
		}
		v = int64(x)
	case *big.Int:
		if x == nil || !x.IsInt64() {
			return 0, false
		}
		v = x.Int64()
	default:
		return 0, false
	}
	if v < 0 || v > math.MaxUint8 {
		return 0, false
	}
	return byte(v), true
}
