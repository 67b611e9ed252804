package blackbox

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// Stdin credit (docs/protocol.md, "Stdin credit"): an owner that keeps at
// most half the stdin limit unconfirmed streams any amount through a child
// that reads slowly, where sending without credit meets stdin_overflow.

const (
	ackTotal    = 8 << 20  // bytes streamed
	ackChunk    = 64 << 10 // per command
	ackLimit    = 1 << 20  // --stdin-limit / {stdin_limit, _}
	ackInFlight = ackLimit / 2
)

// feedWithCredit sends ackTotal bytes in ackChunk commands, never more than
// ackInFlight unconfirmed, taking the credit from next (which returns the
// n of each {stdin_written, n}; anything else fails the test), then eof.
func feedWithCredit(t *testing.T, command func([]byte), eof func(), next func() int64) {
	t.Helper()
	chunk := bytes.Repeat([]byte("z"), ackChunk)
	var sent, written int64
	for sent < ackTotal {
		for sent-written+ackChunk > ackInFlight {
			written += next()
		}
		command(chunk)
		sent += ackChunk
	}
	eof()
	for written < ackTotal {
		written += next()
	}
	if written != ackTotal {
		t.Errorf("stdin_written notices sum to %d, want %d", written, ackTotal)
	}
}

func TestPacketStdinAckStreamsPastTheLimit(t *testing.T) {
	p := startPort(t, "--packet", "--stdin-ack", "--stdin-limit", strconv.Itoa(ackLimit),
		"--", "sh", "-c", "sleep 0.5; wc -c")
	p.started()
	notices := 0
	feedWithCredit(t,
		func(b []byte) { p.send(etf.Tuple{atom("command"), b}) },
		func() { p.send(atom("eof")) },
		func() int64 {
			f := p.next(20 * time.Second)
			tu, ok := etf.MatchTuple(f, "stdin_written", 2)
			if !ok {
				t.Fatalf("want {stdin_written, N}, got %v", f)
			}
			notices++
			return tu[1].(int64)
		})
	o := p.collect(true, 20*time.Second)
	if got := strings.TrimSpace(string(o.stdout)); got != strconv.Itoa(ackTotal) || o.exit.(etf.Tuple)[1] != int64(0) || len(o.others) != 0 {
		t.Errorf("wc -c said %q, exit %v, other frames %v; want %d, status 0, none", got, o.exit, o.others, ackTotal)
	}
	if notices > ackTotal/ackChunk+1 {
		t.Errorf("%d stdin_written notices for %d commands: want at most one per command", notices, ackTotal/ackChunk)
	}
	if code := p.exitCode(5 * time.Second); code != 0 {
		t.Errorf("ps_port exit %d", code)
	}
}

// Without --stdin-ack nothing changes: no stdin_written frame.
func TestPacketNoStdinAckByDefault(t *testing.T) {
	p := startPort(t, "--packet", "--", "cat")
	p.started()
	p.send(etf.Tuple{atom("command"), []byte("hello")})
	p.send(atom("eof"))
	o := p.collect(true, 10*time.Second)
	if string(o.stdout) != "hello" || len(o.others) != 0 {
		t.Errorf("stdout %q, other frames %v: want hello and none", o.stdout, o.others)
	}
}

func TestSharedStdinAckStreamsPastTheLimit(t *testing.T) {
	sp := startShared(t)
	const id = 7
	sp.open(id, "sh", []string{"-c", "sleep 0.5; wc -c"},
		etf.Tuple{atom("stdin_ack"), atom("true")}, etf.Tuple{atom("stdin_limit"), int64(ackLimit)})
	sp.open(id+1, "cat", nil, etf.Tuple{atom("stdin_ack"), int64(1)})
	sp.started(id)
	feedWithCredit(t,
		func(b []byte) { sp.sendTerm(etf.Tuple{atom("command"), int64(id), b}) },
		func() { sp.sendTerm(etf.Tuple{atom("eof"), int64(id)}) },
		func() int64 {
			f := sp.next(id, 20*time.Second)
			if len(f) != 3 || f[0] != atom("stdin_written") {
				t.Fatalf("want {stdin_written, %d, N}, got %v", id, f)
			}
			return f[2].(int64)
		})
	o := sp.collect(id, true, 20*time.Second)
	if got := strings.TrimSpace(string(o.stdout)); got != strconv.Itoa(ackTotal) || len(o.others) != 0 {
		t.Errorf("wc -c said %q, other frames %v; want %d and none", got, o.others, ackTotal)
	}
	f := sp.next(id+1, 10*time.Second)
	if len(f) != 4 || f[0] != atom("spawn_error") || f[2] != atom("badarg") ||
		!strings.Contains(string(f[3].([]byte)), "option stdin_ack: want true or false") {
		t.Errorf("{stdin_ack, 1}: got %v, want {spawn_error, %d, badarg, \"option stdin_ack: want true or false ...\"}", f, id+1)
	}
}

// --stdin-ack is for --packet: raw mode has no frame for it, and --shared
// takes it per child ({stdin_ack, true}); both are usage errors that say so.
func TestStdinAckFlagUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--stdin-ack", "--", "true"}, "--stdin-ack needs --packet"},
		{[]string{"--shared", "--stdin-ack"}, "--stdin-ack is per child"},
	} {
		p := startPort(t, c.args...)
		if code := p.exitCode(10 * time.Second); code != 2 || !strings.Contains(p.stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 (usage) and %q", c.args, code, p.stderr, c.want)
		}
	}
}
