package port

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
	"golang.org/x/sys/unix"
)

// Many children stream at once through one shared port whose pipe is one
// page, so their frames wait for room all the time, and the owner never
// sends a frame after the opens: each child's output stays below half its
// window, the shim's ack threshold, so no ack ever lets a waiting frame
// through. Every byte must still arrive, in order, with every exit: a
// frame that waits for room must not wait for an ack that never comes.
func TestSharedRoomWithoutAcks(t *testing.T) {
	const children, each = 32, 20000
	inR, inW := pollPipe(t)
	outR, outW := pollPipe(t)
	c := NewConn(inR, outW)
	if _, err := unix.FcntlInt(uintptr(c.wfd), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatalf("shrinking the port's pipe: %v", err)
	}
	served := make(chan int, 1)
	go func() { served <- ServeShared(c, SharedConfig{Window: 64 << 10}, nil) }()

	send := func(term etf.Term) {
		b, err := etf.Encode(term)
		if err != nil {
			t.Fatal(err)
		}
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
		if _, err := inW.Write(append(frame, b...)); err != nil {
			t.Fatal(err)
		}
	}
	want := make(map[int64][]byte)
	for id := int64(1); id <= children; id++ {
		line := fmt.Sprintf("child %d says hello\n", id)
		want[id] = []byte(strings.Repeat(line, each/len(line)+1)[:each])
		script := fmt.Sprintf("yes 'child %d says hello' | head -c %d", id, each)
		send(etf.Tuple{etf.Atom("open"), id, etf.List{
			etf.Tuple{etf.Atom("program"), []byte("/bin/sh")},
			etf.Tuple{etf.Atom("args"), etf.List{[]byte("-c"), []byte(script)}},
		}})
	}

	type result struct {
		out   map[int64]*bytes.Buffer
		exits int
		err   error
	}
	done := make(chan result, 1)
	go func() {
		res := result{out: make(map[int64]*bytes.Buffer)}
		var lenBuf [4]byte
		for res.exits < children {
			if _, err := io.ReadFull(outR, lenBuf[:]); err != nil {
				res.err = err
				break
			}
			b := make([]byte, binary.BigEndian.Uint32(lenBuf[:]))
			if _, err := io.ReadFull(outR, b); err != nil {
				res.err = err
				break
			}
			term, err := etf.Decode(b)
			if err != nil {
				res.err = err
				break
			}
			tu, _ := term.(etf.Tuple)
			if len(tu) < 3 {
				res.err = fmt.Errorf("unexpected frame %v", term)
				break
			}
			id, _ := tu[1].(int64)
			switch tu[0] {
			case etf.Atom("stdout"):
				if res.out[id] == nil {
					res.out[id] = new(bytes.Buffer)
				}
				res.out[id].Write(tu[2].([]byte))
			case etf.Atom("exit"):
				res.exits++
			case etf.Atom("started"):
			default:
				res.err = fmt.Errorf("unexpected frame %v", term)
			}
		}
		done <- res
	}()

	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("reading the port: %v", res.err)
		}
		for id, w := range want {
			got := res.out[id]
			if got == nil || !bytes.Equal(got.Bytes(), w) {
				n := 0
				if got != nil {
					n = got.Len()
				}
				t.Errorf("child %d: %d bytes arrived, not its %d bytes in order", id, n, len(w))
			}
		}
	case <-time.After(60 * time.Second):
		t.Fatal("not every child's output and exit arrived within 60 s: frames waiting for room were never let through")
	}
	inW.Close()
	select {
	case code := <-served:
		if code != ExitOK {
			t.Errorf("ServeShared returned %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeShared did not return after the port closed")
	}
}

// A frame waits for room for all of it, but one larger than half the pipe
// (a 1 MiB window makes frames as large as the 1 MiB pipe) only for half:
// waiting for an empty pipe left it idle between frames (1 MiB window,
// one child: 0.55x of a plain Port against 0.70x).
func TestRoomNeedIsAtMostHalfThePipe(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
		t.Fatal(err)
	}
	r := newRoomWait(p[1])
	if r == nil || r.size != 1<<20 {
		t.Fatalf("newRoomWait on a 1 MiB pipe: %+v", r)
	}
	for _, c := range []struct{ n, want int }{
		{100, 100 + frameHeader},
		{256 << 10, 256<<10 + frameHeader},
		{512 << 10, 512 << 10},
		{1 << 20, 512 << 10},
		{4 << 20, 512 << 10},
	} {
		if got := r.need(c.n); got != c.want {
			t.Errorf("need(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
