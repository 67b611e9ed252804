package blackbox

// The harness's view of processes, from /proc: is a pid alive, what is
// below it, waiting until a set is gone, and what one uses (memory, file
// descriptors, threads). Every wait takes the bound the behaviour promises
// and allows testSlack() on top of it.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testSlack is how late a timing bound in a test may be on a loaded machine
// (CI machines are shared): PS_TEST_SLACK_MS, default 5000 ms. Tests check
// that something happens; how fast is measured by the bench.
func testSlack() time.Duration {
	if ms, err := strconv.Atoi(os.Getenv("PS_TEST_SLACK_MS")); err == nil && ms >= 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return 5 * time.Second
}

// waitFor polls cond until it holds and returns how long that took; after
// bound (plus testSlack) it fails the test, saying what it waited for (what
// is called then, so it can describe the state seen last).
func waitFor(t testing.TB, bound time.Duration, what func() string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(bound + testSlack())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", time.Since(start).Round(time.Millisecond), what())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// waitLog waits until a process's stderr holds want.
func waitLog(t testing.TB, log fmt.Stringer, bound time.Duration, want string) {
	t.Helper()
	waitFor(t, bound, func() string { return fmt.Sprintf("no %q in the log:\n%s", want, log) },
		func() bool { return strings.Contains(log.String(), want) })
}

// proc is one line of /proc/PID/stat.
type proc struct {
	pid, ppid int
	state     byte
	comm      string
}

// readProc reads /proc/PID/stat; ok is false when pid is gone.
func readProc(pid int) (p proc, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return p, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return p, false
	}
	f := strings.Fields(s[end+2:])
	if len(f) < 2 {
		return p, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return proc{pid: pid, ppid: ppid, state: f[0][0], comm: s[open+1 : end]}, true
}

// procScan lists every process visible in /proc.
func procScan() []proc {
	ents, _ := os.ReadDir("/proc")
	out := make([]proc, 0, len(ents))
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	p, ok := readProc(pid)
	return ok && p.state != 'Z' && p.state != 'X'
}

// descendantsOf lists pid and every process below it.
func descendantsOf(pid int) []int {
	children := map[int][]int{}
	for _, p := range procScan() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// describe names processes for a failure message: "pid(comm, ppid, state)".
func describe(pids []int) string {
	var parts []string
	for _, pid := range pids {
		p, _ := readProc(pid)
		parts = append(parts, fmt.Sprintf("%d(%s, ppid %d, %c)", pid, p.comm, p.ppid, p.state))
	}
	return strings.Join(parts, " ")
}

// waitGone waits until pid is gone; see waitAllGone.
func waitGone(t testing.TB, pid int, bound time.Duration) time.Duration {
	t.Helper()
	return waitAllGone(t, []int{pid}, bound)
}

// waitAllGone waits until none of pids is alive and returns how long that
// took; it fails the test, naming the survivors, after bound + testSlack.
// It polls every 2 ms (10 ms for many pids, cheaper while they are being
// killed on a 2-core machine).
func waitAllGone(t testing.TB, pids []int, bound time.Duration) time.Duration {
	t.Helper()
	poll := 2 * time.Millisecond
	if len(pids) > 16 {
		poll = 10 * time.Millisecond
	}
	start := time.Now()
	for {
		var left []int
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > bound+testSlack() {
			t.Fatalf("still alive %v later (bound %v + slack): %s", time.Since(start).Round(time.Millisecond), bound, describe(left))
		}
		pids = left
		time.Sleep(poll)
	}
}

// killAll SIGKILLs the pids still alive (cleanup after a failure).
func killAll(pids []int) {
	for _, p := range pids {
		if alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// procStatus is the value of one field of /proc/PID/status in KiB, 0 when
// the process is gone.
func procStatusKiB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}

// rssKiB is pid's resident set size (0 when it is gone).
func rssKiB(pid int) int { return procStatusKiB(pid, "VmRSS") }

// rssOf is rssKiB for a process that must be running.
func rssOf(t testing.TB, pid int) int {
	t.Helper()
	n := rssKiB(pid)
	if n == 0 {
		t.Fatalf("no VmRSS for %d (gone?)", pid)
	}
	return n
}

// rssParts is pid's anonymous and file-backed RSS, for the log.
func rssParts(pid int) string {
	return fmt.Sprintf("RssAnon: %d kB, RssFile: %d kB", procStatusKiB(pid, "RssAnon"), procStatusKiB(pid, "RssFile"))
}

// settledRSS samples pid's RSS for up to d and returns the lowest value
// seen: the Go runtime gives memory back to the OS gradually (its
// scavenger), so one sample right after a burst says little.
func settledRSS(pid int, d time.Duration) int {
	low := rssKiB(pid)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		if r := rssKiB(pid); r > 0 && r < low {
			low = r
		}
	}
	return low
}

// fdCount counts the open file descriptors of pid.
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of %d: %v", pid, err)
	}
	return len(ents)
}

// threadCount is the number of threads of pid.
func threadCount(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(ents)
}

// parseInts parses an Erlang list of integers as printed by ~0tp.
func parseInts(t testing.TB, s string) []int {
	t.Helper()
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		t.Fatalf("want a list of integers, got %.200s", s)
	}
	var out []int
	for _, f := range strings.Split(strings.Trim(s, "[]"), ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("want a list of integers, got %.200s", s)
		}
		out = append(out, n)
	}
	return out
}
