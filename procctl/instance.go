package procctl

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/internal/stderrlog"
	"golang.org/x/sys/unix"
)

// A program that dies without cleaning up (SIGKILL, a crash, the OOM
// killer) loses its children by their parent-death signal, but not what
// they started: grandchildren are reparented to init and run on. So every
// program that starts children registers in a state directory, one entry
// per live program, and the next program that starts finds the entries of
// dead ones and kills what they left, by the instance id every marker
// (MarkerEnv) starts with:
//
//	/run/ps_port/live/<pid>.<instance id>   held with flock(LOCK_EX) for life
//
// A live program's entry is locked (the kernel drops the lock when the
// holder dies, however it dies), so a program never touches the children of
// a live one. A start costs a directory listing and, per live entry, a
// kill(pid, 0), and lock attempts on at most 16 of them (in the background,
// while the first child starts); the scan of every process's environment
// happens only when a dead entry was found. A pid that is gone says its
// program is dead; a pid that lives says nothing (pids are reused, pid_max
// may be 32768): the lock does.

// StateDir is where live programs register (see Register). A program that
// cannot write it (not root) uses a directory of its own user in the
// system's temporary directory.
var StateDir = "/run/ps_port/live"

var instance struct {
	once sync.Once
	id   string
}

// instanceID is this program's id: random, 16 hex digits. Every marker
// starts with it and a dot.
func instanceID() string {
	instance.once.Do(func() {
		var b [8]byte
		randomRead(b[:])
		instance.id = hex.EncodeToString(b[:])
	})
	return instance.id
}

// randomRead fills b from the kernel's random source: getrandom(2), which
// crypto/rand reads too, without crypto/rand's first-use setup and without
// linking Go's cryptography (about 14 packages with init work) into a
// binary that starts once per isolated child; /dev/urandom on a kernel
// without getrandom.
func randomRead(b []byte) {
	for len(b) > 0 {
		n, err := unix.Getrandom(b, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			f, ferr := os.Open("/dev/urandom")
			if ferr == nil {
				_, ferr = io.ReadFull(f, b)
				f.Close()
			}
			if ferr != nil {
				panic(fmt.Sprintf("procctl: no random source: getrandom: %v; /dev/urandom: %v", err, ferr))
			}
			return
		}
		b = b[n:]
	}
}

// Registration is this program's entry in StateDir.
type Registration struct {
	f     *os.File
	path  string
	swept chan struct{} // closed when the look for dead programs is over
}

// Register records this program as live in StateDir and returns at once;
// in the background (and Close waits for it) it then looks for entries of programs that died without
// cleaning up and, if it finds any, SIGKILLs every process that carries one
// of their markers and removes their entries, then calls onDead (for
// example to reclaim their cgroups) with the number of dead programs.
// Call it before starting the first child, and Close the registration when
// every child's tree is gone. Without a writable state directory it
// returns an error and nothing is swept. What a sweep did is reported to
// logf (stderr, as ps_port's own line, when nil).
func Register(onDead func(dead int), logf func(format string, args ...any)) (*Registration, error) {
	r, err := register(StateDir)
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
		r, err = register(filepath.Join(os.TempDir(), "ps_port-"+strconv.Itoa(os.Geteuid()), "live"))
	}
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(r.swept)
		if n := sweepDead(filepath.Dir(r.path), r.path, stderrlog.Or(logf)); n > 0 && onDead != nil {
			onDead(n)
		}
	}()
	return r, nil
}

// register creates and locks this program's entry in dir. It is written
// under a temporary name and renamed once locked, so nobody ever sees it
// unlocked.
func register(dir string) (*Registration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	// Named by the instance id, unique: no retry loop (os.CreateTemp),
	// and opened without os.OpenFile's attempt to put a regular file in
	// Go's poller.
	tmpName := filepath.Join(dir, ".new-"+instanceID())
	fd, err := unix.Open(tmpName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", &os.PathError{Op: "open", Path: tmpName, Err: err})
	}
	tmp := os.NewFile(uintptr(fd), tmpName)
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("state directory: locking %s: %w", tmp.Name(), err)
	}
	path := filepath.Join(dir, strconv.Itoa(os.Getpid())+"."+instanceID())
	if err := os.Rename(tmp.Name(), path); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return &Registration{f: tmp, path: path, swept: make(chan struct{})}, nil
}

// Close waits until the look for dead programs that Register started is
// over (a short-lived program must not cut a sweep short), then removes the
// entry: call it once every child's tree is gone. It is unlinked before it
// is unlocked, so a program that locks it in between sees an unlinked file
// and leaves it alone.
func (r *Registration) Close() {
	if r == nil {
		return
	}
	<-r.swept
	os.Remove(r.path)
	r.f.Close()
}

// lockSample is how many entries of live pids a start tries the lock of
// when there are more (see sweepDead).
const lockSample = 16

// sweepDead finds the entries in dir of programs that are dead, kills what
// they left and removes the entries. It returns how many it found.
func sweepDead(dir, self string, logf func(string, ...any)) int {
	names, err := readNames(dir)
	if err != nil {
		return 0
	}
	var ids []string
	var held []*os.File
	defer func() {
		for _, f := range held {
			os.Remove(f.Name())
			f.Close()
		}
	}()
	// An entry whose pid is gone is dead; one whose pid lives belongs to a
	// live program or to a dead one whose pid was reused. Only the lock
	// tells, and trying it costs a file open: every such entry is tried when
	// there are few, a random sample of lockSample when there are many (1 000
	// isolated ps_ports: 7 ms a start for all of them), so a dead program
	// whose pid was reused is found within a few starts.
	var alive []string
	for _, name := range names {
		pid, id, ok := strings.Cut(name, ".")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 || id == "" || filepath.Join(dir, name) == self {
			continue
		}
		if unix.Kill(n, 0) != unix.ESRCH {
			alive = append(alive, name)
			continue
		}
		if f := lockDead(filepath.Join(dir, name)); f != nil {
			ids, held = append(ids, id), append(held, f)
		}
	}
	if len(alive) > lockSample {
		mrand.Shuffle(len(alive), func(i, j int) { alive[i], alive[j] = alive[j], alive[i] })
		alive = alive[:lockSample]
	}
	for _, name := range alive {
		if f := lockDead(filepath.Join(dir, name)); f != nil {
			_, id, _ := strings.Cut(name, ".")
			ids, held = append(ids, id), append(held, f)
		}
	}
	if len(ids) == 0 {
		return 0
	}
	start := time.Now()
	killed := killMarked(ids)
	logf("%d ps_port(s) died without cleaning up (%s); killed the %d process(es) they left, in %v",
		len(ids), strings.Join(ids, ", "), killed, time.Since(start).Round(time.Millisecond))
	return len(ids)
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	out := names[:0]
	for _, n := range names {
		if !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	return out, err
}

// lockDead locks the entry at path if its owner is dead and returns it
// open, or nil when the owner lives or another program took it first.
func lockDead(path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil // held: its program lives, or another sweeper has it
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Nlink == 0 {
		f.Close()
		return nil // removed by its owner or a sweeper meanwhile
	}
	return f
}

// killMarked SIGKILLs every process whose environment carries a marker of
// one of the instance ids, until a scan finds none (a process may fork
// between a scan and its kill; its child inherits the marker). Each process
// is opened as a pidfd before its environment is read and signalled through
// that pidfd, so a pid reused meanwhile is never hit. It returns how many
// processes it killed.
func killMarked(ids []string) int {
	prefixes := make([][]byte, len(ids))
	for i, id := range ids {
		prefixes[i] = []byte(MarkerEnv + "=" + id + ".")
	}
	self := os.Getpid()
	killed := make(map[int]bool)
	for round := 0; round < 50; round++ {
		found := 0
		for _, p := range scanProcs() {
			if p.zombie || p.pid == self {
				continue
			}
			fd, err := unix.PidfdOpen(p.pid, 0)
			if err != nil {
				continue
			}
			for _, pre := range prefixes {
				if hasEnvPrefix(p.pid, pre) {
					if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
						found++
						killed[p.pid] = true
					}
					break
				}
			}
			unix.Close(fd)
		}
		if found == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return len(killed)
}
