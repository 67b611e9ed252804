package otpdist

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair is a connected loopback TCP pair: ours (written to through a
// tickConn and a distConn, as a node does) and the peer's end.
func tcpPair(t *testing.T) (ours, peer net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	ours, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer = <-acc
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { ours.Close(); peer.Close() })
	return ours, peer
}

// filledPipe is a pipe (read end non-blocking) holding data.
func filledPipe(t *testing.T, data []byte) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, max(len(data), 4096)); err != nil {
		t.Fatalf("F_SETPIPE_SZ %d: %v", len(data), err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(int(r.Fd()), true); err != nil {
		t.Fatal(err)
	}
	return r
}

func pipeHolds(t *testing.T, f *os.File) int {
	t.Helper()
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// movedPacket is a pass-through packet whose message ends with data, and
// the head MoveDirect is given for it.
func movedPacket(data []byte) (head, whole []byte) {
	ctl := tuple(small(opSend), atomBytes(""), peerPid)
	prefix := append([]byte{passThrough, versionMagic}, ctl...)
	prefix = append(prefix, versionMagic, 104, 2)
	prefix = append(prefix, ourPid...)
	prefix = append(prefix, 104, 2)
	prefix = append(prefix, atomBytes("data")...)
	prefix = append(prefix, 109)
	prefix = binary.BigEndian.AppendUint32(prefix, uint32(len(data)))
	head = binary.BigEndian.AppendUint32(nil, uint32(len(prefix)+len(data)))
	head = append(head, prefix...)
	return head, append(append([]byte(nil), head...), data...)
}

// TestMoveDirectSplicesAPacket: the bytes go from the pipe into the socket
// behind their head, the pipe is left empty, and ergo's next packet follows
// them on the stream unharmed. 1 MiB is more than the socket takes at once
// while the peer reads slowly, so the move waits for room too.
func TestMoveDirectSplicesAPacket(t *testing.T) {
	for _, size := range []int{100, 60000, 1 << 20} {
		ours, peer := tcpPair(t)
		dc := newDistConn(newTickConn(ours, time.Minute), true, nil)
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
		pipe := filledPipe(t, data)
		head, whole := movedPacket(data)
		ergo := ergoPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(ourPid, atomBytes("closed")))
		want := append(whole, otpPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(ourPid, atomBytes("closed")))...)

		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, len(want))
			for off := 0; off < len(b); {
				time.Sleep(time.Millisecond) // a slow reader
				k, err := peer.Read(b[off:min(len(b), off+64<<10)])
				if err != nil {
					break
				}
				off += k
			}
			got <- b
		}()
		moved, err := dc.MoveDirect(head, int(pipe.Fd()), len(data))
		if !moved || err != nil {
			t.Fatalf("%d bytes: MoveDirect = %v, %v; want true, nil", size, moved, err)
		}
		if n := pipeHolds(t, pipe); n != 0 {
			t.Errorf("%d bytes: the pipe still holds %d bytes", size, n)
		}
		if _, err := dc.Write(ergo); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if !bytes.Equal(b, want) {
				t.Fatalf("%d bytes: the peer read a different stream (%d bytes, want %d)", size, len(b), len(want))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d bytes: the peer did not get the packets within 30 s", size)
		}
	}
}

// TestMoveDirectDeclines: in the middle of one of ergo's packets, or on a
// connection that is not a socket (TLS), MoveDirect consumes nothing and
// says so; the caller then sends a copy with writeDirect, which waits for
// the packet boundary.
func TestMoveDirectDeclines(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 5000)
	head, _ := movedPacket(data)

	ours, peer := tcpPair(t)
	dc := newDistConn(newTickConn(ours, time.Minute), true, nil)
	ergo := ergoPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(ourPid, binBytes(data)))
	if _, err := dc.Write(ergo[:3000]); err != nil {
		t.Fatal(err)
	}
	pipe := filledPipe(t, data)
	if moved, err := dc.MoveDirect(head, int(pipe.Fd()), len(data)); moved || err != nil {
		t.Fatalf("in the middle of a packet: MoveDirect = %v, %v; want false, nil", moved, err)
	}
	if n := pipeHolds(t, pipe); n != len(data) {
		t.Fatalf("the pipe holds %d bytes after a declined move, want %d", n, len(data))
	}
	if _, err := dc.Write(ergo[3000:]); err != nil {
		t.Fatal(err)
	}
	want := otpPacket(tuple(small(opSend), atomBytes(""), peerPid), tuple(ourPid, binBytes(data)))
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, len(want))
	if _, err := io.ReadFull(peer, b); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("ergo's packet around the declined move: %v", err)
	}

	f := newFakeConn()
	fc := newDistConn(newTickConn(f, time.Minute), true, nil)
	if moved, err := fc.MoveDirect(head, int(pipe.Fd()), len(data)); moved || err != nil {
		t.Fatalf("not a socket: MoveDirect = %v, %v; want false, nil", moved, err)
	}
	if n := pipeHolds(t, pipe); n != len(data) {
		t.Fatalf("the pipe holds %d bytes after a declined move, want %d", n, len(data))
	}
}
