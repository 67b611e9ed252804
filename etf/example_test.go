package etf_test

import (
	"fmt"

	"github.com/protonstream/ps_port/etf"
)

func ExampleDecode() {
	// {ack, 65536}, as term_to_binary/1 writes it.
	frame := []byte{131, 104, 2, 100, 0, 3, 'a', 'c', 'k', 98, 0, 1, 0, 0}
	t, err := etf.Decode(frame)
	if err != nil {
		fmt.Println(err)
		return
	}
	if msg, ok := etf.MatchTuple(t, "ack", 2); ok {
		n, _ := msg[1].(int64)
		fmt.Println("ack", n)
	}
	// Output: ack 65536
}

func ExampleAppendBinaryTupleHeader() {
	payload := []byte("hi\n")
	hdr := etf.AppendBinaryTupleHeader(nil, "stdout", len(payload))
	fmt.Println(hdr, payload)
	// Output: [131 104 2 119 6 115 116 100 111 117 116 109 0 0 0 3] [104 105 10]
}
