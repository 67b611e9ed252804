// Command ps_port runs an OS process for an Erlang or Elixir owner and keeps
// it contained. It is an Erlang port (docs/protocol.md; MuonTrap-compatible
// flags) or, with "ps_port node", a distributed Erlang node hosting many
// processes: that is the binary ps_port_node beside it, exec'd, so that
// port mode links and initialises nothing of node mode. This file only
// wires the packages together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/protonstream/ps_port/cgroup"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/port"
	"github.com/protonstream/ps_port/procctl"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "node" {
		return execNode(args[1:])
	}
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return port.ExitOK
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port: %v\n", err)
		return port.ExitUsage
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
	reg, err := procctl.Register(func(int) { cgroup.ReclaimAbandoned(logf) }, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ps_port: %v; if this ps_port is killed, what its children started may survive it\n", err)
	}
	defer reg.Close()

	if cfg.shared {
		return port.ServeShared(port.NewConn(port.PortFiles()), port.SharedConfig{
			StdinLimit: cfg.stdinLimit, Window: cfg.window, DelayToSIGKILL: cfg.delay, Logf: logf,
		}, stop)
	}
	return serveOne(cfg, stop)
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
		Cgroup:         cgroup.Spec{Controllers: cfg.controllers, Path: cfg.group},
	}
	for _, s := range cfg.sets {
		set, err := cgroup.ParseSet(s)
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
