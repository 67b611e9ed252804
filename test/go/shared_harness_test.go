package blackbox

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

// sharedPort is one ps_port --shared, its frames sorted by child id.
type sharedPort struct {
	*portProc
	mu     sync.Mutex
	queues map[int64]*frameQueue
	noID   *frameQueue // frames that carry no id ({error, badframe, _})
	wmu    sync.Mutex  // one frame at a time on ps_port's stdin
}

// frameQueue is an unbounded queue of one child's frames, so the test never
// stops reading ps_port's stdout because one child's frames are not
// consumed (which would stall every child: a BEAM port always reads).
type frameQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	frames []etf.Tuple
	closed bool
}

func newFrameQueue() *frameQueue {
	q := &frameQueue{}
	q.cond.L = &q.mu
	return q
}

func (q *frameQueue) push(t etf.Tuple) {
	q.mu.Lock()
	q.frames = append(q.frames, t)
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *frameQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// pop returns the next frame, or nil when the port closed or timeout passed.
func (q *frameQueue) pop(timeout time.Duration) etf.Tuple {
	timer := time.AfterFunc(timeout, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.frames) == 0 && !q.closed && time.Now().Before(deadline) {
		q.cond.Wait()
	}
	if len(q.frames) == 0 {
		return nil
	}
	t := q.frames[0]
	q.frames = q.frames[1:]
	return t
}

// startShared starts ps_port --shared with extra flags.
func startShared(t *testing.T, args ...string) *sharedPort {
	t.Helper()
	sp := &sharedPort{portProc: startPort(t, append([]string{"--shared"}, args...)...),
		queues: make(map[int64]*frameQueue), noID: newFrameQueue()}
	go sp.demux()
	return sp
}

// demux sorts frames by id: the second element of every frame that has one.
func (sp *sharedPort) demux() {
	for f := range sp.frames {
		tu, ok := f.(etf.Tuple)
		if !ok || len(tu) < 2 {
			sp.t.Errorf("frame without a tuple: %v", f)
			continue
		}
		if id, ok := tu[1].(int64); ok {
			sp.queue(id).push(tu)
		} else {
			sp.noID.push(tu)
		}
	}
	sp.mu.Lock()
	for _, q := range sp.queues {
		q.close()
	}
	sp.mu.Unlock()
	sp.noID.close()
}

func (sp *sharedPort) queue(id int64) *frameQueue {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	q := sp.queues[id]
	if q == nil {
		q = newFrameQueue()
		sp.queues[id] = q
	}
	return q
}

// sendTerm writes one frame; a ps_port that has exited is not an error
// here (a port's owner may still write to it).
func (sp *sharedPort) sendTerm(t etf.Term) {
	b, err := etf.Encode(t)
	if err != nil {
		sp.t.Errorf("encoding %v: %v", t, err)
		return
	}
	sp.wmu.Lock()
	defer sp.wmu.Unlock()
	sp.stdin.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
}

// open sends {open, id, opts} with the program and its args first.
func (sp *sharedPort) open(id int64, program string, args []string, opts ...etf.Term) {
	l := etf.List{etf.Tuple{atom("program"), []byte(program)}, etf.Tuple{atom("args"), binList(args)}}
	sp.sendTerm(etf.Tuple{atom("open"), id, append(l, opts...)})
}

func binList(ss []string) etf.List {
	l := etf.List{}
	for _, s := range ss {
		l = append(l, []byte(s))
	}
	return l
}

// next returns child id's next frame, failing the test after timeout.
func (sp *sharedPort) next(id int64, timeout time.Duration) etf.Tuple {
	sp.t.Helper()
	f := sp.queue(id).pop(timeout)
	if f == nil {
		sp.t.Fatalf("child %d: no frame within %v; stderr: %s", id, timeout, sp.stderr)
	}
	return f
}

// started expects {started, id, Pid} and returns Pid.
func (sp *sharedPort) started(id int64) int {
	sp.t.Helper()
	f := sp.next(id, 10*time.Second)
	if len(f) != 3 || f[0] != atom("started") {
		sp.t.Fatalf("child %d: want {started, %d, Pid}, got %v; stderr: %s", id, id, f, sp.stderr)
	}
	return int(f[2].(int64))
}

// sharedOutput is what one child wrote, hashed, and how it ended.
type sharedOutput struct {
	stdoutMD5, stderrMD5 string
	stdoutN, stderrN     int
	stdout, stderr       []byte // the first 1 MiB of each
	exit                 etf.Term
	others               []etf.Tuple
}

// collect reads child id's frames until its exit, acking output when ack
// is set.
func (sp *sharedPort) collect(id int64, ack bool, timeout time.Duration) sharedOutput {
	sp.t.Helper()
	var o sharedOutput
	hOut, hErr := md5.New(), md5.New()
	deadline := time.Now().Add(timeout)
	for {
		f := sp.queue(id).pop(time.Until(deadline))
		if f == nil {
			sp.t.Fatalf("child %d: no exit frame within %v (stdout so far %d bytes); stderr: %s", id, timeout, o.stdoutN, sp.stderr)
		}
		switch {
		case len(f) == 3 && (f[0] == atom("stdout") || f[0] == atom("stderr")):
			p := f[2].([]byte)
			var h hash.Hash
			if f[0] == atom("stdout") {
				h, o.stdoutN = hOut, o.stdoutN+len(p)
				if len(o.stdout) < 1<<20 {
					o.stdout = append(o.stdout, p...)
				}
			} else {
				h, o.stderrN = hErr, o.stderrN+len(p)
				if len(o.stderr) < 1<<20 {
					o.stderr = append(o.stderr, p...)
				}
			}
			h.Write(p)
			if ack {
				sp.sendTerm(etf.Tuple{atom("ack"), id, int64(len(p))})
			}
		case len(f) == 3 && f[0] == atom("exit"):
			o.exit = f[2]
			o.stdoutMD5, o.stderrMD5 = fmt.Sprintf("%x", hOut.Sum(nil)), fmt.Sprintf("%x", hErr.Sum(nil))
			return o
		default:
			o.others = append(o.others, f)
		}
	}
}

// waitExit closes the port (as a BEAM does), and returns ps_port's exit code.
func (sp *sharedPort) waitExit(timeout time.Duration) int {
	sp.t.Helper()
	sp.stdin.Close()
	select {
	case <-sp.waited:
	case <-time.After(timeout):
		sp.t.Fatalf("ps_port --shared still running %v after its port closed; stderr: %s", timeout, sp.stderr)
	}
	return sp.cmd.ProcessState.ExitCode()
}

func md5hex(b []byte) string { return fmt.Sprintf("%x", md5.Sum(b)) }
