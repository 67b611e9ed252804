package port

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
	"golang.org/x/sys/unix"
)

// pollPipe returns a pipe whose ends are in Go's poller, as PortFiles makes
// ps_port's standard input and output.
func pollPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// A Conn on non-blocking pipes reads frames however they are cut (one byte
// at a time, or several frames in one write), and writes a frame larger
// than the port's pipe whole while the owner reads slowly: a full port
// parks the writer in the poller, it never gets EAGAIN as an error.
func TestConnPolledPipes(t *testing.T) {
	inR, inW := pollPipe(t)
	outR, outW := pollPipe(t)
	c := NewConn(inR, outW)
	if !c.polled {
		t.Fatal("a Conn on an os.Pipe should wait for the port in Go's poller")
	}

	var frames []byte
	for i, n := range []int{0, 1, 100, 70 << 10} {
		frame := bytes.Repeat([]byte{byte('a' + i)}, n)
		frames = binary.BigEndian.AppendUint32(frames, uint32(n))
		frames = append(frames, frame...)
	}
	go func() {
		inW.Write(frames[:3]) // inside the first length prefix
		time.Sleep(10 * time.Millisecond)
		for _, b := range frames[3:20] { // byte by byte
			inW.Write([]byte{b})
		}
		inW.Write(frames[20:]) // the rest at once, over bufio's buffer
		inW.Close()
	}()
	for i, n := range []int{0, 1, 100, 70 << 10} {
		got, err := c.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := bytes.Repeat([]byte{byte('a' + i)}, n); !bytes.Equal(got, want) {
			t.Fatalf("frame %d: got %d bytes, want %d of %q", i, len(got), n, rune('a'+i))
		}
	}
	if _, err := c.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}

	// 3 MiB: more than the port's pipe (1 MiB at most) holds.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3<<16)
	sent := make(chan error, 1)
	go func() { sent <- c.SendBinary("stdout", payload) }()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for got.Len() < 4 || got.Len() < 4+int(binary.BigEndian.Uint32(got.Bytes())) {
		outR.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := outR.Read(buf)
		if err != nil {
			t.Fatalf("reading the port after %d bytes: %v", got.Len(), err)
		}
		got.Write(buf[:n])
	}
	if err := <-sent; err != nil {
		t.Fatalf("SendBinary: %v", err)
	}
	frame := got.Bytes()
	if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
		t.Fatalf("length prefix %d, frame of %d bytes", n, len(frame)-4)
	}
	term, err := etf.Decode(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	tu, ok := term.(etf.Tuple)
	if !ok || len(tu) != 2 || tu[0] != etf.Atom("stdout") || !bytes.Equal(tu[1].([]byte), payload) {
		t.Fatalf("got a frame that is not {stdout, payload}")
	}
}

// unclosed holds files whose descriptor another *os.File owns.
var unclosed []*os.File

// PortFiles switches a pipe to non-blocking mode and leaves anything else
// (here a regular file) as it is.
func TestPollableOnlyPipes(t *testing.T) {
	// A pipe as the BEAM hands it over: blocking, in no poller.
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	fd := fds[0]
	r := os.NewFile(uintptr(fd), "stdin")
	p := pollable(r)
	// p owns the descriptor now (as PortFiles' files do in ps_port): r is
	// kept reachable so that its finalizer never closes it a second time.
	unclosed = append(unclosed, r)
	defer p.Close()
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("pollable left a pipe in blocking mode")
	}
	if p.SetReadDeadline(time.Time{}) != nil {
		t.Fatal("pollable's pipe is not in Go's poller")
	}

	f, err := os.CreateTemp(t.TempDir(), "port")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ffd := int(f.Fd())
	if pollable(f) != f {
		t.Fatal("pollable opened a regular file again")
	}
	if fl, _ := unix.FcntlInt(uintptr(ffd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Fatal("pollable made a regular file non-blocking")
	}
}

// move sends what waits in a child's pipe as one {stdout, Id, Bytes}
// frame, copied with one writev when small, spliced when large.
func TestConnMoveSmallAndLarge(t *testing.T) {
	outR, outW := pollPipe(t)
	c := NewConn(nil, outW)
	for _, n := range []int{1, 100, smallMove, smallMove + 1, 600 << 10} {
		childR, childW := pollPipe(t)
		unix.FcntlInt(childW.Fd(), unix.F_SETPIPE_SZ, 1<<20)
		payload := bytes.Repeat([]byte{byte(n)}, n)
		if _, err := childW.Write(payload); err != nil {
			t.Fatal(err)
		}
		sent := make(chan error, 1)
		rc, _ := childR.SyscallConn()
		go rc.Control(func(fd uintptr) { sent <- c.move("stdout", 7, int(fd), n) })
		var got bytes.Buffer
		buf := make([]byte, 64<<10)
		for got.Len() < 4 || got.Len() < 4+int(binary.BigEndian.Uint32(got.Bytes())) {
			outR.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, err := outR.Read(buf)
			if err != nil {
				t.Fatalf("%d bytes: reading the port: %v", n, err)
			}
			got.Write(buf[:k])
		}
		if err := <-sent; err != nil {
			t.Fatalf("%d bytes: move: %v", n, err)
		}
		term, err := etf.Decode(got.Bytes()[4:])
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		tu, ok := term.(etf.Tuple)
		if !ok || len(tu) != 3 || tu[0] != etf.Atom("stdout") || tu[1] != int64(7) || !bytes.Equal(tu[2].([]byte), payload) {
			t.Fatalf("%d bytes: got a frame that is not {stdout, 7, payload}", n)
		}
		if k, _ := unix.IoctlGetInt(int(childR.Fd()), unix.TIOCINQ); k != 0 {
			t.Fatalf("%d bytes: %d left in the child's pipe", n, k)
		}
	}
}
