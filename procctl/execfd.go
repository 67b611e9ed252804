package procctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Running an open file (Spec.Exec): the child execs the very file its
// caller opened and checked, so no rename or symlink swap between the
// check and the exec can change what runs.
//
// The child execs the magic link /proc/self/fd/N, which the kernel follows
// to the open file itself, not to a name. Go's fork cannot call execveat,
// so this is fexecve's way, with two details:
//
//   - A program's comm (ps, top, pgrep, /proc/PID/comm) is the last
//     component of the path execve was given, which would be "N". The
//     child execs instead a symlink named as the program, DIR/N/NAME ->
//     /proc/self/fd/N, in a directory of this process's own that nobody
//     else can write (execLinks). The kernel follows it in the child, so it
//     still lands on the open file. A link names a descriptor number, not
//     a file, so one is made per number and name and kept for the next
//     child that runs a program of that name from that number (making and
//     removing a directory and a link per child was a quarter of a node's
//     CPU per open of `true`).
//   - A "#!" script is read again by its interpreter, by the path the
//     kernel hands it (DIR/NAME), so the descriptor must survive the exec:
//     it becomes the child's fd 3, and the link points to /proc/self/fd/3.
//     The interpreter (and the script) see that fd 3; $0 is DIR/3/NAME. Any
//     other program gets the descriptor close-on-exec: it is gone once the
//     program runs.

// execLinks is the directory of this process's exec links.
var execLinks struct {
	once sync.Once
	dir  string
	err  error

	mu    sync.Mutex
	links map[string]string // "N/NAME": the link DIR/N/NAME to /proc/self/fd/N
}

// execLinkDir makes execLinks' directory on first use: mode 0711, so a
// child running as another user can reach a link it knows the name of, and
// nobody but this process's user can list or change it.
func execLinkDir() (string, error) {
	execLinks.once.Do(func() {
		removeStaleExecLinks()
		dir, err := os.MkdirTemp("", "ps_port-exec-"+strconv.Itoa(os.Getpid())+"-")
		if err == nil {
			err = os.Chmod(dir, 0o711)
		}
		execLinks.dir, execLinks.err = dir, err
	})
	return execLinks.dir, execLinks.err
}

// removeStaleExecLinks removes the exec link directories, named with
// their process's pid, that processes of this user no longer alive left
// (killed before they could remove them).
func removeStaleExecLinks() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "ps_port-exec-*-*"))
	for _, d := range dirs {
		var st unix.Stat_t
		if unix.Lstat(d, &st) != nil || st.Uid != uint32(os.Geteuid()) || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		f := filepath.Base(d)[len("ps_port-exec-"):]
		pid, err := strconv.Atoi(f[:max(0, strings.IndexByte(f, '-'))])
		if err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// RemoveExecLinks removes the exec links' directory; call it when this
// program exits (children that are still running keep their programs).
func RemoveExecLinks() {
	if execLinks.dir != "" {
		os.RemoveAll(execLinks.dir)
	}
}

// execLink returns the link DIR/N/NAME to /proc/self/fd/N, made on first
// use; false when it cannot be made.
func execLink(fd int, name string) (string, bool) {
	dir, err := execLinkDir()
	if err != nil || name == "" || name == "." || name == ".." {
		return "", false
	}
	n := strconv.Itoa(fd)
	key := n + "/" + name
	execLinks.mu.Lock()
	defer execLinks.mu.Unlock()
	if l, ok := execLinks.links[key]; ok {
		return l, true
	}
	sub := filepath.Join(dir, n)
	if err := os.Mkdir(sub, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", false
	}
	if err := os.Chmod(sub, 0o711); err != nil { // against the umask
		return "", false
	}
	l := filepath.Join(sub, name)
	if err := os.Symlink("/proc/self/fd/"+n, l); err != nil {
		return "", false
	}
	if execLinks.links == nil {
		execLinks.links = make(map[string]string)
	}
	execLinks.links[key] = l
	return l, true
}

// execPlan is how one child runs Spec.Exec.
type execPlan struct {
	path   string    // given to execve
	files  []uintptr // the child's descriptors 0.. (stdio, and the script's fd 3)
	closeF *os.File  // a descriptor to close after the fork
}

// planExec prepares running f, named name (its path's last component), in
// a child whose descriptors are files.
func planExec(f *os.File, name string, files []uintptr) (*execPlan, error) {
	var st unix.Stat_t
	fd := int(f.Fd())
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: not a regular file", unix.EACCES)
	}
	p := &execPlan{files: append([]uintptr(nil), files...)}
	target := fd
	if isScript(fd) {
		p.files = append(p.files, uintptr(fd)) // the child's fd 3, kept across the exec
		target = len(p.files) - 1
	} else {
		// fd stays close-on-exec; the kernel follows the link before it
		// closes such descriptors. Go's fork moves descriptors only above
		// the highest one in files: keep fd below it so nothing lands on it.
		top := uintptr(0)
		for _, x := range p.files {
			top = max(top, x)
		}
		if uintptr(fd) >= top {
			d, err := unix.FcntlInt(p.files[0], unix.F_DUPFD_CLOEXEC, fd+1)
			if err != nil {
				return nil, err
			}
			p.closeF = os.NewFile(uintptr(d), "stdin")
			p.files[0] = uintptr(d)
		}
	}
	p.path = "/proc/self/fd/" + strconv.Itoa(target)
	if l, ok := execLink(target, name); ok {
		p.path = l
	} // else the program's comm will read as the descriptor's number
	return p, nil
}

// afterFork releases what the fork needed.
func (p *execPlan) afterFork() {
	if p.closeF != nil {
		p.closeF.Close()
	}
}

// isScript reports whether the regular file open as fd starts with "#!".
// A file this process may not read is taken for a binary: an interpreter
// running as the same user could not read it either.
func isScript(fd int) bool {
	r, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(r)
	var b [2]byte
	n, _ := unix.Pread(r, b[:], 0)
	return n == 2 && b[0] == '#' && b[1] == '!'
}
