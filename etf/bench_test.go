package etf_test

import (
	"testing"

	"github.com/protonstream/ps_port/etf"
)

func BenchmarkAppendBinaryTupleHeader(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = etf.AppendBinaryTupleHeader(buf[:0], "stdout", 65536)
	}
}

func BenchmarkAppendTermExit(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64)
	var term etf.Term = etf.Tuple{etf.Atom("exit"), etf.Tuple{etf.Atom("status"), 0}}
	for b.Loop() {
		var err error
		if buf, err = etf.AppendTerm(buf[:0], term); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkDecode(b *testing.B, term etf.Term) {
	in, err := etf.Encode(term)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := etf.Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAck(b *testing.B) {
	benchmarkDecode(b, etf.Tuple{etf.Atom("ack"), 65536})
}

func BenchmarkDecodeCommand4K(b *testing.B) {
	benchmarkDecode(b, etf.Tuple{etf.Atom("command"), make([]byte, 4096)})
}
