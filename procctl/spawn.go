package procctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/protonstream/ps_port/internal/limits"
)

// Stdio says where one of the child's standard streams goes.
type Stdio int

const (
	// Pipe connects the stream to ps_port: stdin is fed by Child.Write,
	// stdout and stderr are read and handed to the Sink.
	Pipe Stdio = iota
	// Null connects the stream to /dev/null.
	Null
	// Inherit gives the child ps_port's own stream (for stderr: logs).
	Inherit
	// ToStdout sends stderr into the stdout pipe (only for Spec.Stderr).
	ToStdout
)

// Spec describes a child to start.
type Spec struct {
	Path string   // program: an absolute or relative path, or a name looked up in PATH
	Args []string // arguments after argv[0]
	Arg0 string   // argv[0]; Path when empty
	Dir  string   // working directory; ps_port's when empty
	Env  []string // the whole environment, "KEY=VALUE"; ps_port's when nil

	// Exec, when set, is the program already opened (O_PATH will do) and
	// checked by the caller: the child runs this very file, whatever Path
	// names by the time it starts (execfd.go). Path is then only used to
	// name the program in errors and, with Arg0 empty, as argv[0]; the
	// program's comm is Path's last component. Start does not close Exec.
	Exec *os.File

	// Credential, when not nil, is the uid/gid the child runs as. See
	// LookupCredential.
	Credential *syscall.Credential

	Stdin, Stdout, Stderr Stdio

	// Window is the flow-control window in bytes (DefaultWindow when 0).
	Window int
	// MaxRead is the most one read of an output pipe takes, and so the
	// largest Sink call (64 KiB when 0 or more). Node mode keeps its
	// messages under the size at which ergo fragments them.
	MaxRead int
	// DelayToSIGKILL is how long Terminate waits after SIGTERM before
	// SIGKILL; 0 sends SIGKILL at once. DefaultDelayToSIGKILL is the usual.
	DelayToSIGKILL time.Duration
	// Placement puts the child in a cgroup before its first instruction.
	Placement Placement
	// Sweep makes termination also kill every orphan reparented to this
	// program that no other terminating Child claims by its marker: right
	// for a program that runs one child (port mode), where every orphan came
	// from that child, even one that dropped MarkerEnv from its environment.
	// Without Sweep, orphans are claimed by the marker they inherited.
	Sweep bool
	// Started, when set, is called with the child's pid after the fork and
	// before any of its output reaches the Sink.
	Started func(pid int)
	// StdinWritten, when set, is called by the goroutine that writes the
	// child's stdin each time it has written a queued buffer to the pipe
	// (not for bytes Write put in the pipe itself), without locks held.
	// Child.StdinWritten says how many bytes reached the pipe so far.
	StdinWritten func()
	// Logf gets the warnings nobody is told otherwise (a tree that
	// survives SIGKILL, output that cannot be delivered, a failed reap),
	// one line each, without a newline. When nil they go to stderr as
	// ps_port's own lines ("ps_port: ...").
	Logf func(format string, args ...any)
}

// DefaultWindow is the default flow-control window, from the limits table
// the shim shares (internal/limits). See docs/protocol.md for how it was
// chosen.
var DefaultWindow = limits.StdioWindowDefault

// MarkerEnv is set in every child's environment to a value unique to that
// child, which starts with this program's instance id (see Register). A
// descendant that left the child's process group, session and parent tree
// (setsid, then its parent died) is reparented to this program, the
// subreaper; the marker it inherited still says whose it is, so terminating
// the child takes it down too. When this program dies without cleaning up
// (SIGKILL, a crash), the next one finds what is left by the instance id.
const MarkerEnv = "PS_PORT_CHILD"

// DefaultDelayToSIGKILL is how long termination waits after SIGTERM.
const DefaultDelayToSIGKILL = 500 * time.Millisecond

// SpawnError is a child that could not be started.
type SpawnError struct {
	Reason string // lower-case errno name or one of enoent, eacces, baduser, badgroup, badarg
	Path   string
	Err    error
}

func (e *SpawnError) Error() string {
	var de *DirError
	if errors.As(e.Err, &de) {
		return de.Error() // says which path it is, not "cannot start"
	}
	if e.Reason == "baduser" || e.Reason == "badgroup" {
		// Path is the user or group (LookupCredential does not know the
		// program); Err names it as such.
		return fmt.Sprintf("cannot start the program as the %s asked for: %v", e.Reason[3:], e.Err)
	}
	return fmt.Sprintf("cannot start %q: %v", e.Path, e.Err)
}

// descriptorAdvice says what to do when a start failed for want of file
// descriptors, the first limit a shared ps_port with many children meets.
func descriptorAdvice(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		limit := "its RLIMIT_NOFILE"
		var rl unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
			limit = fmt.Sprintf("its RLIMIT_NOFILE (%d)", rl.Cur)
		}
		return " (ps_port has as many file descriptors open as " + limit + " allows, and a child " +
			"with stdin, stdout and stderr piped holds 8 of them: raise the hard limit where the VM " +
			"starts, e.g. `ulimit -Hn` or LimitNOFILE= in its systemd unit, or run fewer children at once)"
	case errors.Is(err, syscall.ENFILE):
		return " (the system is out of file descriptors: raise fs.file-max with sysctl, or run fewer programs)"
	}
	return ""
}

func (e *SpawnError) Unwrap() error { return e.Err }

func spawnError(path string, err error) *SpawnError {
	reason := "badarg"
	var errno syscall.Errno
	if errors.As(err, &errno) {
		reason = strings.ToLower(unix.ErrnoName(errno))
		if reason == "" {
			reason = "errno" + strconv.Itoa(int(errno))
		}
	}
	if advice := descriptorAdvice(err); advice != "" {
		err = fmt.Errorf("%w%s", err, advice)
	}
	return &SpawnError{Reason: reason, Path: path, Err: err}
}

// LookupCredential resolves a uid and gid given as numbers or names; either
// may be empty. A user given without a group runs with that user's primary
// group. Supplementary groups are dropped.
func LookupCredential(uid, gid string) (*syscall.Credential, error) {
	if uid == "" && gid == "" {
		return nil, nil
	}
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	// Only root can drop its supplementary groups (setgroups needs
	// CAP_SETGID); any other user can only run children as itself, and
	// with setgroups even that failed with EPERM.
	cred.NoSetGroups = os.Geteuid() != 0
	if uid != "" {
		u, err := lookupUser(uid)
		if err != nil {
			return nil, &SpawnError{Reason: "baduser", Path: uid, Err: err}
		}
		n, _ := strconv.ParseUint(u.Uid, 10, 32)
		cred.Uid = uint32(n)
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			cred.Gid = uint32(g)
		} else if gid == "" {
			// Never this program's own group (root's, often) by default.
			return nil, &SpawnError{Reason: "baduser", Path: uid,
				Err: fmt.Errorf("uid %d has no passwd entry, so no group of its own: give a gid too", n)}
		}
	}
	if gid != "" {
		g, err := lookupGroup(gid)
		if err != nil {
			return nil, &SpawnError{Reason: "badgroup", Path: gid, Err: err}
		}
		cred.Gid = g
	}
	return cred, nil
}

// LookupID is a user's (group false) or a group's (group true) id, given
// as a number or a name, as LookupCredential reads them.
func LookupID(s string, group bool) (uint32, error) {
	if group {
		return lookupGroup(s)
	}
	u, err := lookupUser(s)
	if err != nil {
		return 0, err
	}
	n, _ := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), nil
}

func lookupUser(s string) (*user.User, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		u, err := user.LookupId(s)
		if err != nil { // a bare number need not have a passwd entry; it has no group then
			return &user.User{Uid: strconv.FormatUint(n, 10)}, nil
		}
		return u, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return nil, fmt.Errorf("no such user %q: give a user name from /etc/passwd or a numeric uid", s)
	}
	return u, nil
}

func lookupGroup(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("no such group %q: give a group name from /etc/group or a numeric gid", s)
	}
	n, _ := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(n), nil
}

// Resolve finds the program like execvp would, with the child's PATH (from
// env, or this program's when env is nil) and working directory dir, and
// returns its absolute path. Relative PATH entries are skipped: what they
// name would depend on the working directory.
func Resolve(program, dir string, env []string) (string, error) {
	if program == "" {
		return "", &SpawnError{Reason: "badarg", Path: program, Err: errors.New("empty program name")}
	}
	if strings.Contains(program, "/") {
		if filepath.IsAbs(program) {
			return filepath.Clean(program), nil
		}
		base := dir
		if !filepath.IsAbs(base) {
			wd, err := os.Getwd()
			if err != nil {
				return "", spawnError(program, err)
			}
			base = filepath.Join(wd, base)
		}
		return filepath.Join(base, program), nil
	}
	pathEnv := os.Getenv("PATH")
	if env != nil {
		pathEnv = ""
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				pathEnv = v
			}
		}
	}
	denied := false
	for _, d := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, program)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if st.Mode()&0o111 == 0 {
			denied = true
			continue
		}
		return p, nil
	}
	if denied {
		return "", &SpawnError{Reason: "eacces", Path: program,
			Err: fmt.Errorf("%w: found in PATH but not executable; chmod +x it", syscall.EACCES)}
	}
	return "", &SpawnError{Reason: "enoent", Path: program,
		Err: fmt.Errorf("%w: not found in PATH (%s); give an absolute path or fix PATH", syscall.ENOENT, pathEnv)}
}

// DirError is a working directory (cd) that is not an existing directory.
type DirError struct {
	Dir, Program string
	Err          error // why: ENOENT, ENOTDIR, EACCES...
}

func (e *DirError) Error() string {
	return fmt.Sprintf("working directory (cd) %q: %v; %q was not started: give as cd a directory that exists", e.Dir, e.Err, e.Program)
}

func (e *DirError) Unwrap() error { return e.Err }

// CheckDir reports a working directory dir ("" for none) that is not an
// existing directory: a SpawnError (reason enoent, also for a path that is
// not a directory: it is what callers match on) wrapping a DirError. Start
// checks its Spec.Dir with it; a transport that must check earlier (node
// mode, before --allow) calls it itself, so the check and its words are
// the same in every mode.
func CheckDir(program, dir string) error {
	if dir == "" {
		return nil
	}
	st, err := os.Stat(dir)
	var why error = syscall.ENOTDIR
	switch {
	case err != nil:
		why = err
		var pe *fs.PathError
		if errors.As(err, &pe) {
			why = pe.Err // the message names the path once
		}
	case st.IsDir():
		return nil
	}
	return &SpawnError{Reason: "enoent", Path: program, Err: &DirError{Dir: dir, Program: program, Err: why}}
}

// registry holds every live child. Forking and registering happen under its
// lock, so the orphan reaper never reaps a child before its owner knows it.
var registry = struct {
	sync.Mutex
	children map[int]*Child
	markers  map[int]string // MarkerEnv of each orphan read so far, until it is reaped
}{children: make(map[int]*Child), markers: make(map[int]string)}

type forkRequest struct {
	run  func() (int, error)
	done chan forkResult
}

type forkResult struct {
	pid int
	err error
}

var (
	forkerOnce sync.Once
	forks      chan forkRequest
)

// forker runs every fork on one OS thread that never exits, so that the
// parent-death signal fires when the program dies, not when the Go runtime
// retires the thread that happened to fork.
func forker() {
	runtime.LockOSThread() // never unlocked: this thread lives as long as the program
	if unix.Gettid() == unix.Getpid() {
		// The main thread: orphans are reparented to it, and the children
		// lists are read apart for that (orphanPids). Hand over to a
		// goroutine on another thread (it cannot get this one, locked here)
		// and give this one back once that one holds its own.
		moved := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			forkerTid.Store(int32(unix.Gettid()))
			close(moved)
			serveForks()
		}()
		<-moved
		runtime.UnlockOSThread()
		return
	}
	forkerTid.Store(int32(unix.Gettid()))
	serveForks()
}

// forkerTid is the forker thread's id: every Child is in its children list.
var forkerTid atomic.Int32

func serveForks() {
	for req := range forks {
		pid, err := req.run()
		req.done <- forkResult{pid, err}
	}
}

// onForkerThread runs fn on the forker thread.
func onForkerThread(fn func() (int, error)) (int, error) {
	forkerOnce.Do(func() {
		forks = make(chan forkRequest)
		go forker()
	})
	done := make(chan forkResult, 1)
	forks <- forkRequest{run: fn, done: done}
	r := <-done
	return r.pid, r.err
}
