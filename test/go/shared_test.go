package blackbox

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
)

func opt(key string, v etf.Term) etf.Tuple { return etf.Tuple{atom(key), v} }

// TestSharedManyChildrenInterleaved runs children at once over one port,
// their output frames interleaved, and checks every byte by md5: stdin
// echoed by cat, stderr, and stderr merged into stdout.
func TestSharedManyChildrenInterleaved(t *testing.T) {
	sp := startShared(t)
	const n = 24
	inputs := randomInputs(n, 512<<10, 7919)
	for i := range n {
		id := int64(i + 1)
		switch i % 3 {
		case 0:
			sp.open(id, "cat", nil)
		case 1:
			sp.open(id, "sh", []string{"-c", "cat >&2"})
		case 2:
			sp.open(id, "sh", []string{"-c", "cat; echo tail >&2"}, opt("stderr_to_stdout", atom("true")))
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		id := int64(i + 1)
		sp.started(id)
		wg.Add(1)
		go func() { // the commands of all children interleave too
			defer wg.Done()
			in := inputs[i]
			for off := 0; off < len(in); off += 64 << 10 {
				sp.sendTerm(etf.Tuple{atom("command"), id, in[off:min(off+64<<10, len(in))]})
			}
			sp.sendTerm(etf.Tuple{atom("eof"), id})
		}()
	}
	outs := make([]sharedOutput, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = sp.collect(int64(i+1), true, 60*time.Second)
		}()
	}
	wg.Wait()
	for i, o := range outs {
		want := md5hex(inputs[i])
		var got string
		var gotN int
		switch i % 3 {
		case 0:
			got, gotN = o.stdoutMD5, o.stdoutN
		case 1:
			got, gotN = o.stderrMD5, o.stderrN
		case 2:
			want, got, gotN = md5hex(append(append([]byte{}, inputs[i]...), "tail\n"...)), o.stdoutMD5, o.stdoutN
		}
		if got != want || !equal(o.exit, status(0)) || len(o.others) > 0 {
			t.Errorf("child %d (kind %d): %d bytes md5 %s, want %d bytes md5 %s; exit %v; other frames %v",
				i+1, i%3, gotN, got, len(inputs[i]), want, o.exit, o.others)
		}
	}
	if code := sp.waitExit(10 * time.Second); code != 0 {
		t.Errorf("ps_port --shared exited %d, want 0; stderr: %s", code, sp.stderr)
	}
}

// TestSharedNoHeadOfLineBlocking: a child whose owner never acks stops only
// itself; another streams tens of MB to completion meanwhile.
func TestSharedNoHeadOfLineBlocking(t *testing.T) {
	sp := startShared(t)
	const window = 64 << 10
	sp.open(1, "yes", nil, opt("stdio_window", int64(window)))
	sp.open(2, "head", []string{"-c", "67108864", "/dev/zero"})
	sp.started(1)
	sp.started(2)
	o := sp.collect(2, true, 120*time.Second)
	if o.stdoutN != 64<<20 || !equal(o.exit, status(0)) {
		t.Fatalf("the acked child got %d bytes and exit %v while the other was never acked; want %d and status 0", o.stdoutN, o.exit, 64<<20)
	}
	// The never-acked child sent at most its window.
	var got int
	for {
		f := sp.queue(1).pop(200 * time.Millisecond)
		if f == nil {
			break
		}
		if f[0] != atom("stdout") {
			t.Fatalf("child 1: unexpected frame %v", f)
		}
		got += len(f[2].([]byte))
	}
	if got == 0 || got > window {
		t.Errorf("the never-acked child sent %d bytes, want 1..%d (its window)", got, window)
	}
	// Stopped, its owner acking what comes, it ends.
	sp.sendTerm(etf.Tuple{atom("ack"), int64(1), int64(got)})
	sp.sendTerm(etf.Tuple{atom("stop"), int64(1)})
	if o := sp.collect(1, true, 10*time.Second); !equal(o.exit, signal(int64(syscall.SIGTERM))) {
		t.Errorf("stopped yes: exit %v, want {signal, 15}", o.exit)
	}
}

// TestSharedStdinWhole: a command is accepted or refused whole; one larger
// than the limit is taken when the queue is empty and reaches the child
// uncut.
func TestSharedStdinWhole(t *testing.T) {
	sp := startShared(t)
	const limit = 1 << 20
	// A child that never reads stdin: the first command is taken whole (the
	// queue was empty), the next refused whole.
	sp.open(1, "sleep", []string{"600"}, opt("stdin_limit", int64(limit)))
	sp.started(1)
	sp.sendTerm(etf.Tuple{atom("command"), int64(1), bytes.Repeat([]byte("a"), 3<<20)})
	sp.sendTerm(etf.Tuple{atom("command"), int64(1), []byte("b")})
	f := sp.next(1, 10*time.Second)
	if len(f) != 4 || f[0] != atom("error") || f[2] != atom("stdin_overflow") ||
		!strings.Contains(string(f[3].([]byte)), "1 bytes for stdin refused whole") {
		t.Fatalf("want {error, 1, stdin_overflow, \"1 bytes for stdin refused whole...\"}, got %v", f)
	}
	t.Logf("refusal: %s", f[3])
	sp.sendTerm(etf.Tuple{atom("stop"), int64(1)})
	sp.collect(1, true, 10*time.Second)

	// 10 MB through cat with a 1 MiB limit: one command, taken whole.
	big := make([]byte, 10_000_000)
	rand.Read(big)
	sp.open(2, "cat", nil, opt("stdin_limit", int64(limit)))
	sp.started(2)
	sp.sendTerm(etf.Tuple{atom("command"), int64(2), big})
	sp.sendTerm(etf.Tuple{atom("eof"), int64(2)})
	sp.sendTerm(etf.Tuple{atom("command"), int64(2), []byte("late")})
	o := sp.collect(2, true, 60*time.Second)
	if o.stdoutMD5 != md5hex(big) || !equal(o.exit, status(0)) {
		t.Errorf("10 MB command through cat: got %d bytes (md5 %s), exit %v; want %d bytes md5 %s", o.stdoutN, o.stdoutMD5, o.exit, len(big), md5hex(big))
	}
	if len(o.others) != 1 || o.others[0][0] != atom("error") || o.others[0][2] != atom("stdin_closed") {
		t.Errorf("a command after eof: want one {error, 2, stdin_closed, _}, got %v", o.others)
	}
}

// TestSharedBadFrames: malformed frames, unknown and duplicate ids and bad
// options get clear errors, and a child already running is not touched.
func TestSharedBadFrames(t *testing.T) {
	sp := startShared(t)
	sp.open(1, "cat", nil)
	sp.started(1)

	expectNoID := func(what, contains string) {
		t.Helper()
		f := sp.noID.pop(10 * time.Second)
		if len(f) != 3 || f[0] != atom("error") || f[1] != atom("badframe") || !strings.Contains(string(f[2].([]byte)), contains) {
			t.Errorf("%s: want {error, badframe, \"...%s...\"}, got %v", what, contains, f)
		}
	}
	expectID := func(what string, id int64, tag, reason, contains string) {
		t.Helper()
		f := sp.next(id, 10*time.Second)
		if len(f) != 4 || f[0] != atom(tag) || f[2] != atom(reason) || !strings.Contains(string(f[3].([]byte)), contains) {
			t.Errorf("%s: want {%s, %d, %s, \"...%s...\"}, got %v", what, tag, id, reason, contains, f)
		}
	}

	sp.sendRaw([]byte{131, 200, 1})
	expectNoID("undecodable frame", "")
	sp.sendTerm(etf.Tuple{atom("hello")})
	expectNoID("unknown term", "unexpected term {hello}")
	sp.sendTerm(etf.Tuple{atom("command"), int64(0), []byte("x")})
	expectNoID("id 0", "the id must be an integer in 1..2147483647")
	sp.sendTerm(etf.Tuple{atom("ack"), []byte("1"), int64(5)})
	expectNoID("binary id", "the id must be")

	sp.sendTerm(etf.Tuple{atom("command"), int64(999), []byte("x")})
	expectID("unknown id", 999, "error", "badframe", "never opened")
	sp.open(1, "cat", nil)
	expectID("duplicate id", 1, "error", "badframe", "child id 1 is in use")
	sp.sendTerm(etf.Tuple{atom("ack"), int64(1), int64(-1)})
	expectID("negative ack", 1, "error", "badframe", "non-negative integer")
	sp.sendTerm(etf.Tuple{atom("signal"), int64(1), int64(99)})
	expectID("signal 99", 1, "error", "badframe", "1..64")
	sp.sendTerm(etf.Tuple{atom("command"), int64(1), etf.List{int64(1)}})
	expectID("command not a binary", 1, "error", "badframe", "want Data as a binary")
	sp.sendTerm(etf.Tuple{atom("eof"), int64(1), int64(2)})
	expectID("eof of arity 3", 1, "error", "badframe", "want a tuple of 2 elements")

	sp.sendTerm(etf.Tuple{atom("open"), int64(5), etf.List{opt("program", etf.List{int64('c'), int64('a'), int64('t')})}})
	expectID("charlist program", 5, "spawn_error", "badarg", "option program: want a binary")
	sp.open(6, "cat", nil, opt("bogus", int64(1)))
	expectID("unknown option", 6, "spawn_error", "badarg", "option bogus: unknown option")
	sp.open(7, "cat", nil, opt("stdio_window", int64(-1)))
	expectID("negative window", 7, "spawn_error", "badarg", "option stdio_window: want an integer 1..67108864, got -1")
	sp.sendTerm(etf.Tuple{atom("open"), int64(8), etf.List{}})
	expectID("no program", 8, "spawn_error", "badarg", "option program: missing")
	sp.sendTerm(etf.Tuple{atom("open"), int64(9), atom("cat")})
	expectID("opts not a list", 9, "spawn_error", "badarg", "want Opts as a list")
	sp.open(10, "cat", nil, opt("env", etf.List{etf.Tuple{[]byte("A=B"), []byte("x")}}))
	expectID("bad env name", 10, "spawn_error", "badarg", "option env: want a name")
	sp.open(11, "cat", nil, opt("cgroup_controllers", binList([]string{"memory"})))
	expectID("controllers without path", 11, "spawn_error", "badarg", "needs {cgroup_path, Binary}")
	sp.open(5, "cat", nil)
	expectID("reopened id after its spawn_error", 5, "error", "badframe", "was used before")
	sp.sendTerm(etf.Tuple{atom("environ"), atom("x")})
	expectNoID("bad environ", "{environ, Env}")

	// The child opened first never noticed.
	sp.sendTerm(etf.Tuple{atom("command"), int64(1), []byte("still here\n")})
	sp.sendTerm(etf.Tuple{atom("eof"), int64(1)})
	o := sp.collect(1, true, 10*time.Second)
	if string(o.stdout) != "still here\n" || !equal(o.exit, status(0)) || len(o.others) > 0 {
		t.Errorf("child 1 after the bad frames: stdout %q, exit %v, others %v", o.stdout, o.exit, o.others)
	}
	// Frames for an id whose exit is out are ignored, silently.
	sp.sendTerm(etf.Tuple{atom("ack"), int64(1), int64(11)})
	sp.sendTerm(etf.Tuple{atom("command"), int64(1), []byte("late")})
	sp.sendTerm(etf.Tuple{atom("stop"), int64(1)})
	sp.open(12, "true", nil)
	sp.started(12)
	sp.collect(12, true, 10*time.Second)
	if f := sp.queue(1).pop(100 * time.Millisecond); f != nil {
		t.Errorf("a frame for an ended child was answered: %v", f)
	}
	if code := sp.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0 (bad frames never end a shared ps_port)", code)
	}
}

// TestSharedSpawnErrorBadCgroup: a child in a controller that does not
// exist is reported under its id with badcgroup, and the next open works.
// (The other spawn errors, in every mode: TestModesSpawnErrors.)
func TestSharedSpawnErrorBadCgroup(t *testing.T) {
	sp := startShared(t)
	sp.open(100, "true", nil, opt("cgroup_controllers", binList([]string{"no_such_controller"})), opt("cgroup_path", []byte("ps_port_shared_test/x")))
	f := sp.next(100, 10*time.Second)
	if len(f) != 4 || f[0] != atom("spawn_error") || f[2] != atom("badcgroup") || !strings.Contains(string(f[3].([]byte)), "no_such_controller") {
		t.Errorf("want {spawn_error, 100, badcgroup, \"...no_such_controller...\"}, got %v", f)
	}
	sp.open(1, "sh", []string{"-c", "echo ok"})
	sp.started(1)
	if o := sp.collect(1, true, 10*time.Second); string(o.stdout) != "ok\n" || !equal(o.exit, status(0)) {
		t.Errorf("open after spawn errors: %q %v", o.stdout, o.exit)
	}
}

// TestSharedEnvironAndOptions: {environ, _} replaces the base environment of
// later opens; env sets and unsets over it; cd and arg0 too. (Exit
// statuses, signals and capture_stderr_only in every mode: modes_test.go.)
func TestSharedEnvironAndOptions(t *testing.T) {
	sp := startShared(t)
	sp.sendTerm(etf.Tuple{atom("environ"), etf.List{
		etf.Tuple{[]byte("PATH"), []byte(os.Getenv("PATH"))},
		etf.Tuple{[]byte("FROM_BASE"), []byte("base")},
		etf.Tuple{[]byte("DROPPED"), []byte("x")},
	}})
	sp.open(1, "sh", []string{"-c", `echo "$FROM_BASE/$SET/${DROPPED-unset}/$(pwd)/$0"; exit 7`},
		opt("env", etf.List{etf.Tuple{[]byte("SET"), []byte("set")}, etf.Tuple{[]byte("DROPPED"), atom("false")}}),
		opt("cd", []byte("/tmp")), opt("arg0", []byte("myname")))
	sp.started(1)
	o := sp.collect(1, true, 10*time.Second)
	if got := string(o.stdout); got != "base/set/unset//tmp/myname\n" || !equal(o.exit, status(7)) {
		t.Errorf("got %q exit %v; want \"base/set/unset//tmp/myname\\n\" and status 7", got, o.exit)
	}
}

// grandchildren returns the children of pid (from /proc).
func grandchildren(t *testing.T, pid int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		if len(pids) > 0 {
			return pids
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d started no child", pid)
	return nil
}

// startTrees opens n children that each start a grandchild, and returns
// every pid of their trees.
func startTrees(t *testing.T, sp *sharedPort, n int) []int {
	var pids []int
	for i := range n {
		sp.open(int64(i+1), "sh", []string{"-c", "sleep 600 & wait"})
	}
	for i := range n {
		pid := sp.started(int64(i + 1))
		pids = append(pids, pid)
		pids = append(pids, grandchildren(t, pid)...)
	}
	return pids
}

// TestSharedPortCloseTakesEveryTreeDown: EOF on the port terminates every
// child and grandchild, sends their exits, and ps_port exits 0.
func TestSharedPortCloseTakesEveryTreeDown(t *testing.T) {
	sp := startShared(t, "--delay-to-sigkill", "2000")
	pids := startTrees(t, sp, 5)
	sp.stdin.Close()
	for _, pid := range pids {
		waitGone(t, pid, 10*time.Second)
	}
	for i := range 5 {
		if o := sp.collect(int64(i+1), false, 10*time.Second); !equal(o.exit, signal(int64(syscall.SIGTERM))) {
			t.Errorf("child %d: exit %v, want {signal, 15}", i+1, o.exit)
		}
	}
	if code := sp.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestSharedSIGTERMTakesEveryTreeDown: SIGTERM to ps_port --shared does the
// same, without the port being closed.
func TestSharedSIGTERMTakesEveryTreeDown(t *testing.T) {
	sp := startShared(t)
	pids := startTrees(t, sp, 5)
	// One that ignores SIGTERM is SIGKILLed after its delay.
	sp.open(6, "sh", []string{"-c", "trap '' TERM; sleep 600 & wait"}, opt("delay_to_sigkill", int64(300)))
	pid := sp.started(6)
	pids = append(pids, pid)
	pids = append(pids, grandchildren(t, pid)...)
	sp.cmd.Process.Signal(syscall.SIGTERM)
	for i := range 6 {
		want := signal(int64(syscall.SIGTERM))
		if i == 5 {
			want = signal(int64(syscall.SIGKILL))
		}
		if o := sp.collect(int64(i+1), false, 10*time.Second); !equal(o.exit, want) {
			t.Errorf("child %d: exit %v, want %v", i+1, o.exit, want)
		}
	}
	select {
	case <-sp.waited:
	case <-time.After(10 * time.Second):
		t.Fatalf("ps_port --shared still running 10 s after SIGTERM; stderr: %s", sp.stderr)
	}
	if code := sp.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d of a child's tree survived", pid)
		}
	}
}

// TestSharedThousandSleeps: 1 000 children in one ps_port --shared, then
// all stopped at once.
func TestSharedThousandSleeps(t *testing.T) {
	if testing.Short() {
		t.Skip("1 000 children: not in -short")
	}
	sp := startShared(t, "--delay-to-sigkill", "5000")
	const n = 1000
	start := time.Now()
	for i := range n {
		sp.open(int64(i+1), "sleep", []string{"600"})
	}
	pids := make([]int, n)
	for i := range n {
		pids[i] = sp.started(int64(i + 1))
	}
	t.Logf("%d sleeps started in %v", n, time.Since(start))
	start = time.Now()
	for i := range n {
		sp.sendTerm(etf.Tuple{atom("stop"), int64(i + 1)})
	}
	// Generous for a loaded machine (0.7 s measured at a load of 30); the
	// 1 s goal is the bench's.
	deadline := time.Now().Add(2 * time.Minute)
	for i := range n {
		if o := sp.collect(int64(i+1), true, time.Until(deadline)); !equal(o.exit, signal(int64(syscall.SIGTERM))) {
			t.Fatalf("child %d: exit %v, want {signal, 15}", i+1, o.exit)
		}
	}
	t.Logf("%d sleeps stopped, every exit frame in, after %v", n, time.Since(start))
	for _, pid := range pids {
		waitGone(t, pid, 30*time.Second)
	}
	t.Logf("all %d gone after %v", n, time.Since(start))
	if code := sp.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestSharedUsage: --shared takes no program and no per-child flag.
func TestSharedUsage(t *testing.T) {
	for _, args := range [][]string{{"--shared", "cat"}, {"--shared", "--cd", "/tmp"}, {"--shared", "--stdin-limit", "-1"}} {
		p := startPort(t, args...)
		if code := p.exitCode(10 * time.Second); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage); stderr: %s", args, code, p.stderr)
		}
	}
}

// TestSharedFramesRightAfterOpen: frames sent before {started, ...} came
// back apply, in order, once the child runs; those for a child that could
// not start are dropped with it.
func TestSharedFramesRightAfterOpen(t *testing.T) {
	sp := startShared(t)
	for i := range 20 {
		id := int64(i + 1)
		sp.open(id, "cat", nil)
		for j := range 5 {
			sp.sendTerm(etf.Tuple{atom("command"), id, []byte(fmt.Sprintf("%d.%d ", id, j))})
		}
		sp.sendTerm(etf.Tuple{atom("eof"), id})
	}
	sp.open(21, "no_such_program_xyz", nil)
	sp.sendTerm(etf.Tuple{atom("command"), int64(21), []byte("x")})
	sp.sendTerm(etf.Tuple{atom("stop"), int64(21)})
	for i := range 20 {
		id := int64(i + 1)
		sp.started(id)
		o := sp.collect(id, true, 20*time.Second)
		want := fmt.Sprintf("%d.0 %d.1 %d.2 %d.3 %d.4 ", id, id, id, id, id)
		if string(o.stdout) != want || !equal(o.exit, status(0)) || len(o.others) > 0 {
			t.Errorf("child %d: stdout %q exit %v others %v; want %q, status 0", id, o.stdout, o.exit, o.others, want)
		}
	}
	if f := sp.next(21, 10*time.Second); f[0] != atom("spawn_error") {
		t.Errorf("child 21: want spawn_error, got %v", f)
	}
	if f := sp.queue(21).pop(200 * time.Millisecond); f != nil {
		t.Errorf("child 21: frames for it after its spawn_error were answered: %v", f)
	}
}

// TestSharedCgroups: children of one ps_port --shared, each in its own
// cgroup from its first instruction; a memory hog's OOM is reported under
// its id only, and every group is gone when its exit frame arrives.
func TestSharedCgroups(t *testing.T) {
	sp := startShared(t)
	hog, calm := cgroupPath(t), cgroupPath(t)
	cg := func(path string) []etf.Term {
		return []etf.Term{opt("cgroup_controllers", binList([]string{"memory", "pids"})), opt("cgroup_path", []byte(path)),
			opt("cgroup_sets", binList([]string{"memory.limit_in_bytes=33554432", "pids.max=50"}))}
	}
	sp.open(1, "sh", []string{"-c", `x=$(head -c 200000000 /dev/zero | tr '\0' a); echo survived ${#x}`}, cg(hog)...)
	sp.open(2, "sh", []string{"-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids/$(grep :pids: /proc/self/cgroup | cut -d: -f3)/pids.max"}, cg(calm)...)
	sp.started(1)
	sp.started(2)
	o := sp.collect(1, true, 60*time.Second)
	if !equal(o.exit, signal(9)) || len(o.others) != 1 || o.others[0][0] != atom("oom_killed") || o.others[0][2].(int64) < 1 {
		t.Errorf("memory hog: exit %v, other frames %v; want {oom_killed, 1, N} then {signal, 9}", o.exit, o.others)
	}
	assertGroupGone(t, hog)
	o = sp.collect(2, true, 20*time.Second)
	if !bytes.Contains(o.stdout, []byte(":memory:/"+calm+"\n")) || !bytes.HasSuffix(o.stdout, []byte("\n50\n")) ||
		!equal(o.exit, status(0)) || len(o.others) > 0 {
		t.Errorf("calm child: stdout %q, exit %v, others %v", o.stdout, o.exit, o.others)
	}
	assertGroupGone(t, calm)
}

// TestSharedStreamsOnOneAndTwoPs: ps_port --shared runs on one P unless
// $GOMAXPROCS says otherwise (internal/portcmd sharedProcs). With either,
// many children stream at once through tiny windows and small pipes'
// worth of frames: every byte arrives, in order (md5), each child's
// output before its exit, and nothing else comes.
func TestSharedStreamsOnOneAndTwoPs(t *testing.T) {
	for _, procs := range []string{"", "2"} {
		t.Run("GOMAXPROCS="+procs, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", procs)
			sp := startShared(t)
			const n = 16
			inputs := randomInputs(n, 256<<10, 4099)
			for i := range n {
				// Windows of 16 B to 256 KiB: frames of every size,
				// most of them waiting for an ack.
				window := int64(16) << (2 * (i % 8))
				sp.open(int64(i+1), "cat", nil, opt("stdio_window", window))
			}
			var wg sync.WaitGroup
			outs := make([]sharedOutput, n)
			for i := range n {
				id := int64(i + 1)
				sp.started(id)
				wg.Add(2)
				go func() {
					defer wg.Done()
					in := inputs[i]
					for off := 0; off < len(in); off += 16 << 10 {
						sp.sendTerm(etf.Tuple{atom("command"), id, in[off:min(off+16<<10, len(in))]})
					}
					sp.sendTerm(etf.Tuple{atom("eof"), id})
				}()
				go func() {
					defer wg.Done()
					outs[i] = sp.collect(id, true, 2*time.Minute)
				}()
			}
			wg.Wait()
			for i, o := range outs {
				if want := md5hex(inputs[i]); o.stdoutMD5 != want || o.stdoutN != len(inputs[i]) ||
					!equal(o.exit, status(0)) || len(o.others) > 0 {
					t.Errorf("child %d (window %d): %d bytes md5 %s before its exit %v, want %d bytes md5 %s and status 0; other frames %v",
						i+1, 16<<(2*(i%8)), o.stdoutN, o.stdoutMD5, o.exit, len(inputs[i]), want, o.others)
				}
			}
			if code := sp.waitExit(10 * time.Second); code != 0 {
				t.Errorf("ps_port --shared exited %d, want 0; stderr: %s", code, sp.stderr)
			}
		})
	}
}

// randomInputs returns n random payloads of base+i*step bytes, all of
// different lengths.
func randomInputs(n, base, step int) [][]byte {
	inputs := make([][]byte, n)
	for i := range inputs {
		inputs[i] = make([]byte, base+i*step)
		rand.Read(inputs[i])
	}
	return inputs
}
