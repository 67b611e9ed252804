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

// nodeMain is "ps_port node ...".
func nodeMain(args []string) int {
	// First of all (the exec that started this program made it dumpable
	// again): nobody but root may read this process's memory or
	// /proc/PID/environ (which keeps PS_PORT_COOKIE whatever os.Unsetenv
	// does), ptrace it or take its core: not even a child running as the
	// same user.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "ps_port node: prctl(PR_SET_DUMPABLE, 0): %v; refusing to start: children could read the cookie from this process\n", err)
		return 2
	}
	fs := flag.NewFlagSet("ps_port node", flag.ContinueOnError)
	var (
		name, cookieFile, cgroupBase string
		allow, allowEnv              list
		allowUID, allowGID           list
		maxRequest                   int
		allowAny, exitOnEOF          bool
		maxChildren, port            int
		shutdownMS, tickSeconds      int
		tlsFiles                     otpdist.TLSFiles
	)
	fs.StringVar(&name, "name", "", "node name NAME@HOST (required)")
	fs.StringVar(&cookieFile, "cookie-file", "", "file holding the distribution cookie")
	fs.Var(&allow, "allow", "glob on the absolute path of programs owners may run, e.g. /usr/bin/* (repeatable)")
	fs.BoolVar(&allowAny, "allow-any", false, "let owners run any program")
	fs.Var(&allowEnv, "allow-env", "glob on names of the dynamic loader's and libc's variables (LD_*, GCONV_PATH, MALLOC_*, ...) owners may set, e.g. LD_LIBRARY_PATH (repeatable; default none)")
	fs.Var(&allowUID, "allow-uid", "user (name, uid, or range LOW-HIGH; ranges never include 0) a root node may run children as, besides its own (repeatable)")
	fs.Var(&allowGID, "allow-gid", "group (name, gid, or range LOW-HIGH; ranges never include 0) a root node may run children with, besides its own and the user's primary group (repeatable)")
	fs.IntVar(&maxRequest, "max-request", node.DefaultMaxRequest, "largest request (distribution message, in bytes, lists and tuples weighed as decoded) taken; larger ones are refused with {:error, {:too_large, _}}")
	fs.StringVar(&cgroupBase, "cgroup-base", "", "cgroup path under which children's groups are made; without it cgroup options are refused")
	fs.IntVar(&maxChildren, "max-children", 0, "most children at once (0: no limit)")
	fs.IntVar(&port, "port", 0, "distribution listen port (0: a free one, registered with epmd)")
	fs.IntVar(&shutdownMS, "shutdown-timeout", 5000, "ms to wait on shutdown for owners to take the children's last output")
	fs.BoolVar(&exitOnEOF, "exit-on-eof", false, "shut down as on SIGTERM when stdin reaches end of file (for a ps_port node run as a port: the BEAM closed it or died); without it stdin is not read")
	fs.IntVar(&tickSeconds, "net-ticktime", 60, "seconds, as OTP's net_ticktime: tick a connection idle for a quarter of it, drop a peer silent for all of it")
	fs.StringVar(&tlsFiles.Cert, "tls-cert", "", "PEM certificate (chain) of this node: speak distribution over TLS, as OTP's -proto_dist inet_tls; needs --tls-key")
	fs.StringVar(&tlsFiles.Key, "tls-key", "", "PEM private key (unencrypted) of --tls-cert")
	fs.StringVar(&tlsFiles.CA, "tls-ca", "", "PEM CA certificate(s): every peer must present a certificate signed by it, and so must every node this one connects to (mutual TLS); without it peers are not verified")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), nodeUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...interface{}) int {
		fmt.Fprintf(os.Stderr, "ps_port node: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q (see ps_port node --help)", fs.Arg(0))
	}
	if name == "" {
		return fail("--name NAME@HOST is required")
	}
	if !allowAny && len(allow) == 0 {
		return fail("refusing to start: no program is allowed; give --allow PATTERN (repeatable, a glob on the program's absolute path) or --allow-any")
	}
	if allowAny && len(allow) > 0 {
		return fail("--allow and --allow-any exclude each other")
	}
	if maxChildren < 0 || port < 0 || port > 65535 || shutdownMS < 0 {
		return fail("--max-children, --port and --shutdown-timeout must be non-negative (and --port at most 65535)")
	}
	if maxRequest < node.MinMaxRequest || maxRequest > node.MaxMessageSize {
		return fail("--max-request must be %d..%d (bytes), got %d", node.MinMaxRequest, node.MaxMessageSize, maxRequest)
	}
	if tickSeconds < 1 {
		return fail("--net-ticktime must be at least 1 (seconds), got %d", tickSeconds)
	}
	var tlsConfig *tls.Config
	if tlsFiles != (otpdist.TLSFiles{}) {
		var err error
		if tlsConfig, err = tlsFiles.TLSConfig(); err != nil {
			return fail("%v", err)
		}
	}
	cookie, err := readCookie(cookieFile)
	// Children inherit the environment: never the cookie.
	os.Unsetenv("PS_PORT_COOKIE")
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
	// Listed among the live ps_ports, so that if this node is SIGKILLed the
	// next ps_port to start (port or node mode) kills what its children
	// started outside cgroups and reclaims its groups (procctl.Register);
	// and this node does the same for a dead predecessor.
	// The node's log: its own lines and the warnings of the packages below
	// (procctl, cgroup), all prefixed "ps_port node: ", which
	// ProtonStream.Node logs as the node's own (at :info).
	logger := log.New(os.Stderr, "ps_port node: ", log.LstdFlags)
	reg, err := procctl.Register(func(int) { cgroup.ReclaimAbandoned(logger.Printf) }, logger.Printf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port node: %v; if this node is killed, what its children started outside cgroups may survive it\n", err)
	}
	defer reg.Close()
	n, err := node.Start(context.Background(), node.Config{
		Name:        name,
		Cookie:      cookie,
		Allow:       allow,
		AllowAny:    allowAny,
		AllowEnv:    allowEnv,
		AllowUID:    allowUID,
		AllowGID:    allowGID,
		MaxRequest:  maxRequest,
		CgroupBase:  cgroupBase,
		MaxChildren: maxChildren,
		ListenPort:  uint16(port),
		NetTickTime: time.Duration(tickSeconds) * time.Second,
		TLS:         tlsConfig,
		Log:         logger,
	})
	if err != nil {
		return fail("%v", err)
	}
	defer procctl.RemoveExecLinks()
	fmt.Fprintf(os.Stderr, "ps_port node: %s is up\n", n.Name())
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
		n.Shutdown(time.Duration(shutdownMS) * time.Millisecond)
	case why := <-eof:
		fmt.Fprintf(os.Stderr, "ps_port node: %s (--exit-on-eof): terminating %d children\n", why, n.Children())
		n.Shutdown(time.Duration(shutdownMS) * time.Millisecond)
	case <-stopped:
	}
	return 0
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
