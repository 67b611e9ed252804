package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// errnoText renders err as "permission denied (EACCES)" when it carries an
// errno, else as err.Error().
func errnoText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return errno.Error() + " (" + name + ")"
		}
		return errno.Error()
	}
	return err.Error()
}

// causeError has its own message (which already tells the cause) and
// unwraps to its causes, so callers can still test errors.Is(err,
// unix.EACCES) or errors.Is(err, fs.ErrNotExist).
type causeError struct {
	msg    string
	causes []error
}

func (e *causeError) Error() string   { return e.msg }
func (e *causeError) Unwrap() []error { return e.causes }

// withCause returns an error with the formatted message that unwraps to
// cause.
func withCause(cause error, format string, args ...any) error {
	return &causeError{msg: fmt.Sprintf(format, args...), causes: []error{cause}}
}

// errDetail renders err in full, adding its errno's name when it has one:
// "mkdir /sys/fs/cgroup/memory/a: permission denied (EACCES)".
func errDetail(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return err.Error() + " (" + name + ")"
		}
	}
	return err.Error()
}

func isErrno(err error, errnos ...unix.Errno) bool {
	for _, e := range errnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// writeFile writes value to an existing cgroup file with a single write(2),
// as the kernel parses each write on its own. It never creates the file.
func writeFile(name, value string) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(value))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// readKey returns the number after key in a "key N" per line file such as
// memory.oom_control or memory.events.
func readKey(name, key string) (uint64, bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %q: %w", name, sc.Text(), err)
		}
		return n, true, nil
	}
	return 0, false, sc.Err()
}

// makeGroupDir creates root/rel and its missing parents, appending to
// *created each directory it made, outermost first. Like MuonTrap it
// refuses a group directory that already exists (EEXIST): another run may
// be using it.
func makeGroupDir(root, rel string, created *[]string) error {
	dir := root
	comps := strings.Split(rel, "/")
	for i, c := range comps {
		dir = filepath.Join(dir, c)
		err := unix.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			*created = append(*created, dir)
		case err == unix.EEXIST && i < len(comps)-1:
		default:
			return &fs.PathError{Op: "mkdir", Path: dir, Err: err}
		}
	}
	return nil
}

// rmdirRetries counts rmdir attempts refused with EBUSY (for tests).
var rmdirRetries atomic.Int64

// rmdirBusy removes the (empty) cgroup directory dir. The kernel refuses with
// EBUSY for a moment after the last task died; it retries with a short
// backoff until timeout. A directory that is already gone is not an error.
func rmdirBusy(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 500 * time.Microsecond
	for {
		err := unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY && err != unix.EAGAIN || time.Now().After(deadline) {
			return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		rmdirRetries.Add(1)
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// removeSubgroups removes, deepest first, the cgroup directories below dir
// that the group's members may have made.
func removeSubgroups(dir string, timeout time.Duration) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if err := removeSubgroups(sub, timeout); err != nil {
			return err
		}
		if err := rmdirBusy(sub, timeout); err != nil {
			return err
		}
	}
	return nil
}

// backoff sleeps for *d and doubles it, up to limit.
func backoff(d *time.Duration, limit time.Duration) {
	time.Sleep(*d)
	*d = min(2**d, limit)
}
