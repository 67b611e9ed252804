package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/protonstream/ps_port/cgroup"
	"github.com/protonstream/ps_port/procctl"
)

// recorder is an Output that keeps every call, in order. It acks output
// at once when autoAck is set.
type recorder struct {
	mu      sync.Mutex
	events  []string
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	session *Session
	exit    chan procctl.ExitStatus
	autoAck bool
	written []int64 // StdinWritten reports
}

func newRecorder() *recorder { return &recorder{exit: make(chan procctl.ExitStatus, 1), autoAck: true} }

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) Stdout(p []byte) error {
	r.mu.Lock()
	r.stdout.Write(p)
	r.mu.Unlock()
	r.add("stdout")
	if r.autoAck {
		go r.ack(len(p))
	}
	return nil
}

func (r *recorder) Stderr(p []byte) error {
	r.mu.Lock()
	r.stderr.Write(p)
	r.mu.Unlock()
	r.add("stderr")
	if r.autoAck {
		go r.ack(len(p))
	}
	return nil
}

// ack waits for the session to be known (Start may still be returning).
func (r *recorder) ack(n int) {
	for {
		r.mu.Lock()
		s := r.session
		r.mu.Unlock()
		if s != nil {
			s.Ack(int64(n))
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *recorder) Started(pid int)              { r.add("started") }
func (r *recorder) Error(reason, message string) { r.add("error %s: %s", reason, message) }
func (r *recorder) OOMKilled(n uint64)           { r.add("oom_killed %d", n) }
func (r *recorder) StdinWritten(n int64) {
	r.mu.Lock()
	r.written = append(r.written, n)
	r.mu.Unlock()
	r.add("stdin_written %d", n)
}

// notices returns the StdinWritten reports so far and their sum.
func (r *recorder) notices() ([]int64, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sum int64
	for _, n := range r.written {
		sum += n
	}
	return append([]int64(nil), r.written...), sum
}
func (r *recorder) Exit(st procctl.ExitStatus) {
	r.add("exit %v", st)
	r.exit <- st
}

func (r *recorder) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func start(t *testing.T, req Request) (*Session, *recorder) {
	t.Helper()
	r := newRecorder()
	s, err := Start(req, r, t.Logf)
	if err != nil {
		t.Fatalf("Start(%+v): %v", req, err)
	}
	r.mu.Lock()
	r.session = s
	r.mu.Unlock()
	t.Cleanup(func() {
		s.Abandon()
		s.Wait()
	})
	return s, r
}

func wait(t *testing.T, r *recorder) procctl.ExitStatus {
	t.Helper()
	select {
	case st := <-r.exit:
		return st
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit; events so far %q", r.log())
	}
	return procctl.ExitStatus{}
}

func TestEnviron(t *testing.T) {
	got := Environ([]string{"A=1", "B=2", "C=3", "PATH=/bin"}, []string{"B=two", "D=4"}, []string{"C", "D", "NOPE"})
	want := []string{"A=1", "PATH=/bin", "B=two", "D=4"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Environ = %q, want %q (set replaces, unset removes, set wins over unset)", got, want)
	}
}

func TestSessionReportsInOrder(t *testing.T) {
	s, r := start(t, Request{
		Program: "sh", Args: []string{"-c", `echo "$X$Y" ; echo err >&2; exit 3`},
		BaseEnv: []string{"PATH=" + os.Getenv("PATH"), "X=base", "Y=gone"},
		Env:     []string{"X=set"}, Unset: []string{"Y"},
	})
	if st := wait(t, r); st.Code != 3 || st.Signal != 0 {
		t.Errorf("exit %v, want status 3", st)
	}
	if got := s.Wait(); got.Code != 3 {
		t.Errorf("Wait = %v", got)
	}
	ev := r.log()
	if ev[0] != "started" || !strings.HasPrefix(ev[len(ev)-1], "exit") {
		t.Errorf("events %q: want started first and exit last", ev)
	}
	if r.stdout.String() != "set\n" || r.stderr.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", r.stdout.String(), r.stderr.String())
	}
	// Requests after the exit are ignored, and never reported after it.
	s.Command([]byte("late"))
	s.EOF()
	s.Ack(5)
	s.Stop()
	if err := s.Signal(15); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
	if ev2 := r.log(); len(ev2) != len(ev) {
		t.Errorf("requests after the exit were reported: %q", ev2[len(ev):])
	}
}

// TestStdinWholeOrNothing is the one stdin rule: refused when queued+size
// would pass the limit, unless nothing is queued.
func TestStdinWholeOrNothing(t *testing.T) {
	// sleep never reads stdin: what the pipe does not take stays queued.
	s, r := start(t, Request{Program: "sleep", Args: []string{"600"}, StdinLimit: 100 << 10})
	big := bytes.Repeat([]byte("x"), 1<<20) // bigger than limit and pipe
	s.Command(big)
	queued := s.StdinQueued()
	if queued == 0 || queued > len(big) {
		t.Fatalf("after a 1 MiB command into a child that does not read, %d bytes queued", queued)
	}
	s.Command([]byte("y"))
	if got := s.StdinQueued(); got != queued {
		t.Errorf("a refused command changed the queue: %d -> %d bytes", queued, got)
	}
	ev := r.log()
	want := fmt.Sprintf("error stdin_overflow: 1 bytes for stdin refused whole: %d bytes already wait for the child to read them and the stdin limit is 102400", queued)
	if len(ev) != 2 || !strings.HasPrefix(ev[1], want) {
		t.Errorf("events %q, want the second to start %q", ev, want)
	}
	s.EOF()
	s.Command([]byte("z"))
	if ev := r.log(); len(ev) != 3 || !strings.HasPrefix(ev[2], "error stdin_closed: 1 bytes for stdin refused: stdin was closed by eof") {
		t.Errorf("command after EOF: events %q", ev)
	}
	if err := s.Signal(0); !errors.Is(err, ErrBadSignal) {
		t.Errorf("Signal(0) = %v, want ErrBadSignal", err)
	}
	s.Stop()
	if st := wait(t, r); st.Signal != syscall.SIGTERM {
		t.Errorf("after Stop: %v, want SIGTERM", st)
	}
}

// TestStdinLimitDefault: 0 means DefaultStdinLimit, and a queue below the
// limit takes a command that fits.
func TestStdinLimitDefault(t *testing.T) {
	s, r := start(t, Request{Program: "sleep", Args: []string{"600"}})
	if s.limit != DefaultStdinLimit || DefaultStdinLimit != 16<<20 {
		t.Errorf("limit %d, want DefaultStdinLimit = 16 MiB", s.limit)
	}
	s.Command(bytes.Repeat([]byte("a"), 1<<20))
	s.Command(bytes.Repeat([]byte("b"), 8<<20))
	s.Command(bytes.Repeat([]byte("c"), 8<<20)) // 17 MiB: refused
	ev := r.log()
	if len(ev) != 2 || !strings.Contains(ev[1], "8388608 bytes for stdin refused whole") {
		t.Errorf("events %q: want only the third command refused", ev)
	}
}

func TestStartErrors(t *testing.T) {
	cases := []struct {
		req    Request
		reason string
		text   string
	}{
		{Request{Program: "no_such_program_xyz"}, "enoent", "not found in PATH"},
		{Request{Program: "true", Dir: "/no/such/dir"}, "enoent", `working directory (cd) "/no/such/dir"`},
		{Request{Program: "true", UID: "no_such_user_xyz"}, "baduser", "no such user"},
		{Request{Program: "true", Cgroup: cgroup.Spec{Controllers: []string{"no_such_controller"}, Path: "ps_port_host_test/x"}}, "badcgroup", "no_such_controller"},
	}
	for _, c := range cases {
		r := newRecorder()
		_, err := Start(c.req, r, t.Logf)
		var se *procctl.SpawnError
		if !errors.As(err, &se) || se.Reason != c.reason || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%+v: error %v, want a SpawnError %s mentioning %q", c.req, err, c.reason, c.text)
		}
		if ev := r.log(); len(ev) != 0 {
			t.Errorf("%+v: a child that did not start reported %q", c.req, ev)
		}
	}
}

// The tests run with cgroups, as ps_port does (cmd/ps_port sets NewGroup).
func init() { NewGroup = newTestGroup }

func newTestGroup(spec cgroup.Spec) (Group, error) {
	g, err := cgroup.Create(spec)
	if err != nil {
		return nil, err
	}
	return g, nil
}

// TestNoCgroupsRefused: in a binary without cgroups (ps_port_lean, where
// NewGroup is nil) a child that asks for a cgroup is refused before it
// starts, with reason badcgroup and words that say where cgroups are.
func TestNoCgroupsRefused(t *testing.T) {
	NewGroup = nil
	defer func() { NewGroup = newTestGroup }()
	r := newRecorder()
	_, err := Start(Request{Program: "true", Cgroup: cgroup.Spec{Controllers: []string{"memory"}, Path: "ps_port_host_test/lean"}}, r, t.Logf)
	var se *procctl.SpawnError
	if !errors.As(err, &se) || se.Reason != "badcgroup" || !errors.Is(err, ErrNoCgroups) || !strings.Contains(err.Error(), "run ps_port") {
		t.Fatalf("error %v, want a badcgroup SpawnError wrapping ErrNoCgroups", err)
	}
	if ev := r.log(); len(ev) != 0 {
		t.Errorf("a child that did not start reported %q", ev)
	}
	// Without a cgroup it starts as ever.
	r = newRecorder()
	s, err := Start(Request{Program: "true"}, r, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.session = s
	r.mu.Unlock()
	if st := wait(t, r); st.Code != 0 {
		t.Fatalf("true ended with %+v", st)
	}
}

// TestCgroupRemovedBeforeExit: with a cgroup, the exit report comes after
// the group is gone.
func TestCgroupRemovedBeforeExit(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("needs root (CI runs as root) for cgroups")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Fatalf("no cgroup v1 memory controller: %v", err)
	}
	path := fmt.Sprintf("ps_port_host_test_%d/child", os.Getpid())
	dir := "/sys/fs/cgroup/memory/" + path
	r := newRecorder()
	s, err := Start(Request{Program: "sh", Args: []string{"-c", "cat /proc/self/cgroup"},
		Cgroup: cgroup.Spec{Controllers: []string{"memory"}, Path: path}}, r, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.session = s
	r.mu.Unlock()
	st := wait(t, r)
	if st.Code != 0 || !strings.Contains(r.stdout.String(), path) {
		t.Errorf("child in %s: exit %v, output %q", path, st, r.stdout.String())
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s still there after the exit report", dir)
		os.Remove(dir)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/" + strings.TrimSuffix(path, "/child")); err == nil {
		t.Errorf("the group's parent, made for it, is still there")
	}
}

// fakeGroup is a caller-made Group (node mode's claimed groups).
type fakeGroup struct {
	mu      sync.Mutex
	deleted int
	oom     uint64
}

func (g *fakeGroup) EnterThread() (func() error, error) { return func() error { return nil }, nil }
func (g *fakeGroup) CgroupFD() int                      { return -1 }
func (g *fakeGroup) Kill() error                        { return nil }
func (g *fakeGroup) OOMKills() (uint64, error)          { return g.oom, nil }
func (g *fakeGroup) Delete() error {
	g.mu.Lock()
	g.deleted++
	g.mu.Unlock()
	return nil
}

func (g *fakeGroup) deletes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.deleted
}

// TestCallerGroup: a Group given in the Request is the session's: deleted
// once after the exit (its OOM count reported first), and deleted when the
// child does not start.
func TestCallerGroup(t *testing.T) {
	g := &fakeGroup{oom: 2}
	_, r := start(t, Request{Program: "true", Group: g})
	wait(t, r)
	ev := r.log()
	if g.deletes() != 1 || len(ev) < 3 || ev[len(ev)-2] != "oom_killed 2" || !strings.HasPrefix(ev[len(ev)-1], "exit") {
		t.Errorf("deletes %d, events %q: want one delete and oom_killed 2 right before the exit", g.deletes(), ev)
	}
	g2 := &fakeGroup{}
	if _, err := Start(Request{Program: "no_such_program_xyz", Group: g2}, newRecorder(), t.Logf); err == nil || g2.deletes() != 1 {
		t.Errorf("failed start: err %v, deletes %d; want an error and the group deleted once", err, g2.deletes())
	}
	g3 := &fakeGroup{}
	if _, err := Start(Request{Program: "true", UID: "no_such_user_xyz", Group: g3}, newRecorder(), t.Logf); err == nil || g3.deletes() != 1 {
		t.Errorf("bad user: err %v, deletes %d; want an error and the group deleted once", err, g3.deletes())
	}
}

// TestCredentialOverride: a Credential given in the Request is used as is,
// UID and GID not looked up.
func TestCredentialOverride(t *testing.T) {
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), NoSetGroups: true}
	_, r := start(t, Request{Program: "id", Args: []string{"-u"}, UID: "no_such_user_xyz", Credential: cred})
	if st := wait(t, r); st.Code != 0 || strings.TrimSpace(r.stdout.String()) != fmt.Sprint(os.Getuid()) {
		t.Errorf("exit %v, id -u said %q; want the Credential's uid %d", st, r.stdout.String(), os.Getuid())
	}
}

// gatedCat is a child that reads nothing until the file it names exists,
// then copies its stdin to /dev/null: what does not fit in the pipe stays
// queued until the test opens the gate.
func gatedCat(t *testing.T) (req Request, open func()) {
	gate := t.TempDir() + "/gate"
	req = Request{Program: "sh", Args: []string{"-c", `while [ ! -e "$1" ]; do sleep 0.01; done; exec cat >/dev/null`, "sh", gate}}
	return req, func() {
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func waitNotices(t *testing.T, r *recorder, total int64) []int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, sum := r.notices()
		if sum == total {
			return got
		}
		if sum > total || time.Now().After(deadline) {
			t.Fatalf("stdin_written notices %v sum to %d, want %d; events %q", got, sum, total, r.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStdinAckBatches: with stdin acks, what reaches the child's pipe is
// reported in batches of at least StdinNoticeBytes while the queue is not
// empty, and all of it once the queue is empty.
func TestStdinAckBatches(t *testing.T) {
	req, open := gatedCat(t)
	req.StdinAck, req.StdinLimit = true, 4<<20
	s, r := start(t, req)
	const cmds, size = 64, 8 << 10 // 512 KiB in 8 KiB commands
	for i := 0; i < cmds; i++ {
		s.Command(bytes.Repeat([]byte{'a' + byte(i%26)}, size))
	}
	if s.StdinQueued() == 0 {
		t.Fatalf("512 KiB into a child that does not read yet: nothing queued; events %q", r.log())
	}
	open()
	got := waitNotices(t, r, cmds*size)
	for i, n := range got[:len(got)-1] {
		// Commands the pipe took whole met an empty queue: each is reported
		// at once; the pipe holds at most 1 MiB, so those are few.
		if n < StdinNoticeBytes && i >= (1<<20)/size {
			t.Errorf("notice %d of %v is %d bytes: want batches of at least %d while bytes are queued", i, got, n, StdinNoticeBytes)
		}
	}
	if len(got) >= cmds/2 {
		t.Errorf("%d notices for %d commands: %v, want them batched", len(got), cmds, got)
	}
	s.EOF()
	if st := wait(t, r); st.Code != 0 {
		t.Errorf("exit %v", st)
	}
	if after, _ := r.notices(); len(after) != len(got) {
		t.Errorf("notices after the queue emptied: %v", after[len(got):])
	}
}

// TestStdinAckWhenQueueEmpties: bytes written when the queue empties are
// reported at once, below the batch size and without eof; half the stdin
// limit is the batch when that is less than StdinNoticeBytes.
func TestStdinAckWhenQueueEmpties(t *testing.T) {
	req, open := gatedCat(t)
	req.StdinAck, req.StdinLimit = true, 1<<20
	s, r := start(t, req)
	s.Command([]byte("hello")) // the pipe takes it: the queue is empty
	if got := waitNotices(t, r, 5); len(got) != 1 {
		t.Errorf("notices %v, want one of 5 bytes", got)
	}
	const big = 3 << 20 // more than the pipe: most of it waits in the queue
	s.Command(bytes.Repeat([]byte("x"), big))
	open()
	// The writer goroutine empties the queue: all of it is reported, eof
	// or not.
	waitNotices(t, r, 5+big)
	s.Stop()
	wait(t, r)

	small, _ := start(t, Request{Program: "sleep", Args: []string{"600"}, StdinAck: true, StdinLimit: 1000})
	if small.stdinBatch != 500 {
		t.Errorf("stdin limit 1000: batch %d, want 500 (half the limit)", small.stdinBatch)
	}
}

// failingOutput is a recorder whose stdout cannot be written, as a port
// that broke.
type failingOutput struct{ *recorder }

func (f failingOutput) Stdout(p []byte) error {
	f.add("stdout refused")
	return errors.New("the port is broken")
}

// epipeOutput is a recorder whose port was closed by its owner.
type epipeOutput struct{ *recorder }

func (f epipeOutput) Stdout(p []byte) error {
	f.add("stdout refused")
	return &os.PathError{Op: "write", Path: "|1", Err: syscall.EPIPE}
}

// Output that cannot be delivered is not silently lost: the child is
// terminated, the session reports output_lost right before the exit, and
// the exit status carries the sink's error.
func TestLostOutputReportedWithTheExit(t *testing.T) {
	r := newRecorder()
	s, err := Start(Request{Program: "sh", Args: []string{"-c", "echo hi; exec sleep 600"},
		BaseEnv: []string{"PATH=" + os.Getenv("PATH")}}, failingOutput{r}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Abandon(); s.Wait() })
	st := wait(t, r)
	if st.OutputErr == nil || st.OutputErr.Error() != "the port is broken" {
		t.Fatalf("exit %v: want OutputErr from the sink", st)
	}
	if st.Signal == 0 {
		t.Errorf("exit %v: want the child terminated by a signal (it sleeps 600 s)", st)
	}
	ev := r.log()
	n := len(ev)
	if n < 2 || !strings.HasPrefix(ev[n-2], "error output_lost: ") || !strings.Contains(ev[n-2], "the port is broken") ||
		!strings.HasPrefix(ev[n-1], "exit ") {
		t.Fatalf("events %q: want output_lost (naming the sink's error) right before the exit", ev)
	}
	// A closed port (EPIPE) is an owner gone: the exit carries it, but
	// nobody is left to tell.
	r3 := newRecorder()
	s3, err := Start(Request{Program: "sh", Args: []string{"-c", "echo hi; exec sleep 600"},
		BaseEnv: []string{"PATH=" + os.Getenv("PATH")}}, epipeOutput{r3}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s3.Abandon(); s3.Wait() })
	if st := wait(t, r3); !errors.Is(st.OutputErr, syscall.EPIPE) {
		t.Errorf("exit %v: want EPIPE as OutputErr", st)
	}
	for _, e := range r3.log() {
		if strings.Contains(e, "output_lost") {
			t.Errorf("events %q: output_lost reported for a closed port", r3.log())
		}
	}
	// Delivered output leaves OutputErr nil.
	_, r2 := start(t, Request{Program: "sh", Args: []string{"-c", "echo ok"}, BaseEnv: []string{"PATH=" + os.Getenv("PATH")}})
	if st := wait(t, r2); st.OutputErr != nil || st.Code != 0 {
		t.Errorf("exit %v, want status 0 and no OutputErr", st)
	}
	for _, e := range r2.log() {
		if strings.Contains(e, "output_lost") {
			t.Errorf("events %q: output_lost without a failure", r2.log())
		}
	}
}

// IDOption is the one reading of a uid or gid option (port and node mode).
func TestIDOption(t *testing.T) {
	for _, c := range []struct {
		num   int64
		isNum bool
		name  string
		want  string
		ok    bool
	}{
		{1000, true, "", "1000", true},
		{0, true, "", "0", true},
		{MaxID, true, "", "4294967295", true},
		{-1, true, "", "", false},
		{MaxID + 1, true, "", "", false},
		{0, false, "nobody", "nobody", true},
		{0, false, "", "", false},
	} {
		got, err := IDOption(c.num, c.isNum, c.name)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("IDOption(%d, %v, %q) = %q, %v; want %q (ok %v)", c.num, c.isNum, c.name, got, err, c.want, c.ok)
		}
	}
}
