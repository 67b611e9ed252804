package port

import (
	"io"
	"os"
	"testing"

	"github.com/protonstream/ps_port/etf"
)

// FuzzSharedFrames feeds ps_port --shared arbitrary frames (every tag but
// open, which would start programs): none may panic the port, which would
// take every child down with it. Each must be answered or ignored.
func FuzzSharedFrames(f *testing.F) {
	for _, t := range []etf.Term{
		etf.Tuple{etf.Atom("command"), int64(1), []byte("x")},
		etf.Tuple{etf.Atom("ack"), int64(2), int64(5)},
		etf.Tuple{etf.Atom("signal"), int64(3), int64(9)},
		etf.Tuple{etf.Atom("eof"), int64(4)},
		etf.Tuple{etf.Atom("stop"), int64(5)},
		etf.Tuple{etf.Atom("environ"), etf.List{etf.Tuple{[]byte("A"), []byte("b")}}},
		etf.Tuple{etf.Atom("ack")},
		etf.Atom("stop"),
	} {
		b, _ := etf.Encode(t)
		f.Add(b)
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Fatal(err)
	}
	go io.Copy(io.Discard, r)
	sv := &shared{c: NewConn(nil, w), cfg: SharedConfig{Logf: func(string, ...any) {}}, live: map[int32]*entry{}}
	sv.ended.add(2) // an ended child: its frames are ignored
	f.Fuzz(func(t *testing.T, frame []byte) {
		if term, err := etf.Decode(frame); err == nil {
			if tu, ok := term.(etf.Tuple); ok && len(tu) > 0 && tu[0] == etf.Atom("open") {
				return
			}
		}
		sv.apply(frame)
	})
}
