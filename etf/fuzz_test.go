package etf_test

import (
	"bytes"
	"testing"

	"github.com/protonstream/ps_port/etf"
)

// FuzzDecode checks that Decode never panics, and that whatever it
// accepts re-encodes to bytes that decode to an equal term and are a
// fixed point of decoding and encoding.
//
// The seed corpus in testdata/fuzz/FuzzDecode holds the vectors of
// TestErlang and TestMalformed.
func FuzzDecode(f *testing.F) {
	for _, b := range validVectors(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		term, err := etf.Decode(in)
		if err != nil {
			if term != nil {
				t.Fatalf("Decode returned %v with error %v", term, err)
			}
			return
		}
		enc, err := etf.Encode(term)
		if err != nil {
			t.Fatalf("Encode(Decode(% x)): %v", in, err)
		}
		again, err := etf.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(% x))) = Decode(% x): %v", in, enc, err)
		}
		if !equal(again, term) {
			t.Fatalf("Decode(% x) = %#v, but after re-encoding as % x it is %#v", in, term, enc, again)
		}
		enc2, err := etf.Encode(again)
		if err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not canonical: % x, then % x (%v)", enc, enc2, err)
		}
	})
}
