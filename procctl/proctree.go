package procctl

import (
	"bytes"
	"os"
	"strconv"
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
