package otpdist

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/protonstream/ps_port/etf"
)

// etfCorpus is etf's fuzz corpus (etf/testdata/fuzz/FuzzDecode): whole
// terms with their 131, valid and malformed.
func etfCorpus(t testing.TB) [][]byte {
	files, err := filepath.Glob("../etf/testdata/fuzz/FuzzDecode/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("etf's fuzz corpus: %v (%d files)", err, len(files))
	}
	var out [][]byte
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(text)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
			!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			t.Fatalf("%s: not a corpus entry of one []byte", f)
		}
		b, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, []byte(b))
	}
	return out
}

// FuzzSkipTerm checks the walker on etf's corpus (and what the fuzzer
// makes of it) against etf's decoder: it never panics, never claims more
// bytes than it has, and every whole term etf decodes it skips to the end,
// finding it short when cut.
func FuzzSkipTerm(f *testing.F) {
	for _, b := range etfCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n, elems, err := walkCount(in, 1, nil)
		if err == nil && (n <= 0 || n > len(in)) {
			t.Fatalf("walkCount(% x) = %d bytes, %d elements, nil", in, n, elems)
		}
		if len(in) == 0 || in[0] != etf.VersionMagic {
			return
		}
		if _, err := etf.Decode(in); err != nil {
			return
		}
		body := in[1:]
		if n, err := skipTerm(body); n != len(body) || err != nil {
			t.Fatalf("etf decodes % x, but skipTerm of its body = %d, %v; want %d", in, n, err, len(body))
		}
		var refs []span
		if n, err := walkTerms(body, 1, &refs); n != len(body) || err != nil {
			t.Fatalf("walkTerms(% x) = %d, %v", body, n, err)
		}
		for _, r := range refs {
			if r.start < 0 || r.end > len(body) || body[r.start] != etf.TagNewerReference {
				t.Fatalf("walkTerms(% x) found a reference at %v", body, r)
			}
		}
		if k := len(body) / 2; k > 0 {
			if n, err := skipTerm(body[:k]); err != errShort {
				t.Fatalf("% x cut at %d: skipTerm = %d, %v; want errShort", body, k, n, err)
			}
		}
		if !bytes.Equal(in[1:], body) {
			t.Fatal("the walker changed its input")
		}
	})
}
