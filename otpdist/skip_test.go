package otpdist

import (
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
)

// erlTerms has the BEAM encode one term of every kind the external term
// format has (and nestings of them), and returns them without their 131.
func erlTerms(t *testing.T) [][]byte {
	t.Helper()
	const expr = `
Self = self(), Ref = make_ref(), Alias = alias(), [Port | _] = erlang:ports(),
Big = 1 bsl 300, Huge = 1 bsl 2100,
Terms = [0, 255, 256, -1, 1 bsl 31, -(1 bsl 40), Big, -Huge, 3.25, -0.0,
  a, 'αβγ', list_to_atom(lists:duplicate(255, $x)), '', "abc", [], [1,2|3],
  lists:seq(1, 300), <<>>, <<1,2,3>>, <<1:3>>, <<7, 3:5>>, {}, {a, {b, {c}}},
  list_to_tuple(lists:seq(1, 300)), #{}, #{a => 1, {b} => [c], <<"k">> => #{x => y}},
  Self, Ref, Alias, Port, fun lists:map/2, fun(X) -> {X, Self} end,
  {Self, [alias | Alias], {open, <<"cat">>, [], [], Self}},
  [{Ref, Port}, #{Self => Alias}, binary:copy(<<"z">>, 70000)]],
[io:format("~s~n", [binary:encode_hex(term_to_binary(T))]) || T <- Terms],
halt().`
	out, err := exec.Command("erl", "-noshell", "-eval", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("erl (the node tests need Erlang/OTP on PATH): %v\n%s", err, out)
	}
	var terms [][]byte
	for _, l := range strings.Fields(string(out)) {
		b, err := hex.DecodeString(l)
		if err != nil || len(b) < 2 || b[0] != 131 {
			t.Fatalf("erl printed %q", l)
		}
		terms = append(terms, b[1:])
	}
	if len(terms) < 30 {
		t.Fatalf("only %d terms from erl:\n%s", len(terms), out)
	}
	return terms
}

func TestWalkTermsOnErlangTerms(t *testing.T) {
	for i, b := range erlTerms(t) {
		n, err := skipTerm(b)
		if err != nil || n != len(b) {
			t.Fatalf("term %d (% x...): skipTerm = %d, %v; want %d", i, b[:min(len(b), 16)], n, err, len(b))
		}
		// With something after it, only the term is taken.
		n, err = skipTerm(append(append([]byte(nil), b...), 97, 1))
		if err != nil || n != len(b) {
			t.Fatalf("term %d followed by more: skipTerm = %d, %v", i, n, err)
		}
		// Every cut short is errShort, never a panic or a wrong length.
		for k := 0; k < len(b); k += 1 + k/64 {
			if n, err := skipTerm(b[:k]); err != errShort {
				t.Fatalf("term %d cut at %d of %d: skipTerm = %d, %v; want errShort", i, k, len(b), n, err)
			}
		}
	}
}

func TestWalkTermsFindsReferences(t *testing.T) {
	ref5 := longRef("peer@h", 7, 5)
	ref3 := longRef("peer@h", 7, 3)
	// {19, Pid, Ref5, [Ref3 | x]}
	b := []byte{104, 4, 97, 19}
	b = append(b, pidBytes("peer@h", 1)...)
	at5 := len(b)
	b = append(b, ref5...)
	b = append(b, 108, 0, 0, 0, 1)
	at3 := len(b)
	b = append(b, ref3...)
	b = append(b, 119, 1, 'x')
	var refs []span
	n, err := walkTerms(b, 1, &refs)
	if err != nil || n != len(b) {
		t.Fatalf("walkTerms = %d, %v", n, err)
	}
	want := []span{{at5, at5 + len(ref5)}, {at3, at3 + len(ref3)}}
	if len(refs) != 2 || refs[0] != want[0] || refs[1] != want[1] {
		t.Fatalf("refs %v, want %v", refs, want)
	}
}

func TestWalkTermsRefusesMalformed(t *testing.T) {
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"unknown tag", []byte{1}},
		{"atom cache reference", []byte{82, 0}},
		{"pid with a non-atom node", []byte{88, 97, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"fun size below 4", []byte{112, 0, 0, 0, 2}},
	} {
		if _, err := skipTerm(c.b); err == nil || err == errShort {
			t.Errorf("%s: skipTerm = %v, want a malformed-term error", c.name, err)
		}
	}
	// A tuple claiming more elements than bytes: short, not a huge loop.
	if _, err := skipTerm([]byte{105, 255, 255, 255, 255, 106}); err != errShort {
		t.Errorf("huge tuple: %v", err)
	}
}

func FuzzWalkTerms(f *testing.F) {
	f.Add([]byte{104, 2, 97, 1, 106})
	f.Add(append([]byte{104, 2}, append(longRef("a@b", 1, 5), pidBytes("a@b", 2)...)...))
	f.Add([]byte{108, 0, 0, 0, 2, 97, 1, 97, 2, 106})
	f.Add([]byte{116, 0, 0, 0, 1, 119, 1, 'k', 109, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var refs []span
		n, err := walkTerms(b, 1, &refs)
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		if m, err := skipTerm(b[:n]); m != n || err != nil {
			t.Fatalf("the term alone: %d, %v; want %d", m, err, n)
		}
		for _, r := range refs {
			if r.start < 0 || r.end > n || r.start >= r.end || b[r.start] != 90 {
				t.Fatalf("bad ref span %v", r)
			}
		}
		if _, err := skipTerm(b[:n-1]); err != errShort {
			t.Fatalf("the term cut by one byte: %v, want errShort", err)
		}
	})
}
