package node

import (
	"fmt"
	"math"
	"math/big"
	"unicode/utf8"

	"github.com/ergo-services/ergo/etf"
	"github.com/protonstream/ps_port/otpdist"
)

// Helpers to read the terms ergo decodes from the wire. ergo gives small
// integers as int, larger ones as int64/uint64/*big.Int, binaries as []byte,
// strings sent as STRING_EXT (lists of bytes) as Go string, other lists as
// etf.List (an improper list's tail as its last element), atoms as etf.Atom
// except true/false, which become Go bools.

var (
	atomOK    = etf.Atom("ok")
	atomError = etf.Atom("error")
)

// intOf returns t as an int64 when it is an integer that fits.
func intOf(t etf.Term) (int64, bool) {
	switch v := t.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v), true
		}
	case *big.Int:
		if v.IsInt64() {
			return v.Int64(), true
		}
	}
	return 0, false
}

// textOf returns t as a UTF-8 string when it is a binary or a charlist (a
// list of Unicode code points, as Erlang gives file names and arguments).
func textOf(t etf.Term) (string, bool) {
	switch v := t.(type) {
	case []byte:
		return string(v), true
	case string: // STRING_EXT: a list of code points 0..255
		if isASCII(v) {
			return v, true
		}
		b := make([]byte, 0, len(v)*2)
		for i := 0; i < len(v); i++ {
			b = utf8.AppendRune(b, rune(v[i]))
		}
		return string(b), true
	case etf.List:
		b := make([]byte, 0, len(v))
		for _, e := range v {
			n, ok := intOf(e)
			if !ok || n < 0 || n > utf8.MaxRune || (n >= 0xD800 && n <= 0xDFFF) {
				return "", false
			}
			b = utf8.AppendRune(b, rune(n))
		}
		return string(b), true
	}
	return "", false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// maxIodataDepth bounds the nesting of an iolist.
const maxIodataDepth = 100

// appendIodata appends the bytes of iodata t (a binary, or a possibly nested
// and improper list of bytes 0..255 and binaries) to b.
func appendIodata(b []byte, t etf.Term, depth int) ([]byte, error) {
	if depth > maxIodataDepth {
		return b, fmt.Errorf("iolist nested deeper than %d", maxIodataDepth)
	}
	switch v := t.(type) {
	case []byte:
		return append(b, v...), nil
	case string:
		return append(b, v...), nil
	case etf.List:
		for _, e := range v {
			if n, ok := intOf(e); ok {
				if n < 0 || n > 255 {
					return b, fmt.Errorf("iolist element %d is not a byte", n)
				}
				b = append(b, byte(n))
				continue
			}
			var err error
			if b, err = appendIodata(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return b, nil
	}
	return b, fmt.Errorf("not iodata: %s", describe(t))
}

// iodataSize is the byte size of iodata t, or -1 when it is not iodata.
func iodataSize(t etf.Term, depth int) int {
	if depth > maxIodataDepth {
		return -1
	}
	switch v := t.(type) {
	case []byte:
		return len(v)
	case string:
		return len(v)
	case etf.List:
		n := 0
		for _, e := range v {
			if b, ok := intOf(e); ok {
				if b < 0 || b > 255 {
					return -1
				}
				n++
				continue
			}
			s := iodataSize(e, depth+1)
			if s < 0 {
				return -1
			}
			n += s
		}
		return n
	}
	return -1
}

// describe renders a term for a log line or an error message, shortened.
func describe(t etf.Term) string {
	s := fmt.Sprintf("%v", t)
	switch t.(type) {
	case []byte:
		s = fmt.Sprintf("<<%d bytes>>", len(t.([]byte)))
	case etf.Atom:
		s = ":" + string(t.(etf.Atom))
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// tuple returns t as a tuple of n elements whose first is the atom tag.
func tagged(t etf.Term, tag string, n int) (etf.Tuple, bool) {
	tu, ok := t.(etf.Tuple)
	if !ok || len(tu) != n {
		return nil, false
	}
	if a, ok := tu[0].(etf.Atom); !ok || string(a) != tag {
		return nil, false
	}
	return tu, true
}

// isAtom reports whether t is the atom name. (Comparing an etf.Term with ==
// panics when it holds a list or a map, so never do that.)
func isAtom(t etf.Term, name string) bool {
	a, ok := t.(etf.Atom)
	return ok && string(a) == name
}

// boolOf reads a boolean (ergo decodes the atoms true and false as bools).
func boolOf(t etf.Term) (bool, bool) {
	switch v := t.(type) {
	case bool:
		return v, true
	case etf.Atom:
		switch v {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}

// callFrom is the From of a $gen_call: a pid and a tag, the tag a plain
// reference or [alias | Ref] (OTP 24+).
type callFrom struct {
	pid   etf.Pid
	ref   etf.Ref
	alias bool
}

// parseCall reads {'$gen_call', From, Request}.
func parseCall(t etf.Term) (callFrom, etf.Term, bool) {
	tu, ok := tagged(t, "$gen_call", 3)
	if !ok {
		return callFrom{}, nil, false
	}
	from, ok := tu[1].(etf.Tuple)
	if !ok || len(from) != 2 {
		return callFrom{}, nil, false
	}
	var f callFrom
	if f.pid, ok = from[0].(etf.Pid); !ok {
		return callFrom{}, nil, false
	}
	switch tag := from[1].(type) {
	case etf.Ref:
		f.ref = tag
	case etf.List:
		if len(tag) != 2 || !isAtom(tag[0], "alias") {
			return callFrom{}, nil, false
		}
		if f.ref, ok = tag[1].(etf.Ref); !ok {
			return callFrom{}, nil, false
		}
		f.alias = true
	default:
		return callFrom{}, nil, false
	}
	return f, tu[2], true
}

// replyTo returns where and what to send as the reply to a call.
func (f callFrom) replyTo(reply etf.Term) (to interface{}, msg etf.Term) {
	if f.alias {
		return etf.Alias(f.ref), etf.Tuple{etf.ListImproper{etf.Atom("alias"), f.ref}, reply}
	}
	return f.pid, etf.Tuple{f.ref, reply}
}

func errorTerm(reason etf.Term) etf.Term { return etf.Tuple{atomError, reason} }

// tooLarge reads {'$ps_too_large', Weight, Max}, what the distribution
// translation puts in place of a request heavier than --max-request
// (otpdist/weigh.go).
func tooLarge(t etf.Term) (string, bool) {
	tu, ok := tagged(t, otpdist.TooLargeAtom, 3)
	if !ok {
		return "", false
	}
	w, _ := intOf(tu[1])
	m, _ := intOf(tu[2])
	return fmt.Sprintf("a request of %d bytes (lists and tuples weighed as decoded) is more than this node takes "+
		"(ps_port node --max-request %d): send less at once, or start the node with a larger --max-request", w, m), true
}
