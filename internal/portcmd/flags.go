package portcmd

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/procctl"
)

// config is the command line of one ps_port in port mode.
type config struct {
	packet        bool
	shared        bool
	arg0          string
	controllers   list
	group         string
	sets          list
	delay         time.Duration
	uid, gid      string
	window        int
	stdinLimit    int
	stdinAck      bool
	captureOutput bool
	captureStderr bool
	stderrOnly    bool
	dir           string
	env           list
	unset         list
	program       string
	args          []string
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

const usageHead = `usage: ps_port [flags] [--] program [args...]
       ps_port --shared [--stdio-window N] [--stdin-limit N] [--delay-to-sigkill MS]
       ps_port node --name NAME@HOST [node flags]   (see ps_port node --help)

Runs program contained: closing the port (EOF on stdin), SIGTERM or :stop
terminates it and everything it started. Flags are MuonTrap's, plus:
--packet (the {packet,4} protocol of docs/protocol.md), --cd, --env, --unset.
With --shared, one ps_port runs many children over one {packet,4} port; they
are opened with {open, Id, Opts} frames ("Shared mode" in docs/protocol.md),
and the flags it takes are the defaults of every child.

`

// parseFlags parses port-mode arguments. It returns flag.ErrHelp for --help.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("ps_port", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var delayMS int
	c.define(fs, &delayMS)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.shared {
		return c, c.checkShared(fs, delayMS)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return nil, fmt.Errorf("no program given")
	}
	if err := c.checkDefaults(delayMS); err != nil {
		return nil, err
	}
	if err := c.checkOne(); err != nil {
		return nil, err
	}
	c.program, c.args = fs.Arg(0), fs.Args()[1:]
	return c, nil
}

// define declares the flags, MuonTrap's short forms with them.
func (c *config) define(fs *flag.FlagSet, delayMS *int) {
	str := func(p *string, long, short, help string) {
		fs.StringVar(p, long, "", help)
		if short != "" {
			fs.StringVar(p, short, "", "short for --"+long)
		}
	}
	lst := func(p *list, long, short, help string) {
		fs.Var(p, long, help)
		if short != "" {
			fs.Var(p, short, "short for --"+long)
		}
	}
	fs.BoolVar(&c.packet, "packet", false, "speak the {packet,4} term protocol on stdin/stdout")
	fs.BoolVar(&c.shared, "shared", false, "run many children over one {packet,4} port (no program on the command line)")
	str(&c.arg0, "arg0", "0", "argv[0] for the program")
	lst(&c.controllers, "controller", "c", "cgroup controller to use (repeatable)")
	str(&c.group, "group", "g", "cgroup path to create for the program")
	lst(&c.sets, "set", "s", "cgroup setting KEY=VALUE, e.g. memory.limit_in_bytes=268435456 (repeatable)")
	fs.IntVar(delayMS, "delay-to-sigkill", 500, "ms between SIGTERM and SIGKILL")
	fs.IntVar(delayMS, "k", 500, "short for --delay-to-sigkill")
	str(&c.uid, "uid", "", "run the program as this user (name or number)")
	str(&c.gid, "gid", "", "run the program with this group (name or number)")
	fs.IntVar(&c.window, "stdio-window", 0, "bytes of output in flight before ps_port waits for acks")
	fs.IntVar(&c.stdinLimit, "stdin-limit", host.DefaultStdinLimit, "stdin bytes that may wait for the child; a command that would go past it is refused whole")
	fs.BoolVar(&c.stdinAck, "stdin-ack", false, "--packet: report stdin bytes written to the program with {stdin_written, N} frames")
	fs.BoolVar(&c.captureOutput, "capture-output", false, "raw mode: copy the program's stdout to ps_port's stdout")
	fs.BoolVar(&c.captureStderr, "capture-stderr", false, "send the program's stderr where its stdout goes")
	fs.BoolVar(&c.stderrOnly, "capture-stderr-only", false, "capture stderr and discard stdout")
	str(&c.dir, "cd", "", "working directory of the program")
	lst(&c.env, "env", "", "set KEY=VALUE in the program's environment (repeatable)")
	lst(&c.unset, "unset", "", "remove KEY from the program's environment (repeatable)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
}

// checkDefaults checks the flags that --shared also takes (the defaults
// of its children) and sets c.delay.
func (c *config) checkDefaults(delayMS int) error {
	switch {
	case delayMS < 0:
		return fmt.Errorf("--delay-to-sigkill must be >= 0, got %d", delayMS)
	case c.stdinLimit < 1:
		return fmt.Errorf("--stdin-limit must be at least 1 (bytes), got %d", c.stdinLimit)
	case c.window < 0:
		return fmt.Errorf("--stdio-window must be at least 1 (bytes; 0 or none: the default, %d), got %d", procctl.DefaultWindow, c.window)
	}
	c.delay = time.Duration(delayMS) * time.Millisecond
	return nil
}

// checkOne refuses the flags of one child's command line that contradict
// each other.
func (c *config) checkOne() error {
	if c.stdinAck && !c.packet {
		return fmt.Errorf("--stdin-ack needs --packet: without it there is no frame to report stdin bytes with")
	}
	if c.captureStderr && c.stderrOnly {
		return fmt.Errorf("--capture-stderr and --capture-stderr-only exclude each other")
	}
	// As MuonTrap: a group, controllers and settings come together.
	if len(c.controllers) > 0 && c.group == "" {
		return fmt.Errorf("--controller (-c) needs --group (-g): name the cgroup path to create, e.g. -c memory -g myapp/job1")
	}
	if c.group != "" && len(c.controllers) == 0 {
		return fmt.Errorf("--group (-g) %q needs at least one --controller (-c): name the cgroup controllers to create it under, e.g. -c memory -g %s", c.group, c.group)
	}
	if len(c.sets) > 0 && len(c.controllers) == 0 {
		return fmt.Errorf("--set (-s) needs --controller (-c) and --group (-g): a setting is written into the group's controller files")
	}
	for _, kv := range c.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--env wants KEY=VALUE, got %q", kv)
		}
	}
	return nil
}

// checkShared validates the command line of ps_port --shared: no program,
// and only the flags that give every child its defaults.
func (c *config) checkShared(fs *flag.FlagSet, delayMS int) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("--shared takes no program (got %q): children are opened with {open, Id, Opts} frames, see docs/protocol.md", fs.Arg(0))
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "shared", "stdio-window", "stdin-limit", "delay-to-sigkill", "k":
		default:
			if err == nil {
				err = fmt.Errorf("--%s is per child: with --shared give it in the {open, Id, Opts} frame (see docs/protocol.md)", f.Name)
			}
		}
	})
	if err != nil {
		return err
	}
	return c.checkDefaults(delayMS)
}

// needsCgroups reports whether the command line asks for what only
// ps_port, with cgroups, does: a cgroup, or --shared (whose children may
// ask for one).
func (c *config) needsCgroups() bool {
	return c.shared || len(c.controllers) > 0 || c.group != "" || len(c.sets) > 0
}
