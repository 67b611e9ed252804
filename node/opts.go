package node

import (
	"fmt"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/internal/limits"
	"github.com/protonstream/ps_port/procctl"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/protonstream/ps_port/cgroup"
)

// flowMode is how the owner's consumption of stdout/stderr is learned.
type flowMode int

const (
	// flowQueueLen: ps_port asks the owner's node for the owner's
	// message_queue_len (rpc to rex) when the window runs low. Works with
	// a plain receive loop.
	flowQueueLen flowMode = iota
	// flowAck: the owner sends {owner, {:ack, bytes}} for what it consumed.
	flowAck
)

// DefaultStdinLimit is how many bytes of stdin may wait for the child to
// read them before a {:command, _} that would go past it is refused
// (option stdin_limit): the host's, the same in every mode.
var DefaultStdinLimit = host.DefaultStdinLimit

// maxWindow, maxStdinLimit and maxDelay bound what a remote owner may ask
// for: the shared port's bounds, from the table the shim reads
// (internal/limits).
var (
	maxWindow     = int64(limits.StdioWindowMax)
	maxStdinLimit = int64(limits.StdinLimitMax)
	maxDelay      = limits.DelayToSIGKILLMax
)

// openRequest is a validated {:open, command, args, opts, owner}.
type openRequest struct {
	command string
	args    []string
	owner   etf.Pid

	dir, arg0 string
	env       []string // KEY=VALUE to set
	unset     []string // keys to remove

	controllers []string
	cgPath      string // exact group path below the node's base
	cgBase      string // group = base/cgBase/<random>
	cgWanted    bool
	sets        []cgroup.Set

	delay          time.Duration
	uid, gid       string
	window         int
	stderrToStdout bool
	stderrOnly     bool
	flow           flowMode
	stdinLimit     int
	stdinAck       bool
}

// badarg is an open option that was refused: {:badarg, option, why}.
type badarg struct {
	option string
	why    string
}

func (b *badarg) Error() string { return fmt.Sprintf("option %s: %s", b.option, b.why) }

func (b *badarg) term() etf.Term {
	return etf.Tuple{etf.Atom("badarg"), etf.Atom(b.option), []byte(b.why)}
}

func bad(option, format string, a ...interface{}) *badarg {
	return &badarg{option: option, why: fmt.Sprintf(format, a...)}
}

// parseOpen validates the arguments of {:open, command, args, opts, owner}.
func parseOpen(command, args, opts, owner etf.Term) (*openRequest, error) {
	r := &openRequest{
		delay:      procctl.DefaultDelayToSIGKILL,
		stdinLimit: DefaultStdinLimit,
	}
	var ok bool
	if r.command, ok = textOf(command); !ok || r.command == "" || strings.IndexByte(r.command, 0) >= 0 {
		return nil, bad("command", "want a non-empty binary or charlist without NUL bytes, got %s", describe(command))
	}
	argList, ok := args.(etf.List)
	if !ok {
		if s, isStr := args.(string); isStr { // a list of small integers: not a list of strings
			return nil, bad("args", "want a list of binaries or charlists, got the string %q", s)
		}
		return nil, bad("args", "want a list of binaries or charlists, got %s", describe(args))
	}
	for i, a := range argList {
		s, ok := textOf(a)
		if !ok || strings.IndexByte(s, 0) >= 0 {
			return nil, bad("args", "argument %d: want a binary or charlist without NUL bytes, got %s", i+1, describe(a))
		}
		r.args = append(r.args, s)
	}
	if r.owner, ok = owner.(etf.Pid); !ok {
		return nil, bad("owner", "want a pid, got %s", describe(owner))
	}
	kvs, err := keywords(opts)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, kv := range kvs {
		key, val := kv[0].(etf.Atom), kv[1]
		name := string(key)
		if seen[name] {
			return nil, bad(name, "given twice")
		}
		seen[name] = true
		if err := r.set(name, val); err != nil {
			return nil, err
		}
	}
	if r.stderrToStdout && r.stderrOnly {
		return nil, bad("capture_stderr_only", "excludes stderr_to_stdout")
	}
	if r.cgPath != "" && r.cgBase != "" {
		return nil, bad("cgroup_path", "excludes cgroup_base")
	}
	// As in proton_stream, a cgroup path without controllers makes no group.
	r.cgWanted = len(r.controllers) > 0
	for _, s := range r.sets {
		found := false
		for _, c := range r.controllers {
			found = found || c == s.Controller
		}
		if !found {
			return nil, bad("cgroup_sets", "controller %q of %s is not in cgroup_controllers", s.Controller, s.Key)
		}
	}
	return r, nil
}

// keywords reads a keyword list or a map with atom keys into pairs.
func keywords(opts etf.Term) ([][2]etf.Term, error) {
	var out [][2]etf.Term
	switch v := opts.(type) {
	case etf.List:
		for _, e := range v {
			tu, ok := e.(etf.Tuple)
			if !ok || len(tu) != 2 {
				return nil, bad("opts", "want a keyword list of {atom, value} or a map, found %s", describe(e))
			}
			if _, ok := tu[0].(etf.Atom); !ok {
				return nil, bad("opts", "want atom keys, found %s", describe(tu[0]))
			}
			out = append(out, [2]etf.Term{tu[0], tu[1]})
		}
	case etf.Map:
		for k, val := range v {
			if _, ok := k.(etf.Atom); !ok {
				return nil, bad("opts", "want atom keys, found %s", describe(k))
			}
			out = append(out, [2]etf.Term{k, val})
		}
	default:
		return nil, bad("opts", "want a keyword list or a map, got %s", describe(opts))
	}
	return out, nil
}

func (r *openRequest) set(name string, v etf.Term) error {
	text := func() (string, error) {
		s, ok := textOf(v)
		if !ok || strings.IndexByte(s, 0) >= 0 {
			return "", bad(name, "want a binary or charlist without NUL bytes, got %s", describe(v))
		}
		return s, nil
	}
	nonNeg := func(max int64) (int64, error) {
		n, ok := intOf(v)
		if !ok || n < 0 || n > max {
			return 0, bad(name, "want an integer 0..%d, got %s", max, describe(v))
		}
		return n, nil
	}
	flag := func(p *bool) error {
		b, ok := boolOf(v)
		if !ok {
			return bad(name, "want true or false, got %s", describe(v))
		}
		*p = b
		return nil
	}
	var err error
	switch name {
	case "cd":
		r.dir, err = text()
	case "arg0":
		r.arg0, err = text()
	case "env":
		err = r.setEnv(v)
	case "cgroup_controllers":
		l, ok := v.(etf.List)
		if !ok {
			return bad(name, "want a list of controller names (binaries or charlists), got %s", describe(v))
		}
		for _, e := range l {
			s, ok := textOf(e)
			if !ok || s == "" {
				return bad(name, "want controller names as binaries or charlists, found %s", describe(e))
			}
			r.controllers = append(r.controllers, s)
		}
	case "cgroup_path":
		if r.cgPath, err = text(); err == nil {
			err = relPath(name, r.cgPath)
		}
	case "cgroup_base":
		if r.cgBase, err = text(); err == nil {
			err = relPath(name, r.cgBase)
		}
	case "cgroup_sets":
		err = r.setSets(v)
	case "delay_to_sigkill":
		var n int64
		if n, err = nonNeg(int64(maxDelay / time.Millisecond)); err == nil {
			r.delay = time.Duration(n) * time.Millisecond
		}
	case "uid", "gid":
		n, isNum := intOf(v)
		var s string
		if !isNum {
			s, err = text()
		}
		if err == nil {
			if s, err = host.IDOption(n, isNum, s); err != nil {
				err = bad(name, "%v", err)
			}
		}
		if name == "uid" {
			r.uid = s
		} else {
			r.gid = s
		}
	case "stdio_window":
		var n int64
		if n, err = nonNeg(maxWindow); err == nil {
			if n == 0 {
				return bad(name, "must be at least 1")
			}
			r.window = int(n)
		}
	case "stdin_limit":
		var n int64
		if n, err = nonNeg(maxStdinLimit); err == nil {
			if n == 0 {
				return bad(name, "must be at least 1")
			}
			r.stdinLimit = int(n)
		}
	case "parallelism": // a Port.open option: meaningless here, accepted for the shim
		var ignored bool
		err = flag(&ignored)
	case "stdin_ack":
		err = flag(&r.stdinAck)
	case "stderr_to_stdout":
		err = flag(&r.stderrToStdout)
	case "capture_stderr_only":
		err = flag(&r.stderrOnly)
	case "flow":
		switch {
		case isAtom(v, "queue_len"):
			r.flow = flowQueueLen
		case isAtom(v, "ack"):
			r.flow = flowAck
		default:
			return bad(name, "want :queue_len or :ack, got %s", describe(v))
		}
	default:
		return bad(name, "unknown option")
	}
	return err
}

func (r *openRequest) setEnv(v etf.Term) error {
	var pairs [][2]etf.Term
	switch e := v.(type) {
	case etf.List:
		for _, x := range e {
			tu, ok := x.(etf.Tuple)
			if !ok || len(tu) != 2 {
				return bad("env", "want a list of {name, value} tuples, found %s", describe(x))
			}
			pairs = append(pairs, [2]etf.Term{tu[0], tu[1]})
		}
	case etf.Map:
		for k, val := range e {
			pairs = append(pairs, [2]etf.Term{k, val})
		}
	default:
		return bad("env", "want a list of {name, value} tuples or a map, got %s", describe(v))
	}
	for _, p := range pairs {
		k, ok := textOf(p[0])
		if !ok || k == "" || strings.ContainsAny(k, "=\x00") {
			return bad("env", "want names as non-empty binaries or charlists without '=' or NUL, found %s", describe(p[0]))
		}
		if b, isBool := p[1].(bool); (isBool && !b) || isAtom(p[1], "false") || isAtom(p[1], "nil") {
			r.unset = append(r.unset, k)
			continue
		}
		val, ok := textOf(p[1])
		if !ok || strings.IndexByte(val, 0) >= 0 {
			return bad("env", "value of %s: want a binary, a charlist, false or nil, got %s", k, describe(p[1]))
		}
		r.env = append(r.env, k+"="+val)
	}
	return nil
}

func (r *openRequest) setSets(v etf.Term) error {
	l, ok := v.(etf.List)
	if !ok {
		return bad("cgroup_sets", "want a list of {controller, key, value} tuples, got %s", describe(v))
	}
	for _, e := range l {
		var key, val string
		switch x := e.(type) {
		case etf.Tuple:
			if len(x) != 3 && len(x) != 2 {
				return bad("cgroup_sets", "want {controller, key, value} or {key, value}, found %s", describe(e))
			}
			var strs []string
			for _, f := range x {
				s, ok := textOf(f)
				if !ok {
					if n, isInt := intOf(f); isInt {
						s = strconv.FormatInt(n, 10)
					} else {
						return bad("cgroup_sets", "want binaries or charlists in %s", describe(e))
					}
				}
				strs = append(strs, s)
			}
			key, val = strs[len(strs)-2], strs[len(strs)-1]
			if len(strs) == 3 {
				if c, _, _ := strings.Cut(key, "."); c != strs[0] {
					return bad("cgroup_sets", "controller %q does not match key %q", strs[0], key)
				}
			}
		default:
			s, ok := textOf(e)
			if !ok {
				return bad("cgroup_sets", "want {controller, key, value} tuples or \"KEY=VALUE\" strings, found %s", describe(e))
			}
			var found bool
			if key, val, found = strings.Cut(s, "="); !found {
				return bad("cgroup_sets", "want KEY=VALUE, got %q", s)
			}
		}
		set, err := cgroup.ParseSet(key + "=" + val)
		if err != nil {
			return bad("cgroup_sets", "%v", err)
		}
		r.sets = append(r.sets, set)
	}
	return nil
}

// relPath checks that p is a clean relative path without "..".
func relPath(option, p string) error {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "." ||
		strings.Contains("/"+p+"/", "/../") || strings.ContainsAny(p, "\x00\n") {
		return bad(option, "want a clean relative path without \"..\", got %q", p)
	}
	return nil
}

// environ applies the request's env and unset to base, as every mode does
// (host.Environ).
func (r *openRequest) environ(base []string) []string {
	return host.Environ(base, r.env, r.unset)
}
