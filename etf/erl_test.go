package etf_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// An erlCase is checked against a real Erlang node.
//
// If hex is empty the case is a canonical term: erl evaluates expr and
// prints term_to_binary of it with default options and with
// minor_version 2; Decode of both must equal want, Encode(want) (and
// Encode(alt), if set) must equal the minor_version 2 bytes, and erl must
// decode Go's bytes to a term =:= expr.
//
// If hex is set and expr is not, the bytes are malformed: erl's
// binary_to_term must reject them, and so must Decode.
//
// If both are set, hex is a hand-made (non-canonical) encoding of expr:
// erl's binary_to_term(hex, [safe]) must be =:= expr, and Decode(hex)
// must equal want.
type erlCase struct {
	name string
	expr string
	want etf.Term
	alt  etf.Term
	hex  string
}

func seqTuple(n int) etf.Tuple {
	t := make(etf.Tuple, n)
	for i := range t {
		t[i] = i + 1
	}
	return t
}

func byteSeq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func repeatList(n int, e etf.Term) etf.List {
	l := make(etf.List, n)
	for i := range l {
		l[i] = e
	}
	return l
}

func erlCases() []erlCase {
	payload4k := byteSeq(4096)
	return []erlCase{
		// Atoms.
		{name: "empty atom", expr: "''", want: etf.Atom("")},
		{name: "atom a", expr: "a", want: etf.Atom("a")},
		{name: "atom 255 ascii", expr: "list_to_atom(lists:duplicate(255, $a))", want: etf.Atom(strings.Repeat("a", 255))},
		{name: "atom latin1", expr: "'\\x{e9}t\\x{e9}'", want: etf.Atom("été")},
		{name: "atom 255 latin1", expr: "list_to_atom(lists:duplicate(255, 16#e9))", want: etf.Atom(strings.Repeat("é", 255))},
		{name: "atom 255 bytes", expr: "list_to_atom(lists:duplicate(127, 16#e9) ++ \"a\")", want: etf.Atom(strings.Repeat("é", 127) + "a")},
		{name: "atom 256 bytes", expr: "list_to_atom(lists:duplicate(128, 16#e9))", want: etf.Atom(strings.Repeat("é", 128))},
		{name: "atom cjk", expr: "list_to_atom([16#65e5, 16#672c])", want: etf.Atom("日本")},
		{name: "atom emoji", expr: "list_to_atom([16#1f600])", want: etf.Atom("😀")},
		{name: "atom 255 emoji", expr: "list_to_atom(lists:duplicate(255, 16#1f600))", want: etf.Atom(strings.Repeat("😀", 255))},
		{name: "atom mixed", expr: "list_to_atom(\"spawn_\" ++ [16#430, 16#1f600])", want: etf.Atom("spawn_а😀")},
		{name: "true", expr: "true", want: etf.Atom("true")},

		// Integers.
		{name: "0", expr: "0", want: 0},
		{name: "1", expr: "1", want: 1},
		{name: "255", expr: "255", want: 255},
		{name: "256", expr: "256", want: 256},
		{name: "-1", expr: "-1", want: -1},
		{name: "-256", expr: "-256", want: -256},
		{name: "2^31-1", expr: "2147483647", want: 1<<31 - 1},
		{name: "-2^31", expr: "-2147483648", want: -1 << 31},
		{name: "2^31", expr: "2147483648", want: 1 << 31},
		{name: "-2^31-1", expr: "-2147483649", want: -1<<31 - 1},
		{name: "2^32", expr: "4294967296", want: 1 << 32},
		{name: "2^62", expr: "4611686018427387904", want: 1 << 62},
		{name: "2^63-1", expr: "9223372036854775807", want: int64(1<<63 - 1)},
		{name: "-2^63", expr: "-9223372036854775808", want: int64(-1 << 63)},
		{name: "2^63", expr: "9223372036854775808", want: bigInt("9223372036854775808"), alt: uint64(1 << 63)},
		{name: "-2^63-1", expr: "-9223372036854775809", want: bigInt("-9223372036854775809")},
		{name: "2^64-1", expr: "18446744073709551615", want: bigInt("18446744073709551615"), alt: uint64(1<<64 - 1)},
		{name: "2^64", expr: "18446744073709551616", want: bigInt("18446744073709551616")},
		{name: "2^2039", expr: "1 bsl 2039", want: new(big.Int).Lsh(bigInt("1"), 2039)},
		{name: "2^2040", expr: "1 bsl 2040", want: new(big.Int).Lsh(bigInt("1"), 2040)},
		{name: "-2^3000+1", expr: "1 - (1 bsl 3000)", want: new(big.Int).Sub(bigInt("1"), new(big.Int).Lsh(bigInt("1"), 3000))},

		// Binaries.
		{name: "empty binary", expr: "<<>>", want: []byte{}, alt: ""},
		{name: "binary", expr: "<<\"hello\">>", want: []byte("hello"), alt: "hello"},
		{name: "binary all bytes", expr: "<< <<X>> || X <- lists:seq(0, 255) >>", want: func() []byte {
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}()},
		{name: "binary 70000", expr: "<< <<(X * 7):8>> || X <- lists:seq(0, 69999) >>", want: byteSeq(70000)},

		// Tuples.
		{name: "empty tuple", expr: "{}", want: etf.Tuple{}},
		{name: "tuple 1", expr: "{a}", want: etf.Tuple{etf.Atom("a")}},
		{name: "nested tuples", expr: "{1, {2, {3, {}}}, {<<>>, []}}", want: etf.Tuple{1, etf.Tuple{2, etf.Tuple{3, etf.Tuple{}}}, etf.Tuple{[]byte{}, etf.List{}}}},
		{name: "tuple 255", expr: "list_to_tuple(lists:seq(1, 255))", want: seqTuple(255)},
		{name: "tuple 256", expr: "list_to_tuple(lists:seq(1, 256))", want: seqTuple(256)},
		{name: "tuple 300", expr: "list_to_tuple(lists:seq(1, 300))", want: seqTuple(300)},
		{name: "64 nested tuples", expr: "lists:foldl(fun(_, A) -> {A} end, [], lists:seq(1, 64))", want: nested(64)},

		// Lists.
		{name: "nil", expr: "[]", want: etf.List{}},
		{name: "list of atom", expr: "[a]", want: etf.List{etf.Atom("a")}},
		{name: "list of nil", expr: "[[]]", want: etf.List{etf.List{}}},
		{name: "list mixed", expr: "[1, a, <<\"b\">>, {c}, [2], -1, 256]", want: etf.List{1, etf.Atom("a"), []byte("b"), etf.Tuple{etf.Atom("c")}, etf.List{2}, -1, 256}},
		{name: "byte list", expr: "[1, 2, 3]", want: etf.List{1, 2, 3}},
		{name: "string", expr: "\"hello\"", want: etf.List{104, 101, 108, 108, 111}},
		{name: "byte list 0 255", expr: "[0, 255]", want: etf.List{0, 255}},
		{name: "list 256", expr: "[256]", want: etf.List{256}},
		{name: "list -1", expr: "[-1]", want: etf.List{-1}},
		{name: "nested byte lists", expr: "[[1, 2], [3], \"\"]", want: etf.List{etf.List{1, 2}, etf.List{3}, etf.List{}}},
		{name: "byte list 65535", expr: "lists:duplicate(65535, 7)", want: repeatList(65535, 7)},
		{name: "byte list 65536", expr: "lists:duplicate(65536, 7)", want: repeatList(65536, 7)},
		{name: "list of bignums", expr: "[1 bsl 64, -(1 bsl 64)]", want: etf.List{bigInt("18446744073709551616"), bigInt("-18446744073709551616")}},

		// The protocol.
		{name: "command", expr: "{command, <<\"data\\n\">>}", want: etf.Tuple{etf.Atom("command"), []byte("data\n")}},
		{name: "command 4k", expr: "{command, << <<(X * 7):8>> || X <- lists:seq(0, 4095) >>}", want: etf.Tuple{etf.Atom("command"), payload4k}},
		{name: "eof", expr: "eof", want: etf.Atom("eof")},
		{name: "ack", expr: "{ack, 65536}", want: etf.Tuple{etf.Atom("ack"), 65536}},
		{name: "ack 0", expr: "{ack, 0}", want: etf.Tuple{etf.Atom("ack"), 0}},
		{name: "ack 2^40", expr: "{ack, 1 bsl 40}", want: etf.Tuple{etf.Atom("ack"), 1 << 40}},
		{name: "signal", expr: "{signal, 15}", want: etf.Tuple{etf.Atom("signal"), 15}},
		{name: "stop", expr: "stop", want: etf.Atom("stop")},
		{name: "started", expr: "{started, 123456}", want: etf.Tuple{etf.Atom("started"), 123456}},
		{name: "spawn_error", expr: "{spawn_error, enoent, <<\"cannot execute /nonexistent: no such file\">>}", want: etf.Tuple{etf.Atom("spawn_error"), etf.Atom("enoent"), []byte("cannot execute /nonexistent: no such file")}},
		{name: "stdout", expr: "{stdout, <<\"hello\\n\">>}", want: etf.Tuple{etf.Atom("stdout"), []byte("hello\n")}},
		{name: "stderr", expr: "{stderr, <<>>}", want: etf.Tuple{etf.Atom("stderr"), []byte{}}},
		{name: "error", expr: "{error, stdin_closed, <<\"stdin is closed\">>}", want: etf.Tuple{etf.Atom("error"), etf.Atom("stdin_closed"), []byte("stdin is closed")}, alt: etf.Tuple{etf.Atom("error"), etf.Atom("stdin_closed"), "stdin is closed"}},
		{name: "badframe", expr: "{error, badframe, <<\"bad frame\">>}", want: etf.Tuple{etf.Atom("error"), etf.Atom("badframe"), []byte("bad frame")}},
		{name: "oom_killed", expr: "{oom_killed, 2}", want: etf.Tuple{etf.Atom("oom_killed"), 2}},
		{name: "exit status", expr: "{exit, {status, 0}}", want: etf.Tuple{etf.Atom("exit"), etf.Tuple{etf.Atom("status"), 0}}},
		{name: "exit status 255", expr: "{exit, {status, 255}}", want: etf.Tuple{etf.Atom("exit"), etf.Tuple{etf.Atom("status"), 255}}},
		{name: "exit signal", expr: "{exit, {signal, 9}}", want: etf.Tuple{etf.Atom("exit"), etf.Tuple{etf.Atom("signal"), 9}}},

		// Hand-made encodings that binary_to_term accepts.
		{name: "SMALL_ATOM_EXT", expr: "abc", hex: "83 73 03 616263", want: etf.Atom("abc")},
		{name: "SMALL_ATOM_EXT latin1", expr: "'\\x{e9}'", hex: "83 73 01 e9", want: etf.Atom("é")},
		{name: "ATOM_EXT", expr: "ok", hex: "83 64 0002 6f6b", want: etf.Atom("ok")},
		{name: "ATOM_UTF8_EXT short", expr: "ok", hex: "83 76 0002 6f6b", want: etf.Atom("ok")},
		{name: "INTEGER_EXT small", expr: "5", hex: "83 62 00000005", want: 5},
		{name: "SMALL_BIG_EXT small", expr: "5", hex: "83 6e 01 00 05", want: 5},
		{name: "SMALL_BIG_EXT empty", expr: "0", hex: "83 6e 00 00", want: 0},
		{name: "SMALL_BIG_EXT -0", expr: "0", hex: "83 6e 01 01 00", want: 0},
		{name: "SMALL_BIG_EXT high zeros", expr: "1", hex: "83 6e 04 00 01000000", want: 1},
		{name: "SMALL_BIG_EXT 2^63 high zeros", expr: "1 bsl 63", hex: "83 6e 0a 00 0000000000000080 0000", want: bigInt("9223372036854775808")},
		{name: "LARGE_BIG_EXT small", expr: "-256", hex: "83 6f 00000002 01 0001", want: -256},
		{name: "LARGE_TUPLE_EXT small", expr: "{1, 2}", hex: "83 69 00000002 6101 6102", want: etf.Tuple{1, 2}},
		{name: "LIST_EXT of bytes", expr: "[1, 2]", hex: "83 6c 00000002 6101 6102 6a", want: etf.List{1, 2}},
		{name: "LIST_EXT empty", expr: "[]", hex: "83 6c 00000000 6a", want: etf.List{}},
		{name: "LIST_EXT string tail", expr: "[1, 2, 3]", hex: "83 6c 00000001 6101 6b 0002 0203", want: etf.List{1, 2, 3}},
		{name: "LIST_EXT list tail", expr: "[a, b]", hex: "83 6c 00000001 7701 61 6c 00000001 7701 62 6a", want: etf.List{etf.Atom("a"), etf.Atom("b")}},
		{name: "STRING_EXT empty", expr: "[]", hex: "83 6b 0000", want: etf.List{}},

		// Malformed input that binary_to_term rejects too. (Decode is
		// stricter than binary_to_term, which ignores trailing bytes and
		// accepts improper lists, other sign bytes than 0 and 1, and more
		// term types; those cases are in TestMalformed.)
		{name: "wrong version", hex: "82 6a"},
		{name: "truncated tuple", hex: "83 68 02 6101"},
		{name: "huge tuple", hex: "83 69 ffffffff 6a6a6a6a6a6a6a6a6a6a"},
		{name: "huge binary", hex: "83 6d ffffffff 00"},
		{name: "latin1 atom of 256", hex: "83 64 0100 " + strings.Repeat("61", 256)},
		{name: "utf8 atom of 256", hex: "83 76 0200 " + strings.Repeat("c3a9", 256)},
		{name: "invalid utf8 atom", hex: "83 77 02 c328"},
		{name: "surrogate atom", hex: "83 77 03 eda080"},
		{name: "unknown tag", hex: "83 ff"},
	}
}

// erlProgram reads the cases from the file named on the command line,
// one {Kind, Expr, Hex} tuple per case, and prints for each a line
// "Index DefaultHex MinorVersion2Hex Result".
const erlProgram = `
try
    [File] = init:get_plain_arguments(),
    {ok, Cases} = file:consult(File),
    Hex = fun(B) -> binary:encode_hex(B) end,
    Eval = fun(Src) ->
        {ok, Toks, _} = erl_scan:string(Src ++ "."),
        {ok, Exprs} = erl_parse:parse_exprs(Toks),
        {value, V, _} = erl_eval:exprs(Exprs, []),
        V
    end,
    Check = fun(GoHex, T, Opts) ->
        try binary_to_term(binary:decode_hex(list_to_binary(GoHex)), Opts) of
            T -> <<"equal">>;
            _ -> <<"differs">>
        catch _:_ -> <<"error">>
        end
    end,
    lists:foldl(fun
        ({term, Src, GoHex}, I) ->
            T = Eval(Src),
            io:format("~b ~s ~s ~s~n", [I, Hex(term_to_binary(T)),
                Hex(term_to_binary(T, [{minor_version, 2}])), Check(GoHex, T, [safe])]),
            I + 1;
        ({decode, Src, GoHex}, I) ->
            io:format("~b - - ~s~n", [I, Check(GoHex, Eval(Src), [safe])]),
            I + 1;
        ({reject, _, GoHex}, I) ->
            io:format("~b - - ~s~n", [I, Check(GoHex, make_ref(), [])]),
            I + 1
    end, 0, Cases),
    halt(0)
catch C:R:S ->
    io:format(standard_error, "~p:~p~n~p~n", [C, R, S]),
    halt(2)
end.
`

// erlString quotes s as an Erlang string literal.
func erlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r >= 0x7f:
			fmt.Fprintf(&b, "\\x{%x}", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// TestErlang checks the codec against the Erlang runtime byte for byte.
func TestErlang(t *testing.T) {
	erl, err := exec.LookPath("erl")
	if err != nil {
		t.Fatalf("erl is not on PATH (%v): install Erlang/OTP, e.g. apt-get install erlang-base; this test needs it and is not skipped", err)
	}
	cases := erlCases()

	var file bytes.Buffer
	file.WriteString("%% -*- coding: utf-8 -*-\n")
	goBytes := make([][]byte, len(cases))
	for i, c := range cases {
		switch {
		case c.hex == "":
			b, err := etf.Encode(c.want)
			if err != nil {
				t.Errorf("%s: Encode: %v", c.name, err)
			}
			goBytes[i] = b
			fmt.Fprintf(&file, "{term, %s, %s}.\n", erlString(c.expr), erlString(hex.EncodeToString(b)))
		case c.expr == "":
			fmt.Fprintf(&file, "{reject, \"\", %s}.\n", erlString(strings.ReplaceAll(c.hex, " ", "")))
		default:
			fmt.Fprintf(&file, "{decode, %s, %s}.\n", erlString(c.expr), erlString(strings.ReplaceAll(c.hex, " ", "")))
		}
	}
	path := filepath.Join(t.TempDir(), "cases.txt")
	if err := os.WriteFile(path, file.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, erl, "-noshell", "-noinput", "-eval", erlProgram, "-extra", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", erl, err, stderr.Bytes())
	}

	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<22)
	n := 0
	for sc.Scan() {
		var idx int
		var dflt, v2, result string
		if _, err := fmt.Sscan(sc.Text(), &idx, &dflt, &v2, &result); err != nil || idx != n || idx >= len(cases) {
			t.Fatalf("unexpected erl output line %d: %.200q (%v)", n, sc.Text(), err)
		}
		n++
		c := cases[idx]
		t.Run(c.name, func(t *testing.T) {
			checkErlCase(t, c, goBytes[idx], dflt, v2, result)
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(cases) {
		t.Fatalf("erl printed %d results for %d cases; stderr:\n%s", n, len(cases), stderr.Bytes())
	}
}

func checkErlCase(t *testing.T, c erlCase, goBytes []byte, dfltHex, v2Hex, result string) {
	switch {
	case c.hex == "":
		dflt, v2 := unhex(t, dfltHex), unhex(t, v2Hex)
		for _, in := range []struct {
			name string
			b    []byte
		}{{"default", dflt}, {"minor_version 2", v2}} {
			got, err := etf.Decode(in.b)
			if err != nil {
				t.Errorf("Decode(term_to_binary %s: %.100x): %v", in.name, in.b, err)
			} else if !equal(got, c.want) {
				t.Errorf("Decode(term_to_binary %s: %.100x) = %.200v, want %.200v", in.name, in.b, got, c.want)
			}
		}
		if !bytes.Equal(goBytes, v2) {
			t.Errorf("Encode(%.200v) =\n%.300x, term_to_binary(%s, [{minor_version, 2}]) =\n%.300x", c.want, goBytes, c.expr, v2)
		}
		if result != "equal" {
			t.Errorf("erl: binary_to_term(Encode(%.200v), [safe]) =:= %s: %s", c.want, c.expr, result)
		}
		if c.alt != nil {
			b, err := etf.Encode(c.alt)
			if err != nil || !bytes.Equal(b, v2) {
				t.Errorf("Encode(%#v) = %x, %v; want %x", c.alt, b, err, v2)
			}
		}
	case c.expr == "":
		if result != "error" {
			t.Errorf("erl: binary_to_term(%s): %s, want error", c.hex, result)
		}
		if got, err := etf.Decode(unhex(t, c.hex)); err == nil {
			t.Errorf("Decode(%s) = %v, want an error", c.hex, got)
		}
	default:
		if result != "equal" {
			t.Errorf("erl: binary_to_term(%s, [safe]) =:= %s: %s", c.hex, c.expr, result)
		}
		got, err := etf.Decode(unhex(t, c.hex))
		if err != nil || !equal(got, c.want) {
			t.Errorf("Decode(%s) = %v, %v; want %v", c.hex, got, err, c.want)
		}
	}
}
