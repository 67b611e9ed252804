package node

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"syscall"
	"time"
)

// markerKey is set in every child's environment to a value unique to that
// child. procctl takes down a child's process group, session and
// descendants; a process that left all three (setsid, then its parent died)
// is reparented to ps_port, the subreaper, and only the marker it inherited
// still says whose it is. Port mode does not need this (ps_port runs one
// child there and sweeps every orphan); node mode runs many.
const markerKey = "PS_PORT_CHILD"

func newMarker() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type procInfo struct {
	pid, ppid int
	start     uint64 // start time in clock ticks since boot: tells a recycled pid
}

func scan() []procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	out := make([]procInfo, 0, len(names))
	buf := make([]byte, 1024)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if p, ok := readProc(pid, buf); ok {
			out = append(out, p)
		}
	}
	return out
}

// readProc reads pid's parent and start time from /proc/PID/stat, skipping
// zombies.
func readProc(pid int, buf []byte) (procInfo, bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	n, _ := f.Read(buf)
	f.Close()
	b := buf[:n]
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procInfo{}, false
	}
	fields := bytes.Fields(b[i+2:])
	// state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
	// utime stime cutime cstime priority nice threads itrealvalue starttime
	if len(fields) < 20 || fields[0][0] == 'Z' || fields[0][0] == 'X' {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(string(fields[1]))
	start, err2 := strconv.ParseUint(string(fields[19]), 10, 64)
	if err1 != nil || err2 != nil {
		return procInfo{}, false
	}
	return procInfo{pid: pid, ppid: ppid, start: start}, true
}

// hasMarker reports whether pid's environment holds markerKey=marker.
func hasMarker(pid int, want []byte) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// strays lists the processes that carry marker and were orphaned to this
// program, with everything below them. skip holds pids of live children
// (each has its own marker anyway).
func strays(marker string) []procInfo {
	self := os.Getpid()
	procs := scan()
	kids := make(map[int][]procInfo, len(procs))
	for _, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], p)
	}
	want := []byte(markerKey + "=" + marker)
	var out []procInfo
	for _, p := range kids[self] {
		if !hasMarker(p.pid, want) {
			continue
		}
		stack := []procInfo{p}
		for len(stack) > 0 {
			q := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			out = append(out, q)
			stack = append(stack, kids[q.pid]...)
		}
	}
	return out
}

// sameProc reports whether p still is the process it was when scanned.
func sameProc(p procInfo) bool {
	q, ok := readProc(p.pid, make([]byte, 1024))
	return ok && q.start == p.start
}

// sweep takes down the child's strays: SIGTERM, then SIGKILL at deadline
// (at once when it has passed), until none is left. It returns how many it
// found.
func sweep(marker string, deadline time.Time) int {
	found := strays(marker)
	if len(found) == 0 {
		return 0
	}
	for _, p := range found {
		if sameProc(p) {
			syscall.Kill(p.pid, syscall.SIGTERM)
		}
	}
	for time.Now().Before(deadline) && len(strays(marker)) > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < 1000; i++ {
		left := strays(marker)
		if len(left) == 0 {
			break
		}
		for _, p := range left {
			if sameProc(p) {
				syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return len(found)
}
