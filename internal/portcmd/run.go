// Package portcmd is ps_port's port mode: its command line (MuonTrap's
// flags, --packet, --shared) and the one child of --packet and raw mode.
// Two binaries run it: ps_port (cmd/ps_port), which has cgroups, and
// ps_port_lean (cmd/ps_port_lean), which links nothing of the cgroup
// backend (github.com/containerd/cgroups/v3, and through it protobuf,
// cilium/ebpf, godbus: about 1 ms of every start, docs/benchmarks.md) and
// is what the shim runs for an isolated child without a cgroup. Given a
// command line that needs cgroups (or --shared, whose children may ask for
// one), ps_port_lean execs ps_port beside it with the same arguments, as
// "ps_port node" execs ps_port_node.
package portcmd

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"

	"github.com/protonstream/ps_port/cgroup/cgspec"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/port"
	"github.com/protonstream/ps_port/procctl"
)

// Cgroups is what a binary with cgroups gives Run (cmd/ps_port); nil for
// ps_port_lean. Such a binary also sets host.NewGroup.
type Cgroups struct {
	// ReclaimAbandoned removes the groups of ps_ports that died without
	// deleting them (cgroup.ReclaimAbandoned).
	ReclaimAbandoned func(logf func(format string, args ...any)) int
}

// ReclaimCommand is the internal subcommand ("ps_port reclaim-cgroups")
// with which ps_port_lean has ps_port reclaim the cgroups of dead ps_ports.
const ReclaimCommand = "reclaim-cgroups"

// Run runs port mode with the command line args (without the program
// name) and returns ps_port's exit code.
func Run(args []string, cg *Cgroups) int {
	if len(args) > 0 && args[0] == "node" {
		return execNode(args[1:])
	}
	if len(args) == 1 && args[0] == ReclaimCommand && cg != nil {
		cg.ReclaimAbandoned(logf)
		return port.ExitOK
	}
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return port.ExitOK
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port: %v\n", err)
		return port.ExitUsage
	}
	if cg == nil && cfg.needsCgroups() {
		return execFull(args)
	}
	// A closed port must surface as EPIPE on write, not kill ps_port before
	// it has cleaned up.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := procctl.BecomeSubreaper(); err != nil {
		fmt.Fprintf(os.Stderr, "ps_port: %v; orphans may escape\n", err)
	}
	// Live ps_ports are listed; one that died without cleaning up leaves
	// grandchildren and cgroups, which this one removes (procctl.Register).
	var deadFound atomic.Bool
	reg, err := procctl.Register(func(int) {
		if cg != nil {
			cg.ReclaimAbandoned(logf)
		} else {
			deadFound.Store(true)
		}
	}, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port: %v; if this ps_port is killed, what its children started may survive it\n", err)
	}
	defer func() {
		reg.Close()
		// ps_port_lean found dead ps_ports: what they left is killed (by
		// marker); ps_port removes their cgroups. Only now, with this
		// one's child and its tree gone, so that no sweep for orphans
		// takes the helper for one.
		if deadFound.Load() {
			reclaimBeside()
		}
	}()

	if cfg.shared {
		sharedProcs()
		return port.ServeShared(port.NewConn(port.PortFiles()), port.SharedConfig{
			StdinLimit: cfg.stdinLimit, Window: cfg.window, DelayToSIGKILL: cfg.delay, Logf: logf,
		}, stop)
	}
	return serveOne(cfg, stop)
}

// sharedProcs runs the shared host on one P unless $GOMAXPROCS says
// otherwise. With eight children streaming, two Ps cost about 2.5 context
// switches per output frame: every goroutine the ack reader readied (the
// pump its ack credited, the frames roomWait let through) made Go wake an
// idle thread to look for it, which mostly found nothing and parked
// again. On one P the thread that read the ack runs them itself once the
// reader parks: about one context switch per frame and about 30 % less
// CPU per byte in ps_port, with the same round trip and spawn times
// (docs/benchmarks.md, "Where the time goes", throughput 8 at once). A
// fork holds the P while vfork waits for the child's execve, but forks are
// serialized by syscall.ForkLock anyway.
func sharedProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// serveOne runs the one child of --packet or raw mode until it is done.
func serveOne(cfg *config, stop <-chan os.Signal) int {
	var conn *port.Conn
	var out host.Output
	if cfg.packet {
		conn = port.NewConn(port.PortFiles())
		out = conn
	} else {
		out = port.RawOutput{RawSink: port.NewRawSink(os.Stdout)}
	}
	req, err := request(cfg)
	var s *host.Session
	if err == nil {
		s, err = host.Start(req, out, logf)
	}
	switch {
	case err != nil && conn != nil:
		return conn.SendSpawnError(err)
	case err != nil:
		fmt.Fprintf(os.Stderr, "ps_port: %v\n", err)
		if port.ReasonOf(err) == "badcgroup" {
			return port.ExitCgroup
		}
		return port.ExitSpawn
	case conn != nil:
		return port.Serve(conn, s, stop)
	}
	code := port.ServeRaw(os.Stdin, s.Child(), stop)
	s.Wait() // and its cgroup is gone
	return code
}

// logf is where the host layer's lines go: ps_port's stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ps_port: "+format+"\n", args...)
}

// request turns the command line of --packet and raw mode into the one
// child's host.Request.
func request(cfg *config) (host.Request, error) {
	req := host.Request{
		Program:        cfg.program,
		Args:           cfg.args,
		Arg0:           cfg.arg0,
		Dir:            cfg.dir,
		Env:            cfg.env,
		Unset:          cfg.unset,
		UID:            cfg.uid,
		GID:            cfg.gid,
		Window:         cfg.window,
		StdinLimit:     cfg.stdinLimit,
		StdinAck:       cfg.stdinAck,
		DelayToSIGKILL: cfg.delay,
		Sweep:          true, // one child per ps_port: every orphan came from it
		Cgroup:         cgspec.Spec{Controllers: cfg.controllers, Path: cfg.group},
	}
	for _, s := range cfg.sets {
		set, err := cgspec.ParseSet(s)
		if err != nil {
			return req, &procctl.SpawnError{Reason: "badcgroup", Path: cfg.program, Err: err}
		}
		req.Cgroup.Sets = append(req.Cgroup.Sets, set)
	}
	switch {
	case cfg.captureStderr:
		req.Stderr = procctl.ToStdout
	case cfg.stderrOnly:
		req.Stdout = procctl.Null
	}
	if !cfg.packet {
		// MuonTrap's raw mode: stdin is the ack channel, not the child's.
		req.Stdin = procctl.Null
		if !cfg.captureOutput && !cfg.stderrOnly {
			req.Stdout = procctl.Null
		}
		if req.Stderr == procctl.Pipe && !cfg.stderrOnly {
			req.Stderr = procctl.Inherit
		}
	}
	return req, nil
}
