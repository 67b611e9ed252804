// Command ps_port runs an OS process for an Erlang or Elixir owner and keeps
// it contained. It is an Erlang port (docs/protocol.md; MuonTrap-compatible
// flags) or, with "ps_port node", a distributed Erlang node hosting many
// processes. This file only wires the packages together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/protonstream/ps_port/cgroup"
	"github.com/protonstream/ps_port/port"
	"github.com/protonstream/ps_port/procctl"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "node" {
		return nodeMain(args[1:])
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

	var conn *port.Conn
	var sink procctl.Sink
	if cfg.packet {
		conn = port.NewConn(os.Stdin, os.Stdout)
		conn.StdinLimit = cfg.stdinLimit
		sink = conn
	} else {
		sink = port.NewRawSink(os.Stdout)
	}
	fail := func(reason string, err error, code int) int {
		if conn != nil {
			return conn.SendSpawnError(reason, err.Error(), code)
		}
		fmt.Fprintf(os.Stderr, "ps_port: %v\n", err)
		return code
	}

	spec, err := childSpec(cfg)
	if err != nil {
		return fail(reasonOf(err), err, port.ExitSpawn)
	}
	if len(cfg.controllers) > 0 {
		group, err := newGroup(cfg)
		if err != nil {
			return fail("badcgroup", err, port.ExitCgroup)
		}
		defer func() {
			if err := group.Delete(); err != nil {
				fmt.Fprintf(os.Stderr, "ps_port: %v\n", err)
			}
		}()
		spec.Placement = group
	}
	if conn != nil {
		spec.Started = conn.Started
	}
	child, err := procctl.Start(spec, sink)
	if err != nil {
		return fail(reasonOf(err), err, port.ExitSpawn)
	}
	if cfg.packet {
		return port.Serve(conn, child, spec.Placement, stop)
	}
	return port.ServeRaw(os.Stdin, child, stop)
}

// childSpec turns the command line into what procctl starts.
func childSpec(cfg *config) (procctl.Spec, error) {
	cred, err := procctl.LookupCredential(cfg.uid, cfg.gid)
	if err != nil {
		return procctl.Spec{}, err
	}
	spec := procctl.Spec{
		Path:           cfg.program,
		Args:           cfg.args,
		Arg0:           cfg.arg0,
		Dir:            cfg.dir,
		Env:            environ(os.Environ(), cfg.env, cfg.unset),
		Credential:     cred,
		Window:         cfg.window,
		DelayToSIGKILL: cfg.delay,
		Sweep:          true, // one child per ps_port: every orphan is its
		Stdin:          procctl.Pipe,
		Stdout:         procctl.Pipe,
		Stderr:         procctl.Pipe,
	}
	switch {
	case cfg.captureStderr:
		spec.Stderr = procctl.ToStdout
	case cfg.stderrOnly:
		spec.Stdout = procctl.Null
	}
	if !cfg.packet {
		// MuonTrap's raw mode: stdin is the ack channel, not the child's.
		spec.Stdin = procctl.Null
		if !cfg.captureOutput && !cfg.stderrOnly {
			spec.Stdout = procctl.Null
		}
		if spec.Stderr == procctl.Pipe && !cfg.stderrOnly {
			spec.Stderr = procctl.Inherit
		}
	}
	return spec, nil
}

func newGroup(cfg *config) (*cgroup.Group, error) {
	gs := cgroup.Spec{Controllers: cfg.controllers, Path: cfg.group}
	for _, s := range cfg.sets {
		set, err := cgroup.ParseSet(s)
		if err != nil {
			return nil, err
		}
		gs.Sets = append(gs.Sets, set)
	}
	return cgroup.Create(gs)
}

// environ applies --env and --unset to base.
func environ(base, set, unset []string) []string {
	drop := make(map[string]bool)
	for _, k := range unset {
		drop[k] = true
	}
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		drop[k] = true
	}
	env := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}

func reasonOf(err error) string {
	var se *procctl.SpawnError
	if errors.As(err, &se) {
		return se.Reason
	}
	return "badarg"
}
