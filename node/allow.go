package node

// What a peer that holds the cookie may ask of this node: which program
// (--allow, checked on the very file that runs), which environment
// (--allow-env) and which user and group (--allow-uid, --allow-gid).
// docs/node.md, "Security model", says what these do and do not protect.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/protonstream/ps_port/procctl"
)

// notAllowedError is a program that no --allow pattern matches.
type notAllowedError struct {
	path string // as resolved through cd and PATH
	real string // the opened file's real path
}

func (e *notAllowedError) Error() string {
	if e.real != "" && e.real != e.path {
		return fmt.Sprintf("%s (really %s) is not allowed on this node (see ps_port node --allow)", e.path, e.real)
	}
	return fmt.Sprintf("%s is not allowed on this node (see ps_port node --allow)", e.path)
}

// checkPatterns validates --allow patterns.
func checkPatterns(patterns []string) error {
	for _, p := range patterns {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("--allow %q: want an absolute path pattern such as /usr/bin/*", p)
		}
		if _, err := filepath.Match(p, "/"); errors.Is(err, filepath.ErrBadPattern) {
			return fmt.Errorf("--allow %q: %v", p, err)
		}
	}
	return nil
}

// allowedPath reports whether a pattern matches one of paths.
func allowedPath(patterns []string, paths ...string) bool {
	for _, pat := range patterns {
		for _, p := range paths {
			if ok, _ := filepath.Match(pat, p); ok {
				return true
			}
		}
	}
	return false
}

// program is a program opened and checked for a child: the child execs
// file itself (procctl.Spec.Exec), so what was checked is what runs.
type program struct {
	path string   // absolute, as resolved through cd and the child's PATH
	real string   // file's real path
	file *os.File // open with O_PATH; the caller closes it
}

// procRelative reports whether p (absolute, clean) lies under /proc or is
// one of the /dev names for a process's own descriptors: such a path names
// one file when ps_port resolves it and another in the child (its cwd, its
// root, its descriptors).
func procRelative(p string) bool {
	for _, dir := range []string{"/proc", "/dev/fd"} {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	switch p {
	case "/dev/stdin", "/dev/stdout", "/dev/stderr":
		return true
	}
	return false
}

// openProgram resolves command in the child's context (its cd, its PATH
// from env), opens it once and checks that open file against the allow
// list. The child will exec that file, whatever the name points to by
// then.
func (n *Node) openProgram(req *openRequest, env []string) (*program, error) {
	if !strings.Contains(req.command, "/") {
		for _, d := range filepath.SplitList(pathOf(env)) {
			if filepath.IsAbs(d) && procRelative(filepath.Clean(d)) {
				return nil, bad("env", "PATH entry %q lies under /proc, which names other files for ps_port than for the child; give PATH real directories", d)
			}
		}
	}
	p, err := procctl.Resolve(req.command, req.dir, env)
	if err != nil {
		return nil, err
	}
	// Before the --allow check: a relative program under a missing cd would
	// otherwise be refused as not allowed, naming a path that cannot exist.
	if err := procctl.CheckDir(req.command, req.dir); err != nil {
		return nil, err
	}
	if procRelative(p) {
		return nil, bad("command", "%q resolves to %s, under /proc, which names other files for ps_port than for the child; give the program's real path", req.command, p)
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &procctl.SpawnError{Reason: errnoReason(err), Path: req.command, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	prog := &program{path: p, file: f}
	fail := func(err error) (*program, error) {
		f.Close()
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(&procctl.SpawnError{Reason: errnoReason(err), Path: req.command, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		// What execve says of a directory, a device or a FIFO.
		return fail(&procctl.SpawnError{Reason: "eacces", Path: req.command,
			Err: fmt.Errorf("%w: not a regular file", syscall.EACCES)})
	}
	if prog.real, err = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
		return fail(fmt.Errorf("finding the real path of %s: %w", p, err))
	}
	if st.Nlink == 0 || !filepath.IsAbs(prog.real) {
		// Removed since it was opened: there is no name left to check.
		return fail(&notAllowedError{path: p, real: prog.real})
	}
	if !n.cfg.AllowAny && !allowedPath(n.cfg.Allow, p, prog.real) {
		n.log.Printf("refused %s (real path %s) for %s: no --allow pattern matches", p, prog.real, req.owner)
		return fail(&notAllowedError{path: p, real: prog.real})
	}
	return prog, nil
}

// pathOf is PATH in env.
func pathOf(env []string) string {
	v := ""
	for _, kv := range env {
		if s, ok := strings.CutPrefix(kv, "PATH="); ok {
			v = s
		}
	}
	return v
}

func errnoReason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if s := strings.ToLower(unix.ErrnoName(errno)); s != "" {
			return s
		}
	}
	return "einval"
}

// loaderEnv lists the variables a peer may not set without --allow-env:
// the ones glibc's dynamic loader removes from the environment of setuid
// programs (elf/dl-support.c, sysdeps/generic/unsecvars.h in glibc 2.36;
// the same list is in ld.so's strings), because each makes an unrelated
// program load code or read or write files its user chose:
//
//   - LD_*: every dynamic loader variable (LD_PRELOAD and LD_AUDIT load a
//     library into the program, LD_LIBRARY_PATH swaps its libraries,
//     LD_DEBUG_OUTPUT and LD_PROFILE write files). The whole family, not
//     the list: a newer loader may add one.
//   - GCONV_PATH: iconv modules (shared objects) loaded from there.
//   - GETCONF_DIR: where getconf finds the programs it runs.
//   - GLIBC_TUNABLES: malloc and loader tunables (the 2023 "Looney Tunables"
//     loader overflow was reached through it).
//   - HOSTALIASES, LOCALDOMAIN, RES_OPTIONS, RESOLV_HOST_CONF: the resolver
//     reads files and changes where names resolve.
//   - LOCPATH, NLSPATH: locale and message catalogs parsed from there.
//   - MALLOC_*: MALLOC_TRACE writes a file; the rest are tunables' older
//     names (MALLOC_CHECK_, MALLOC_ARENA_MAX, ...).
//   - NIS_PATH: NIS+ lookups.
//   - TMPDIR: where programs create temporary files (glibc drops it for
//     setuid programs: a file placed by another user).
//   - TZDIR: time zone files parsed from there.
var loaderEnv = []string{
	"LD_*", "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES",
	"LOCALDOMAIN", "LOCPATH", "MALLOC_*", "NIS_PATH", "NLSPATH",
	"RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
}

// checkEnvPatterns validates --allow-env patterns.
func checkEnvPatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" || strings.ContainsAny(p, "=\x00") {
			return fmt.Errorf("--allow-env %q: want a variable name or a glob such as LD_* (no '=')", p)
		}
		if _, err := filepath.Match(p, "X"); err != nil {
			return fmt.Errorf("--allow-env %q: %v", p, err)
		}
	}
	return nil
}

// localeEnv are the variables that name locales: glibc and gettext take a
// name with a '/' in it for a path (outside setuid programs) and parse the
// files there, so such a value is refused as loaderEnv is; C, C.UTF-8 or
// en_US.UTF-8 are fine.
var localeEnv = []string{"LANG", "LANGUAGE", "LC_*"}

// checkEnv refuses a variable the request sets that the loader would act
// on, or a locale named by path, unless an --allow-env pattern allows it.
// Removing one is fine.
func (n *Node) checkEnv(req *openRequest) error {
	for _, kv := range req.env {
		name, value, _ := strings.Cut(kv, "=")
		if matchName(n.cfg.AllowEnv, name) {
			continue
		}
		if matchName(loaderEnv, name) {
			return bad("env", "%s is not allowed: it makes the dynamic loader or libc load code or read or write files the peer chooses; start ps_port node with --allow-env %s to allow it", name, name)
		}
		if matchName(localeEnv, name) && strings.Contains(value, "/") {
			return bad("env", "%s=%q is not allowed: a locale name with '/' is a path whose files libc parses; give a locale name such as C.UTF-8, or start ps_port node with --allow-env %s", name, value, name)
		}
	}
	return nil
}

func matchName(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}
