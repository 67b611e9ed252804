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
//
// The format's tags (TagSmallTuple, ..., VersionMagic, TagName) are
// exported for the project's other reader of the format, otpdist's term
// walker, which skips terms of every kind without decoding them.
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

// Tags of the external term format, as erts names them (external.h) in Go
// style: TagNewFloat is NEW_FLOAT_EXT. VersionMagic starts a whole
// term_to_binary. They are exported for other walkers of the format
// (otpdist's), so that the project has one table of them.
const (
	VersionMagic      = 131
	TagNewFloat       = 70
	TagBitBinary      = 77
	TagCompressed     = 80
	TagAtomCacheRef   = 82
	TagNewPid         = 88
	TagNewPort        = 89
	TagNewerReference = 90
	TagSmallInteger   = 97
	TagInteger        = 98
	TagFloat          = 99
	TagAtom           = 100
	TagReference      = 101
	TagPort           = 102
	TagPid            = 103
	TagSmallTuple     = 104
	TagLargeTuple     = 105
	TagNil            = 106
	TagString         = 107
	TagList           = 108
	TagBinary         = 109
	TagSmallBig       = 110
	TagLargeBig       = 111
	TagNewFun         = 112
	TagExport         = 113
	TagNewReference   = 114
	TagSmallAtom      = 115
	TagMap            = 116
	TagFun            = 117
	TagAtomUTF8       = 118
	TagSmallAtomUTF8  = 119
	TagV4Port         = 120
	TagLocal          = 121
)

const (
	maxAtomChars       = 255
	maxStringExtLength = 65535
)

var tagNames = map[byte]string{
	TagNewFloat:       "NEW_FLOAT_EXT",
	TagBitBinary:      "BIT_BINARY_EXT",
	TagCompressed:     "compressed term",
	TagAtomCacheRef:   "ATOM_CACHE_REF",
	TagNewPid:         "NEW_PID_EXT",
	TagNewPort:        "NEW_PORT_EXT",
	TagNewerReference: "NEWER_REFERENCE_EXT",
	TagSmallInteger:   "SMALL_INTEGER_EXT",
	TagInteger:        "INTEGER_EXT",
	TagFloat:          "FLOAT_EXT",
	TagAtom:           "ATOM_EXT",
	TagReference:      "REFERENCE_EXT",
	TagPort:           "PORT_EXT",
	TagPid:            "PID_EXT",
	TagSmallTuple:     "SMALL_TUPLE_EXT",
	TagLargeTuple:     "LARGE_TUPLE_EXT",
	TagNil:            "NIL_EXT",
	TagString:         "STRING_EXT",
	TagList:           "LIST_EXT",
	TagBinary:         "BINARY_EXT",
	TagSmallBig:       "SMALL_BIG_EXT",
	TagLargeBig:       "LARGE_BIG_EXT",
	TagNewFun:         "NEW_FUN_EXT",
	TagExport:         "EXPORT_EXT",
	TagNewReference:   "NEW_REFERENCE_EXT",
	TagSmallAtom:      "SMALL_ATOM_EXT",
	TagMap:            "MAP_EXT",
	TagFun:            "FUN_EXT",
	TagAtomUTF8:       "ATOM_UTF8_EXT",
	TagSmallAtomUTF8:  "SMALL_ATOM_UTF8_EXT",
	TagV4Port:         "V4_PORT_EXT",
	TagLocal:          "LOCAL_EXT",
}

// TagName is tag's name in erts (SMALL_TUPLE_EXT), or "unknown tag".
func TagName(tag byte) string {
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
