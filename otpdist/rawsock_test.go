package otpdist

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestTickConnRawSocket: over a plain TCP socket a tickConn reads and
// writes with raw system calls and behaves as net.Conn does: all of a
// write arrives, a read past the tick time fails with the deadline's
// error, and the peer's close reads as io.EOF.
func TestTickConnRawSocket(t *testing.T) {
	ours, peer := tcpPair(t)
	c := newTickConn(ours, 300*time.Millisecond)
	if c.raw == nil {
		t.Fatal("no raw socket under a TCP connection")
	}
	big := bytes.Repeat([]byte("0123456789"), 400_000) // more than a socket buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(big))
	}

	p := make([]byte, 16)
	start := time.Now()
	if _, err := c.Read(p); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read of a silent peer: %v, want the deadline's error", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("a read of a silent peer failed after %v, before the tick time", d)
	}

	c = newTickConn(ours, time.Minute)
	peer.Write([]byte("hello"))
	if n, err := c.Read(p); n != 5 || err != nil || string(p[:n]) != "hello" {
		t.Fatalf("Read = %d %q, %v", n, p[:n], err)
	}
	peer.Close()
	if n, err := c.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("after the peer's close: %d, %v; want 0, io.EOF", n, err)
	}
}
