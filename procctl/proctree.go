package procctl

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
)

// procStat is what procctl needs from /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp, session int
	zombie                   bool
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
		b, err := os.ReadFile("/proc/self/task/" + tid + "/children")
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
		for _, f := range bytes.Fields(b) {
			pid, err := strconv.Atoi(string(f))
			if err != nil {
				return nil, false
			}
			pids = append(pids, pid)
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
	return st, true
}

// descendants returns the pids below root in the parent tree (not root itself).
func descendants(procs []procStat, root int) map[int]bool {
	children := make(map[int][]int, len(procs))
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	out := make(map[int]bool)
	stack := append([]int(nil), children[root]...)
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if out[pid] {
			continue
		}
		out[pid] = true
		stack = append(stack, children[pid]...)
	}
	return out
}

func newMarker() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
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

// markedOrphans lists the orphans reparented to this program (self) whose
// environment carries c's marker, with everything below them.
func (c *Child) markedOrphans(procs []procStat, self int) map[int]bool {
	want := []byte(MarkerEnv + "=" + c.marker)
	registry.Lock()
	live := make(map[int]bool, len(registry.children))
	for pid := range registry.children {
		live[pid] = true
	}
	registry.Unlock()
	out := make(map[int]bool)
	for _, p := range procs {
		if p.ppid != self || live[p.pid] || p.zombie || !hasEnv(p.pid, want) {
			continue
		}
		out[p.pid] = true
		for d := range descendants(procs, p.pid) {
			out[d] = true
		}
	}
	return out
}

// hasEnv reports whether pid's initial environment holds the entry kv.
func hasEnv(pid int, kv []byte) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, e := range bytes.Split(b, []byte{0}) {
		if bytes.Equal(e, kv) {
			return true
		}
	}
	return false
}
