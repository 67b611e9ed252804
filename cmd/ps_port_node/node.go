package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/protonstream/ps_port/cgroup"
	"github.com/protonstream/ps_port/node"
	"github.com/protonstream/ps_port/otpdist"
	"github.com/protonstream/ps_port/procctl"
)

const nodeUsage = `usage: ps_port node --name NAME@HOST (--allow PATTERN ... | --allow-any) [flags]

Joins an Erlang cluster as the distributed node NAME@HOST and runs OS
processes for remote owners (docs/node.md). The cookie comes from
--cookie-file, else the PS_PORT_COOKIE environment variable, else
~/.erlang.cookie; it is never taken from the command line. epmd is started
("epmd -daemon") when none runs. SIGTERM, SIGINT or SIGHUP terminate every
child as a port close does, then ps_port exits. With --exit-on-eof, so does
the end of stdin: for a ps_port node run as a port of a BEAM (as
ProtonStream.Node does), which closes it when the port is closed or the BEAM
dies. Without it stdin is not read (started from a shell or systemd, stdin
may well be /dev/null). With --tls-cert and --tls-key, distribution runs
over TLS and owners must run OTP's TLS distribution (erl -proto_dist
inet_tls -ssl_dist_optfile FILE; docs/node.md, "TLS").

`

// exitUsage is the exit status for bad flags or a refused start, as
// ps_port's (port.ExitUsage; this binary does not link port).
const exitUsage = 2

// nodeMain is "ps_port node ...".
func nodeMain(args []string) int {
	// First of all (the exec that started this program made it dumpable
	// again): nobody but root may read this process's memory or
	// /proc/PID/environ (which keeps PS_PORT_COOKIE whatever os.Unsetenv
	// does), ptrace it or take its core: not even a child running as the
	// same user.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail("prctl(PR_SET_DUMPABLE, 0): %v; refusing to start: children could read the cookie from this process", err)
	}
	f, code, ok := parseNodeFlags(args)
	if !ok {
		return code
	}
	cfg, err := f.config()
	if err != nil {
		return fail("%v", err)
	}
	servePprof("ps_port node")
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// epmd first: it is a daemon, and as a subreaper we would adopt it.
	if err := node.EnsureEPMD(); err != nil {
		return fail("%v", err)
	}
	if err := procctl.BecomeSubreaper(); err != nil {
		fmt.Fprintf(os.Stderr, "ps_port node: %v; orphans may escape\n", err)
	}
	// The node's log: its own lines and the warnings of the packages below
	// (procctl, cgroup), all prefixed "ps_port node: ", which
	// ProtonStream.Node logs as the node's own (at :info).
	cfg.Log = log.New(os.Stderr, "ps_port node: ", log.LstdFlags)
	// Listed among the live ps_ports, so that if this node is SIGKILLed the
	// next ps_port to start (port or node mode) kills what its children
	// started outside cgroups and reclaims its groups (procctl.Register);
	// and this node does the same for a dead predecessor.
	reg, err := procctl.Register(func(int) { cgroup.ReclaimAbandoned(cfg.Log.Printf) }, cfg.Log.Printf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port node: %v; if this node is killed, what its children started outside cgroups may survive it\n", err)
	}
	defer reg.Close()
	n, err := node.Start(context.Background(), cfg)
	if err != nil {
		return fail("%v", err)
	}
	defer procctl.RemoveExecLinks()
	fmt.Fprintf(os.Stderr, "ps_port node: %s is up\n", n.Name())
	serveUntilStopped(n, stop, f.exitOnEOF, time.Duration(f.shutdownMS)*time.Millisecond)
	return 0
}

// fail says why on stderr and returns exitUsage.
func fail(format string, a ...interface{}) int {
	fmt.Fprintf(os.Stderr, "ps_port node: "+format+"\n", a...)
	return exitUsage
}

// nodeFlags are ps_port node's flags.
type nodeFlags struct {
	name, cookieFile, cgroupBase string
	allow, allowEnv              list
	allowUID, allowGID           list
	maxRequest                   int
	allowAny, exitOnEOF          bool
	maxChildren, port            int
	shutdownMS, tickSeconds      int
	tls                          otpdist.TLSFiles
}

// parseNodeFlags reads and checks the flags; with ok false the program
// exits with code (having said why, or printed the help).
func parseNodeFlags(args []string) (f *nodeFlags, code int, ok bool) {
	f = &nodeFlags{}
	fs := flag.NewFlagSet("ps_port node", flag.ContinueOnError)
	f.define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, false
		}
		return nil, exitUsage, false
	}
	if fs.NArg() > 0 {
		return nil, fail("unexpected argument %q (see ps_port node --help)", fs.Arg(0)), false
	}
	if err := f.check(); err != nil {
		return nil, fail("%v", err), false
	}
	return f, 0, true
}

func (f *nodeFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "node name NAME@HOST (required)")
	fs.StringVar(&f.cookieFile, "cookie-file", "", "file holding the distribution cookie")
	fs.Var(&f.allow, "allow", "glob on the absolute path of programs owners may run, e.g. /usr/bin/* (repeatable)")
	fs.BoolVar(&f.allowAny, "allow-any", false, "let owners run any program")
	fs.Var(&f.allowEnv, "allow-env", "glob on names of the dynamic loader's and libc's variables (LD_*, GCONV_PATH, MALLOC_*, ...) owners may set, e.g. LD_LIBRARY_PATH (repeatable; default none)")
	fs.Var(&f.allowUID, "allow-uid", "user (name, uid, or range LOW-HIGH; ranges never include 0) a root node may run children as, besides its own (repeatable)")
	fs.Var(&f.allowGID, "allow-gid", "group (name, gid, or range LOW-HIGH; ranges never include 0) a root node may run children with, besides its own and the user's primary group (repeatable)")
	fs.IntVar(&f.maxRequest, "max-request", node.DefaultMaxRequest, "largest request (distribution message, in bytes, lists and tuples weighed as decoded) taken; larger ones are refused with {:error, {:too_large, _}}")
	fs.StringVar(&f.cgroupBase, "cgroup-base", "", "cgroup path under which children's groups are made; without it cgroup options are refused")
	fs.IntVar(&f.maxChildren, "max-children", 0, "most children at once (0: no limit)")
	fs.IntVar(&f.port, "port", 0, "distribution listen port (0: a free one, registered with epmd)")
	fs.IntVar(&f.shutdownMS, "shutdown-timeout", 5000, "ms to wait on shutdown for owners to take the children's last output")
	fs.BoolVar(&f.exitOnEOF, "exit-on-eof", false, "shut down as on SIGTERM when stdin reaches end of file (for a ps_port node run as a port: the BEAM closed it or died); without it stdin is not read")
	fs.IntVar(&f.tickSeconds, "net-ticktime", 60, "seconds, as OTP's net_ticktime: tick a connection idle for a quarter of it, drop a peer silent for all of it")
	fs.StringVar(&f.tls.Cert, "tls-cert", "", "PEM certificate (chain) of this node: speak distribution over TLS, as OTP's -proto_dist inet_tls; needs --tls-key")
	fs.StringVar(&f.tls.Key, "tls-key", "", "PEM private key (unencrypted) of --tls-cert")
	fs.StringVar(&f.tls.CA, "tls-ca", "", "PEM CA certificate(s): every peer must present a certificate signed by it, and so must every node this one connects to (mutual TLS); without it peers are not verified")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), nodeUsage)
		fs.PrintDefaults()
	}
}

// check refuses flags that contradict each other or are out of range.
func (f *nodeFlags) check() error {
	switch {
	case f.name == "":
		return errors.New("--name NAME@HOST is required")
	case !f.allowAny && len(f.allow) == 0:
		return errors.New("refusing to start: no program is allowed; give --allow PATTERN (repeatable, a glob on the program's absolute path) or --allow-any")
	case f.allowAny && len(f.allow) > 0:
		return errors.New("--allow and --allow-any exclude each other")
	case f.maxChildren < 0 || f.port < 0 || f.port > 65535 || f.shutdownMS < 0:
		return errors.New("--max-children, --port and --shutdown-timeout must be non-negative (and --port at most 65535)")
	case f.maxRequest < node.MinMaxRequest || f.maxRequest > node.MaxMessageSize:
		return fmt.Errorf("--max-request must be %d..%d (bytes), got %d", node.MinMaxRequest, node.MaxMessageSize, f.maxRequest)
	case f.tickSeconds < 1:
		return fmt.Errorf("--net-ticktime must be at least 1 (seconds), got %d", f.tickSeconds)
	}
	return nil
}

// config is the node's configuration: the flags, the TLS files loaded and
// the cookie read (and taken out of the environment, which children
// inherit). Log is left to the caller.
func (f *nodeFlags) config() (node.Config, error) {
	var tlsConfig *tls.Config
	if f.tls != (otpdist.TLSFiles{}) {
		var err error
		if tlsConfig, err = f.tls.TLSConfig(); err != nil {
			return node.Config{}, err
		}
	}
	cookie, err := readCookie(f.cookieFile)
	// Children inherit the environment: never the cookie.
	os.Unsetenv("PS_PORT_COOKIE")
	if err != nil {
		return node.Config{}, err
	}
	return node.Config{
		Name:        f.name,
		Cookie:      cookie,
		Allow:       f.allow,
		AllowAny:    f.allowAny,
		AllowEnv:    f.allowEnv,
		AllowUID:    f.allowUID,
		AllowGID:    f.allowGID,
		MaxRequest:  f.maxRequest,
		CgroupBase:  f.cgroupBase,
		MaxChildren: f.maxChildren,
		ListenPort:  uint16(f.port),
		NetTickTime: time.Duration(f.tickSeconds) * time.Second,
		TLS:         tlsConfig,
	}, nil
}

// serveUntilStopped returns when the node stops, after shutting it down on
// a signal or (with exitOnEOF) at the end of stdin.
func serveUntilStopped(n *node.Node, stop <-chan os.Signal, exitOnEOF bool, shutdown time.Duration) {
	stopped := make(chan struct{})
	go func() { n.Wait(); close(stopped) }()
	var eof chan string
	if exitOnEOF {
		eof = make(chan string, 1)
		go func() { eof <- waitEOF(os.Stdin) }()
	}
	select {
	case sig := <-stop:
		fmt.Fprintf(os.Stderr, "ps_port node: %v: terminating %d children\n", sig, n.Children())
		n.Shutdown(shutdown)
	case why := <-eof:
		fmt.Fprintf(os.Stderr, "ps_port node: %s (--exit-on-eof): terminating %d children\n", why, n.Children())
		n.Shutdown(shutdown)
	case <-stopped:
	}
}

// waitEOF reads r, throwing away what it reads, until end of file or an
// error, and says which.
func waitEOF(r io.Reader) string {
	buf := make([]byte, 512)
	for {
		_, err := r.Read(buf)
		switch {
		case err == io.EOF:
			return "end of stdin"
		case err != nil:
			return fmt.Sprintf("reading stdin: %v", err)
		}
	}
}

// readCookie finds the cookie: --cookie-file, $PS_PORT_COOKIE, ~/.erlang.cookie.
func readCookie(file string) (string, error) {
	from := file
	var raw string
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--cookie-file: %v", err)
		}
		raw = string(b)
	case os.Getenv("PS_PORT_COOKIE") != "":
		from, raw = "PS_PORT_COOKIE", os.Getenv("PS_PORT_COOKIE")
	default:
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no cookie: give --cookie-file or PS_PORT_COOKIE (no home directory for ~/.erlang.cookie: %v)", err)
		}
		from = filepath.Join(home, ".erlang.cookie")
		b, err := os.ReadFile(from)
		if err != nil {
			return "", fmt.Errorf("no cookie: give --cookie-file, PS_PORT_COOKIE or %s (%v)", from, err)
		}
		raw = string(b)
	}
	cookie := strings.TrimSpace(raw)
	if cookie == "" {
		return "", fmt.Errorf("the cookie from %s is empty", from)
	}
	if strings.ContainsAny(cookie, "\n\r\x00") {
		return "", fmt.Errorf("the cookie from %s spans lines; want one line", from)
	}
	return cookie, nil
}
