// Package etf implements the subset of Erlang's external term format
// (the output of erlang:term_to_binary/1) that travels between the BEAM
// and ps_port: atoms, integers, binaries, tuples and proper lists.
//
// The input to [Decode] and the output of [Encode] is one complete term,
// starting with the version byte 131. Framing (the 4-byte length prefix
// added by the port's {packet, 4} option) is left to the caller.
//
// Erlang terms map to Go values as follows:
//
//	atom                  Atom
//	integer               int64, or *big.Int if it does not fit in int64
//	binary                []byte
//	tuple                 Tuple
//	proper list           List (the empty list [] is an empty List)
//
// A list of bytes such as [1,2,3], which term_to_binary/1 writes as a
// STRING_EXT, decodes to a List of int64 values, because that is what it
// is in Erlang: "abc" and [97,98,99] are the same term. Conversely
// [Encode] writes a List whose elements are all integers in 0..255 as a
// STRING_EXT when it has at most 65535 elements, exactly as the BEAM does.
//
// [Encode] writes atoms as SMALL_ATOM_UTF8_EXT (ATOM_UTF8_EXT when longer
// than 255 bytes), so its output is byte-for-byte what
// term_to_binary(T, [{minor_version, 2}]) returns for the same term.
// [Decode] accepts every encoding of these terms that OTP 25 and later
// emit with default options or with minor_version 2, plus the older
// SMALL_ATOM_EXT and the non-canonical integer and list encodings that
// binary_to_term/2 accepts. Floats, pids, ports, references, maps, funs,
// bit strings, compressed terms and improper lists are rejected.
package etf

// Term is an Erlang term: one of [Atom], int64, *big.Int, []byte, [Tuple]
// or [List]. [Encode] additionally accepts int, uint64 and string (written
// as a binary).
type Term = any

// Atom is an Erlang atom. Its value is the atom's text in UTF-8; an atom
// may have at most 255 characters (Unicode code points).
//
// Atoms compare with ==, also when boxed in a Term:
// t == Atom("eof") reports whether t is the atom eof.
type Atom string

// Int32 is an integer that [Encode] always writes as INTEGER_EXT (tag 98 and
// 4 bytes, big-endian), also when it would fit in SMALL_INTEGER_EXT: a field
// of fixed size, such as the child id in the frames of ps_port --shared.
// [Decode] never returns it: an INTEGER_EXT decodes to int64.
type Int32 int32

// Tuple is an Erlang tuple.
type Tuple []Term

// List is a proper Erlang list. A nil or empty List is the empty list [].
type List []Term

// MaxDepth is the deepest nesting of tuples and lists that [Decode] and
// [Encode] accept: a tuple or non-empty list nested inside MaxDepth others
// is an error. The limit bounds the recursion on hostile input; the port
// protocol itself nests at most two levels deep.
const MaxDepth = 64

// MatchTuple reports whether t is a tuple of the given arity whose first
// element is the atom tag, such as {stdout, Data} for
// MatchTuple(t, "stdout", 2), and returns the tuple if so.
func MatchTuple(t Term, tag Atom, arity int) (Tuple, bool) {
	tu, ok := t.(Tuple)
	if !ok || len(tu) != arity || arity == 0 {
		return nil, false
	}
	if a, ok := tu[0].(Atom); !ok || a != tag {
		return nil, false
	}
	return tu, true
}

// Tags of the external term format.
const (
	versionMagic       = 131
	tagNewFloat        = 70
	tagBitBinary       = 77
	tagCompressed      = 80
	tagAtomCacheRef    = 82
	tagNewPid          = 88
	tagNewPort         = 89
	tagNewerReference  = 90
	tagSmallInteger    = 97
	tagInteger         = 98
	tagFloat           = 99
	tagAtom            = 100
	tagReference       = 101
	tagPort            = 102
	tagPid             = 103
	tagSmallTuple      = 104
	tagLargeTuple      = 105
	tagNil             = 106
	tagString          = 107
	tagList            = 108
	tagBinary          = 109
	tagSmallBig        = 110
	tagLargeBig        = 111
	tagNewFun          = 112
	tagExport          = 113
	tagNewReference    = 114
	tagSmallAtom       = 115
	tagMap             = 116
	tagFun             = 117
	tagAtomUTF8        = 118
	tagSmallAtomUTF8   = 119
	tagV4Port          = 120
	tagLocal           = 121
	maxAtomChars       = 255
	maxStringExtLength = 65535
)

var tagNames = map[byte]string{
	tagNewFloat:       "NEW_FLOAT_EXT",
	tagBitBinary:      "BIT_BINARY_EXT",
	tagCompressed:     "compressed term",
	tagAtomCacheRef:   "ATOM_CACHE_REF",
	tagNewPid:         "NEW_PID_EXT",
	tagNewPort:        "NEW_PORT_EXT",
	tagNewerReference: "NEWER_REFERENCE_EXT",
	tagSmallInteger:   "SMALL_INTEGER_EXT",
	tagInteger:        "INTEGER_EXT",
	tagFloat:          "FLOAT_EXT",
	tagAtom:           "ATOM_EXT",
	tagReference:      "REFERENCE_EXT",
	tagPort:           "PORT_EXT",
	tagPid:            "PID_EXT",
	tagSmallTuple:     "SMALL_TUPLE_EXT",
	tagLargeTuple:     "LARGE_TUPLE_EXT",
	tagNil:            "NIL_EXT",
	tagString:         "STRING_EXT",
	tagList:           "LIST_EXT",
	tagBinary:         "BINARY_EXT",
	tagSmallBig:       "SMALL_BIG_EXT",
	tagLargeBig:       "LARGE_BIG_EXT",
	tagNewFun:         "NEW_FUN_EXT",
	tagExport:         "EXPORT_EXT",
	tagNewReference:   "NEW_REFERENCE_EXT",
	tagSmallAtom:      "SMALL_ATOM_EXT",
	tagMap:            "MAP_EXT",
	tagFun:            "FUN_EXT",
	tagAtomUTF8:       "ATOM_UTF8_EXT",
	tagSmallAtomUTF8:  "SMALL_ATOM_UTF8_EXT",
	tagV4Port:         "V4_PORT_EXT",
	tagLocal:          "LOCAL_EXT",
}

func tagName(tag byte) string {
	if s, ok := tagNames[tag]; ok {
		return s
	}
	return "unknown tag"
}

// knownAtoms holds the atoms of the port protocol, boxed once, so that
// decoding them allocates nothing.
var knownAtoms = func() map[string]Term {
	m := make(map[string]Term)
	for _, a := range []Atom{
		"ack", "command", "eof", "signal", "stop",
		"started", "spawn_error", "stdout", "stderr", "error",
		"oom_killed", "exit", "status", "badframe", "stdin_closed",
		"ok", "true", "false", "undefined", "nil", "open", "environ",
	} {
		m[string(a)] = a
	}
	return m
}()
