package etf_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"math/big"
	"runtime"
	"strings"
	"testing"

	"github.com/protonstream/ps_port/etf"
)

// equal reports whether got, a decoded term, equals want. want may use
// int for integers; got must use int64, or *big.Int beyond int64.
func equal(got, want etf.Term) bool {
	switch w := want.(type) {
	case int:
		want = int64(w)
	case uint64:
		want = new(big.Int).SetUint64(w)
		if w <= math.MaxInt64 {
			want = int64(w)
		}
	case *big.Int:
		if w.IsInt64() {
			want = w.Int64()
		}
	}
	switch w := want.(type) {
	case etf.Atom:
		g, ok := got.(etf.Atom)
		return ok && g == w
	case int64:
		g, ok := got.(int64)
		return ok && g == w
	case *big.Int:
		g, ok := got.(*big.Int)
		return ok && g.Cmp(w) == 0
	case []byte:
		g, ok := got.([]byte)
		return ok && g != nil && bytes.Equal(g, w)
	case etf.Tuple:
		g, ok := got.(etf.Tuple)
		if !ok || g == nil || len(g) != len(w) {
			return false
		}
		for i := range g {
			if !equal(g[i], w[i]) {
				return false
			}
		}
		return true
	case etf.List:
		g, ok := got.(etf.List)
		if !ok || g == nil || len(g) != len(w) {
			return false
		}
		for i := range g {
			if !equal(g[i], w[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bigInt(s string) *big.Int {
	x, ok := new(big.Int).SetString(s, 0)
	if !ok {
		panic("bad big integer " + s)
	}
	return x
}

// nested returns n tuples nested in each other around the empty list.
func nested(n int) etf.Term {
	var t etf.Term = etf.List{}
	for range n {
		t = etf.Tuple{t}
	}
	return t
}

func TestEncodeDecodeSimple(t *testing.T) {
	for _, tc := range []struct {
		term etf.Term
		hex  string
	}{
		{etf.Atom("eof"), "83 77 03 656f66"},
		{etf.Atom(""), "83 77 00"},
		{0, "83 61 00"},
		{255, "83 61 ff"},
		{256, "83 62 00000100"},
		{-1, "83 62 ffffffff"},
		{int64(math.MinInt32), "83 62 80000000"},
		{int64(math.MaxInt32) + 1, "83 6e 04 00 00000080"},
		{int64(math.MinInt64), "83 6e 08 01 0000000000000080"},
		{uint64(math.MaxUint64), "83 6e 08 00 ffffffffffffffff"},
		{[]byte{}, "83 6d 00000000"},
		{"hi", "83 6d 00000002 6869"},
		{etf.Tuple{}, "83 68 00"},
		{etf.List{}, "83 6a"},
		{etf.List(nil), "83 6a"},
		{etf.List{1, 2, 3}, "83 6b 0003 010203"},
		{etf.List{int64(1), uint64(2), big.NewInt(3)}, "83 6b 0003 010203"},
		{etf.List{etf.Atom("a")}, "83 6c 00000001 77 01 61 6a"},
		{etf.List{256}, "83 6c 00000001 62 00000100 6a"},
		{etf.Tuple{etf.Atom("ack"), 65536}, "83 68 02 77 03 61636b 62 00010000"},
	} {
		got, err := etf.Encode(tc.term)
		if err != nil {
			t.Errorf("Encode(%#v): %v", tc.term, err)
			continue
		}
		if want := unhex(t, tc.hex); !bytes.Equal(got, want) {
			t.Errorf("Encode(%#v) = % x, want % x", tc.term, got, want)
		}
		dec, err := etf.Decode(got)
		if err != nil {
			t.Errorf("Decode(% x): %v", got, err)
		} else if !equal(dec, tc.term) {
			if _, isString := tc.term.(string); !isString || string(dec.([]byte)) != tc.term {
				t.Errorf("Decode(% x) = %#v, want %#v", got, dec, tc.term)
			}
		}
	}
}

func TestAppendBinaryTupleHeader(t *testing.T) {
	for _, tag := range []etf.Atom{"stdout", "stderr", "command", "", "ä", etf.Atom(strings.Repeat("é", 200))} {
		for _, n := range []int{0, 1, 255, 256, 4096, 70000} {
			payload := bytes.Repeat([]byte{0xa5}, n)
			prefix := []byte("frame")
			hdr := etf.AppendBinaryTupleHeader(prefix, tag, n)
			if !bytes.HasPrefix(hdr, []byte("frame")) {
				t.Fatalf("AppendBinaryTupleHeader lost dst: % x", hdr)
			}
			got := append(hdr[len(prefix):len(hdr):len(hdr)], payload...)
			want, err := etf.Encode(etf.Tuple{tag, payload})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("tag %q, n %d: header+payload = % x..., want % x...", tag, n, got[:min(len(got), 40)], want[:min(len(want), 40)])
			}
		}
	}
	if got, want := etf.AppendBinaryTupleHeader(nil, "stdout", 4096), unhex(t, "83 68 02 77 06 7374646f7574 6d 00001000"); !bytes.Equal(got, want) {
		t.Errorf("stdout header = % x, want % x", got, want)
	}
	for _, bad := range []func(){
		func() { etf.AppendBinaryTupleHeader(nil, "stdout", -1) },
		func() { etf.AppendBinaryTupleHeader(nil, "\xff", 1) },
		func() { etf.AppendBinaryTupleHeader(nil, etf.Atom(strings.Repeat("x", 256)), 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("AppendBinaryTupleHeader did not panic on bad arguments")
				}
			}()
			bad()
		}()
	}
}

func TestMatchTuple(t *testing.T) {
	msg := etf.Tuple{etf.Atom("command"), []byte("x")}
	if tu, ok := etf.MatchTuple(msg, "command", 2); !ok || len(tu) != 2 {
		t.Errorf("MatchTuple(command, 2) = %v, %v", tu, ok)
	}
	for _, tc := range []struct {
		t     etf.Term
		tag   etf.Atom
		arity int
	}{
		{msg, "command", 3},
		{msg, "ack", 2},
		{etf.Atom("command"), "command", 1},
		{etf.Tuple{}, "", 0},
		{etf.Tuple{[]byte("command"), 1}, "command", 2},
		{etf.List{etf.Atom("command"), 1}, "command", 2},
		{nil, "command", 2},
	} {
		if _, ok := etf.MatchTuple(tc.t, tc.tag, tc.arity); ok {
			t.Errorf("MatchTuple(%#v, %q, %d) matched", tc.t, tc.tag, tc.arity)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	cyclic := etf.Tuple{nil}
	cyclic[0] = cyclic
	for _, tc := range []struct {
		name string
		term etf.Term
	}{
		{"nil", nil},
		{"float", 1.5},
		{"int32", int32(1)},
		{"bool", true},
		{"plain slice", []etf.Term{etf.Atom("a")}},
		{"nil big", (*big.Int)(nil)},
		{"invalid UTF-8 atom", etf.Atom("\xc3")},
		{"atom of 256 characters", etf.Atom(strings.Repeat("é", 256))},
		{"nested unsupported", etf.Tuple{etf.Atom("a"), etf.List{1.5}}},
		{"too deep", nested(etf.MaxDepth + 1)},
		{"too deep list", etf.List{nested(etf.MaxDepth)}},
		{"cyclic", cyclic},
	} {
		dst := []byte("keep")
		got, err := etf.AppendTerm(dst, tc.term)
		if err == nil {
			t.Errorf("%s: AppendTerm succeeded: % x", tc.name, got)
			continue
		}
		if !strings.HasPrefix(err.Error(), "etf: ") {
			t.Errorf("%s: error %q lacks the etf: prefix", tc.name, err)
		}
		if string(got) != "keep" {
			t.Errorf("%s: AppendTerm returned %q on error, want dst unchanged", tc.name, got)
		}
	}
}

func TestDepthLimit(t *testing.T) {
	// MaxDepth nested tuples, and byte lists and [] inside them, are fine.
	for _, term := range []etf.Term{
		nested(etf.MaxDepth),
		etf.List{nested(etf.MaxDepth - 1)},
		etf.Tuple{etf.List{nested(etf.MaxDepth - 3)}, etf.List{1, 2}},
	} {
		b, err := etf.Encode(term)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		got, err := etf.Decode(b)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !equal(got, term) {
			t.Errorf("round trip changed the term")
		}
	}

	// One level more is an error, both ways.
	deep := append(bytes.Repeat([]byte{0x68, 1}, etf.MaxDepth+1), 0x6a)
	if _, err := etf.Decode(append([]byte{131}, deep...)); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Errorf("Decode of %d nested tuples: err = %v, want a nesting error", etf.MaxDepth+1, err)
	}
	if _, err := etf.Encode(nested(etf.MaxDepth + 1)); err == nil {
		t.Errorf("Encode of %d nested tuples succeeded", etf.MaxDepth+1)
	}
}

// bombs returns inputs nested 10 000 levels deep.
func bombs() map[string][]byte {
	const n = 10000
	b := map[string][]byte{}
	b["tuples"] = append(append([]byte{131}, bytes.Repeat([]byte{0x68, 1}, n)...), 0x6a)
	b["large tuples"] = append(append([]byte{131}, bytes.Repeat([]byte{0x69, 0, 0, 0, 1}, n)...), 0x6a)
	lists := []byte{131}
	for range n {
		lists = append(lists, 0x6c, 0, 0, 0, 1)
	}
	lists = append(lists, 0x6a)
	for range n {
		lists = append(lists, 0x6a)
	}
	b["lists"] = lists
	tails := []byte{131}
	for range n {
		tails = append(tails, 0x6c, 0, 0, 0, 1, 0x61, 7)
	}
	b["list tails"] = append(tails, 0x6a)
	return b
}

func TestDepthBomb(t *testing.T) {
	for name, in := range bombs() {
		_, err := etf.Decode(in)
		var de *etf.DecodeError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "nested more than 64") {
			t.Errorf("%s: Decode err = %v, want a nesting error", name, err)
		}
	}
}

// validVectors is a set of encodings covering every supported tag.
func validVectors(t testing.TB) [][]byte {
	var out [][]byte
	for _, term := range []etf.Term{
		etf.Atom("a"), etf.Atom("ok"), etf.Atom("é"), etf.Atom(strings.Repeat("ü", 200)),
		0, 300, -5, int64(1) << 40, int64(math.MinInt64), bigInt("0x1" + strings.Repeat("0", 600)),
		[]byte("payload"), etf.Tuple{}, etf.Tuple{1, etf.Atom("x")}, make(etf.Tuple, 256),
		etf.List{}, etf.List{1, 2}, etf.List{etf.Atom("x"), etf.List{etf.Tuple{}}},
		etf.Tuple{etf.Atom("exit"), etf.Tuple{etf.Atom("status"), 0}},
		etf.Tuple{etf.Atom("spawn_error"), etf.Atom("enoent"), []byte("no such file")},
	} {
		if tu, ok := term.(etf.Tuple); ok && len(tu) == 256 {
			for i := range tu {
				tu[i] = i
			}
		}
		b, err := etf.Encode(term)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	for _, s := range []string{
		"83 73 03 616263",                 // SMALL_ATOM_EXT
		"83 64 0002 e9e8",                 // ATOM_EXT, Latin-1
		"83 76 0002 6f6b",                 // ATOM_UTF8_EXT, short
		"83 6f 00000002 01 0001",          // LARGE_BIG_EXT
		"83 6c 00000001 61 01 6b 0001 02", // list with a string tail
	} {
		out = append(out, unhex(t, s))
	}
	return out
}

func TestTruncated(t *testing.T) {
	for _, b := range validVectors(t) {
		if _, err := etf.Decode(b); err != nil {
			t.Fatalf("Decode(% x): %v", b, err)
		}
		for i := range len(b) {
			got, err := etf.Decode(b[:i])
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Decode(% x) = %v, %v; want io.ErrUnexpectedEOF", b[:i], got, err)
			}
		}
	}
}

func TestTrailingBytes(t *testing.T) {
	for _, b := range validVectors(t) {
		in := append(append([]byte(nil), b...), 0x6a)
		_, err := etf.Decode(in)
		var de *etf.DecodeError
		if !errors.As(err, &de) || de.Offset != len(b) || !strings.Contains(err.Error(), "trailing") {
			t.Errorf("Decode(% x) err = %v, want trailing bytes at offset %d", in, err, len(b))
		}
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hex    string
		offset int
		tag    byte
		msg    string // in the error text
	}{
		{"empty", "", 0, 0, "unexpected EOF"},
		{"version only", "83", 1, 0, "unexpected EOF"},
		{"wrong version", "82 61 01", 0, 0, "version byte is 130"},
		{"no version", "61 01", 0, 0, "version byte is 97"},
		{"tag 0", "83 00", 1, 0, "not a term tag"},
		{"unknown tag", "83 ff", 1, 255, "tag 255 (unknown tag)"},
		{"compressed", "83 50 00000003 789c", 1, 80, "compressed"},
		{"new float", "83 46 3ff0000000000000", 1, 70, "NEW_FLOAT_EXT"},
		{"old float", "83 63 " + strings.Repeat("30", 31), 1, 99, "FLOAT_EXT"},
		{"map", "83 74 00000000", 1, 116, "MAP_EXT"},
		{"pid", "83 58 77 01 61 00000001 00000000 00000000", 1, 88, "NEW_PID_EXT"},
		{"reference", "83 5a 0001 77 01 61 00000000 00000001", 1, 90, "NEWER_REFERENCE_EXT"},
		{"port", "83 78 77 01 61 0000000000000001 00000000", 1, 120, "V4_PORT_EXT"},
		{"export", "83 71 77 01 61 77 01 62 61 01", 1, 113, "EXPORT_EXT"},
		{"fun", "83 70 00000000", 1, 112, "NEW_FUN_EXT"},
		{"bit binary", "83 4d 00000001 03 e0", 1, 77, "BIT_BINARY_EXT"},
		{"atom cache ref", "83 52 00", 1, 82, "ATOM_CACHE_REF"},
		{"local", "83 79 61 01", 1, 121, "LOCAL_EXT"},
		{"unsupported in tuple", "83 68 02 61 01 74 00000000", 5, 116, "not supported"},
		{"improper list", "83 6c 00000001 61 01 61 02", 1, 108, "improper list"},
		{"improper list, atom tail", "83 6c 00000002 61 01 61 02 77 01 61", 1, 108, "improper list"},
		{"huge tuple", "83 69 ffffffff 6a6a6a6a6a6a6a6a6a6a", 1, 105, "unexpected EOF"},
		{"huge list", "83 6c ffffffff 6a6a6a6a6a6a6a6a6a6a", 1, 108, "unexpected EOF"},
		{"list without room for tail", "83 6c 00000002 6a 6a", 1, 108, "unexpected EOF"},
		{"huge binary", "83 6d ffffffff 00", 1, 109, "unexpected EOF"},
		{"huge string", "83 6b ffff 0102", 1, 107, "unexpected EOF"},
		{"huge atom", "83 64 ffff 61", 1, 100, "unexpected EOF"},
		{"huge big", "83 6f ffffffff 00 01", 1, 111, "unexpected EOF"},
		{"small tuple short", "83 68 03 61 01", 1, 104, "unexpected EOF"},
		{"truncated in element", "83 68 02 61 01 62 0000", 5, 98, "unexpected EOF"},
		{"big sign byte", "83 6e 01 02 05", 1, 110, "sign byte is 2"},
		{"latin-1 atom too long", "83 64 0100 " + strings.Repeat("61", 256), 1, 100, "256 characters"},
		{"UTF-8 atom too long", "83 76 0200 " + strings.Repeat("c3a9", 256), 1, 118, "256 characters"},
		{"invalid UTF-8 atom", "83 77 02 c328", 1, 119, "not valid UTF-8"},
		{"surrogate in atom", "83 77 03 eda080", 1, 119, "not valid UTF-8"},
		{"truncated UTF-8 atom", "83 77 01 c3", 1, 119, "not valid UTF-8"},
		{"trailing", "83 6a 6a", 2, 0, "1 trailing bytes"},
	} {
		in := unhex(t, tc.hex)
		got, err := etf.Decode(in)
		if err == nil {
			t.Errorf("%s: Decode(% x) = %#v, want an error", tc.name, in, got)
			continue
		}
		var de *etf.DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: error %v is a %T, want *etf.DecodeError", tc.name, err, err)
			continue
		}
		if de.Offset != tc.offset || de.Tag != tc.tag || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %q (offset %d, tag %d), want offset %d, tag %d, containing %q",
				tc.name, err, de.Offset, de.Tag, tc.offset, tc.tag, tc.msg)
		}
		if !strings.HasPrefix(err.Error(), "etf: offset ") {
			t.Errorf("%s: err = %q, want it to start with the offset", tc.name, err)
		}
	}
}

// TestUnknownTags checks that every tag outside the supported set is
// rejected and named in the error, whatever follows it.
func TestUnknownTags(t *testing.T) {
	supported := map[byte]bool{97: true, 98: true, 100: true, 104: true, 105: true, 106: true, 107: true,
		108: true, 109: true, 110: true, 111: true, 115: true, 118: true, 119: true}
	for tag := range 256 {
		if supported[byte(tag)] {
			continue
		}
		for _, rest := range [][]byte{nil, make([]byte, 16), bytes.Repeat([]byte{0xff}, 16)} {
			in := append([]byte{131, byte(tag)}, rest...)
			_, err := etf.Decode(in)
			var de *etf.DecodeError
			if !errors.As(err, &de) || de.Offset != 1 || de.Tag != byte(tag) && tag != 0 {
				t.Errorf("Decode(% x): err = %v, want a DecodeError for tag %d at offset 1", in, err, tag)
			}
		}
	}
}

// TestHugeLengthsDoNotAllocate checks that length and arity fields are
// checked against the remaining input before anything is allocated.
func TestHugeLengthsDoNotAllocate(t *testing.T) {
	pad := strings.Repeat("6a", 10)
	for _, h := range []string{
		"83 69 ffffffff" + pad,
		"83 6c ffffffff" + pad,
		"83 6d ffffffff" + pad,
		"83 6f ffffffff" + pad,
		"83 6b ffff" + pad,
		"83 76 ffff" + pad,
		"83 68 02 69 ffffffff" + pad,
		"83 6c 00000001 6c fffffff0" + pad,
	} {
		in := unhex(t, h)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := etf.Decode(in)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("Decode(% x) succeeded", in)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 4096 {
			t.Errorf("Decode(% x) allocated %d bytes", in, n)
		}
	}
}

func TestBinariesShareInput(t *testing.T) {
	in := unhex(t, "83 68 02 6d 00000002 6162 6d 00000001 63")
	got, err := etf.Decode(in)
	if err != nil {
		t.Fatal(err)
	}
	first := got.(etf.Tuple)[0].([]byte)
	if cap(first) != 2 {
		t.Errorf("cap of a decoded binary = %d, want 2", cap(first))
	}
	_ = append(first, 'X')
	if in[len(in)-6] != 0x6d {
		t.Error("appending to a decoded binary overwrote the input")
	}
	in[9] = 'z'
	if string(first) != "az" {
		t.Errorf("decoded binary = %q, want it to alias the input", first)
	}
}

func TestDecodeProtocolAtomsDoNotAllocate(t *testing.T) {
	in := unhex(t, "83 77 03 656f66")
	if n := testing.AllocsPerRun(100, func() { _, _ = etf.Decode(in) }); n != 0 {
		t.Errorf("Decode(eof) made %v allocations, want 0", n)
	}
	in = unhex(t, "83 6a")
	if n := testing.AllocsPerRun(100, func() { _, _ = etf.Decode(in) }); n != 0 {
		t.Errorf("Decode([]) made %v allocations, want 0", n)
	}
}

func TestInt32AndIDBinaryTupleHeader(t *testing.T) {
	// The id of a --shared frame is INTEGER_EXT even when small: the header
	// of {stdout, 7, <<"hi">>} has a fixed size.
	got, err := etf.Encode(etf.Tuple{etf.Atom("started"), etf.Int32(7), int64(7)})
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "83 68 03 77 07 73746172746564 62 00000007 61 07"); !bytes.Equal(got, want) {
		t.Errorf("{started, Int32(7), 7} = % x, want % x", got, want)
	}
	back, err := etf.Decode(got)
	if err != nil || !equal(back, etf.Tuple{etf.Atom("started"), int64(7), int64(7)}) {
		t.Errorf("decoded back as %#v, %v; want int64 ids", back, err)
	}
	for _, id := range []int32{1, 255, 256, 1<<31 - 1} {
		for _, n := range []int{0, 1, 70000} {
			payload := bytes.Repeat([]byte{0x5a}, n)
			hdr := etf.AppendIDBinaryTupleHeader([]byte("x"), "stderr", id, n)
			frame := append(hdr[1:len(hdr):len(hdr)], payload...)
			want, _ := etf.Encode(etf.Tuple{etf.Atom("stderr"), etf.Int32(id), payload})
			if !bytes.Equal(frame, want) {
				t.Errorf("id %d, n %d: header+payload = % x..., want % x...", id, n, frame[:min(len(frame), 30)], want[:min(len(want), 30)])
			}
			if len(hdr)-1 != 3+2+6+5+5 {
				t.Errorf("id %d: header is %d bytes, want the fixed 21", id, len(hdr)-1)
			}
		}
	}
}
