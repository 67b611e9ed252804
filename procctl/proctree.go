package procctl

import (
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// procStat is what procctl needs from /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp, session int
	zombie                   bool
	env                      envBounds // envUnknown when the line does not show them
}

// scanProcs reads /proc/*/stat for every process visible. Processes that
// vanish while it reads are skipped.
func scanProcs() []procStat {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	out := make([]procStat, 0, len(names))
	buf := make([]byte, 512)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		st, ok := readStat(pid, buf)
		if ok {
			out = append(out, st)
		}
	}
	return out
}

// orphanCandidates lists this program's children that may be orphans: the
// main thread's. Every Child is forked by the forker thread, which is never
// the main one (forker), and the kernel reparents an orphan to the first
// live thread of its subreaper, the main thread. So the listing costs
// O(orphans), not O(children), however many children this program runs.
// Children of other threads (os/exec's, reaped by its Wait) are not
// orphans. Until the forker thread is known, or if it is the main thread,
// every thread's list is read.
func orphanCandidates() (pids []int, ok bool) {
	self := os.Getpid()
	if f := int(forkerTid.Load()); f == 0 || f == self {
		return ownChildren()
	}
	b, err := readChildren("/proc/self/task/" + strconv.Itoa(self) + "/children")
	if err != nil {
		return ownChildren()
	}
	return appendPids(nil, b)
}

// readChildren reads a children file of /proc with the four system calls
// it takes (open, read until the end, close). os.ReadFile made ten: it
// offers every file it opens to Go's poller (which refuses /proc files,
// after two fcntls each way) and asks its size first. Every child's end
// reads one (the orphan rounds), and so does every SIGCHLD.
func readChildren(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// appendPids appends the pids of a children file (space-separated) to pids;
// ok is false when one is not a number.
func appendPids(pids []int, b []byte) ([]int, bool) {
	for _, f := range bytes.Fields(b) {
		pid, err := strconv.Atoi(string(f))
		if err != nil {
			return nil, false
		}
		pids = append(pids, pid)
	}
	return pids, true
}

// ownChildren lists this program's direct children, zombies included, from
// /proc/self/task/*/children: a few small reads instead of a scan of every
// process. ok is false when the kernel does not offer those files
// (CONFIG_PROC_CHILDREN) or one could not be read.
func ownChildren() (pids []int, ok bool) {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return nil, false
	}
	tids, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, false
	}
	for _, tid := range tids {
		b, err := readChildren("/proc/self/task/" + tid + "/children")
		if err != nil {
			if os.IsNotExist(err) {
				// The thread exited meanwhile, or the file does not exist at all.
				if _, serr := os.Stat("/proc/self/task/" + tid); serr == nil {
					return nil, false
				}
				continue
			}
			return nil, false
		}
		if pids, ok = appendPids(pids, b); !ok {
			return nil, false
		}
	}
	return pids, true
}

func readStat(pid int, buf []byte) (procStat, bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	n, _ := f.Read(buf)
	f.Close()
	return parseStat(pid, buf[:n])
}

// parseStat parses "pid (comm) S ppid pgrp session ...". comm may hold spaces
// and parentheses, so fields are taken after the last ')'.
func parseStat(pid int, b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, false
	}
	fields := bytes.Fields(b[i+2:])
	if len(fields) < 4 {
		return procStat{}, false
	}
	st := procStat{pid: pid, zombie: fields[0][0] == 'Z' || fields[0][0] == 'X'}
	var err error
	if st.ppid, err = strconv.Atoi(string(fields[1])); err != nil {
		return procStat{}, false
	}
	if st.pgrp, err = strconv.Atoi(string(fields[2])); err != nil {
		return procStat{}, false
	}
	if st.session, err = strconv.Atoi(string(fields[3])); err != nil {
		return procStat{}, false
	}
	st.env = envUnknown
	const envStart = 50 - 3 // fields 50 and 51, since Linux 3.5
	if len(fields) > envStart+1 {
		start, err1 := strconv.ParseUint(string(fields[envStart]), 10, 64)
		end, err2 := strconv.ParseUint(string(fields[envStart+1]), 10, 64)
		if err1 == nil && err2 == nil {
			st.env = envBounds{start, end}
		}
	}
	return st, true
}

// newMarker returns a marker unique to one child: this program's instance
// id, a dot and a random part.
func newMarker() string {
	var b [8]byte
	randomRead(b[:])
	return instanceID() + "." + hex.EncodeToString(b[:])
}

// withMarker returns env with MarkerEnv set to marker (and any inherited
// value dropped).
func withMarker(env []string, marker string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, MarkerEnv+"=") {
			out = append(out, kv)
		}
	}
	return append(out, MarkerEnv+"="+marker)
}

// orphanPids lists this program's children that no Child owns: orphans
// reparented to it, the subreaper. The caller holds registry's lock.
func orphanPids() []int {
	kids, ok := orphanCandidates()
	if !ok {
		// No children files (CONFIG_PROC_CHILDREN): a scan of every process.
		self := os.Getpid()
		kids = kids[:0]
		for _, p := range scanProcs() {
			if p.ppid == self {
				kids = append(kids, p.pid)
			}
		}
	}
	out := kids[:0]
	for _, pid := range kids {
		if registry.children[pid] == nil {
			out = append(out, pid)
		}
	}
	return out
}

// orphanRounds lists, reaps and signals the orphans of every terminating
// child together. A child asks for a round that starts after its request
// (run); requests that arrive while a round is under way share the next
// one, so any number of terminations at the same moment cost one listing
// of this program's children per round.
type orphanRounds struct {
	started atomic.Uint64
	mu      sync.Mutex // held for a whole round
	done    uint64     // the last round finished (guarded by mu)

	claimMu sync.Mutex
	claims  map[string]*Child // terminating children by marker
	sweeps  map[*Child]bool   // terminating children with Spec.Sweep: they also claim every orphan no marker claims
}

var rounds = &orphanRounds{claims: make(map[string]*Child), sweeps: make(map[*Child]bool)}

// Bits of Child.orphanReq: what its orphans get in the next round.
const (
	reqTERM = 1 << iota
	reqKILL
)

// run registers c as claiming its orphans, has them sent sig in a round
// (0: only counted) and returns how many of them were alive in it.
func (r *orphanRounds) run(c *Child, sig syscall.Signal) int {
	switch sig {
	case syscall.SIGTERM:
		c.orphanReq.Or(reqTERM)
	case syscall.SIGKILL:
		c.orphanReq.Or(reqKILL)
	}
	r.claimMu.Lock()
	if !c.unclaimed {
		r.claims[c.marker] = c
		if c.spec.Sweep {
			r.sweeps[c] = true
		}
	}
	r.claimMu.Unlock()
	need := r.started.Load() + 1
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done < need {
		r.round()
	}
	return c.orphansSeen
}

// forget ends c's claim on orphans, for good.
func (r *orphanRounds) forget(c *Child) {
	r.claimMu.Lock()
	c.unclaimed = true
	if r.claims[c.marker] == c {
		delete(r.claims, c.marker)
	}
	delete(r.sweeps, c)
	r.claimMu.Unlock()
}

// round lists this program's orphans once, reaps the dead ones and
// counts and signals the live ones of each claiming child. Orphans are
// signalled under registry's lock: only this program reaps them, so their
// pids cannot have been reused.
func (r *orphanRounds) round() {
	r.done = r.started.Add(1)
	r.claimMu.Lock()
	claims := make(map[string]*Child, len(r.claims))
	var sweep *Child
	for m, c := range r.claims {
		claims[m] = c
	}
	for c := range r.sweeps {
		sweep = c
	}
	for _, c := range claims { // sweepers are claimants too
		c.prepareRound()
	}
	r.claimMu.Unlock()

	registry.Lock()
	defer registry.Unlock()
	for _, pid := range orphanPids() {
		if reapIfDead(pid) {
			continue
		}
		owner := sweep
		if len(claims) > 0 {
			if c := claims[orphanMarker(pid)]; c != nil {
				owner = c
			}
		}
		if owner == nil {
			continue
		}
		owner.orphansSeen++
		if owner.roundSig != 0 {
			unix.Kill(pid, owner.roundSig)
			unix.Kill(-pid, owner.roundSig) // its group, when it leads one (pid is reserved: it is not reaped)
		}
	}
}

// prepareRound resets c's count and takes the signal its orphans get in
// the round starting.
func (c *Child) prepareRound() {
	c.orphansSeen = 0
	c.roundSig = 0
	switch req := c.orphanReq.Swap(0); {
	case req&reqKILL != 0:
		c.roundSig = syscall.SIGKILL
	case req&reqTERM != 0:
		c.roundSig = syscall.SIGTERM
	}
}

// hasEnvPrefix reports whether an entry of pid's environment starts with
// prefix (read by readEnviron; a process exec'ing all along has none).
func hasEnvPrefix(pid int, prefix []byte) bool {
	b, _ := readEnviron(pid)
	for _, e := range bytes.Split(b, []byte{0}) {
		if bytes.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}
