package port

import (
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/protonstream/ps_port/cgroup/cgspec"
	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/host"
	"github.com/protonstream/ps_port/internal/limits"
	"github.com/protonstream/ps_port/procctl"
)

// Bounds of the numeric options of an open frame: a node's too, from the
// table the shim reads (internal/limits).
var (
	maxWindow     = int64(limits.StdioWindowMax)
	maxStdinLimit = int64(limits.StdinLimitMax)
	maxDelayMS    = limits.DelayToSIGKILLMax.Milliseconds()
)

// badOption is an option of an open frame that was refused; it is
// reported as {spawn_error, Id, badarg, Message}.
type badOption struct{ key, why string }

func (e *badOption) Error() string {
	return "option " + e.key + ": " + e.why + " (see \"Shared mode\" in docs/protocol.md)"
}

func optError(key, format string, args ...any) error {
	return &badOption{key: key, why: fmt.Sprintf(format, args...)}
}

// request validates the options of {open, Id, Opts} into a host.Request.
func (sv *shared) request(opts etf.Term, base []string) (host.Request, error) {
	o := &openOptions{req: host.Request{
		BaseEnv:        base,
		Window:         sv.cfg.Window,
		StdinLimit:     sv.cfg.StdinLimit,
		DelayToSIGKILL: sv.cfg.DelayToSIGKILL,
	}}
	list, ok := opts.(etf.List)
	if !ok {
		return o.req, optError("list", "want Opts as a list of {key, value} tuples, got %s", describe(opts))
	}
	seen := make(map[etf.Atom]bool, len(list))
	for _, opt := range list {
		kv, ok := opt.(etf.Tuple)
		var key etf.Atom
		if ok && len(kv) == 2 {
			key, ok = kv[0].(etf.Atom)
		}
		if !ok || len(kv) != 2 {
			return o.req, optError("list", "want {key, value} tuples with atom keys, found %s", describe(opt))
		}
		if seen[key] {
			return o.req, optError(string(key), "given twice")
		}
		seen[key] = true
		if err := o.set(key, kv[1]); err != nil {
			return o.req, err
		}
	}
	return o.finish()
}

// openOptions is an open's request while its options are read.
type openOptions struct {
	req                        host.Request
	stderrToStdout, stderrOnly bool
	sets                       []string
}

// set reads option key's value v.
func (o *openOptions) set(key etf.Atom, v etf.Term) error {
	req := &o.req
	var err error
	switch key {
	case "program":
		if req.Program, err = text(key, v); err == nil && req.Program == "" {
			err = optError(string(key), "empty")
		}
	case "args":
		req.Args, err = texts(key, v)
	case "arg0":
		req.Arg0, err = text(key, v)
	case "cd":
		req.Dir, err = text(key, v)
	case "env":
		var pairs [][2]string
		if pairs, err = envList(v, true); err != nil {
			err = optError(string(key), "%v", err)
		}
		for _, p := range pairs {
			if p[1] == "\x00" { // false: unset
				req.Unset = append(req.Unset, p[0])
			} else {
				req.Env = append(req.Env, p[0]+"="+p[1])
			}
		}
	case "uid", "gid":
		n, isNum := v.(int64)
		var s string
		if !isNum {
			s, err = text(key, v)
		}
		if err == nil {
			s, err = host.IDOption(n, isNum, s)
		}
		if err != nil {
			err = optError(string(key), "want a name as a binary or a number 0..%d, got %s", host.MaxID, describe(v))
		}
		if key == "uid" {
			req.UID = s
		} else {
			req.GID = s
		}
	case "delay_to_sigkill":
		var n int64
		n, err = intIn(key, v, 0, maxDelayMS)
		req.DelayToSIGKILL = time.Duration(n) * time.Millisecond
	case "stdio_window":
		var n int64
		n, err = intIn(key, v, 1, maxWindow)
		req.Window = int(n)
	case "stdin_limit":
		var n int64
		n, err = intIn(key, v, 1, maxStdinLimit)
		req.StdinLimit = int(n)
	case "stderr_to_stdout":
		o.stderrToStdout, err = boolean(key, v)
	case "capture_stderr_only":
		o.stderrOnly, err = boolean(key, v)
	case "stdin_ack":
		req.StdinAck, err = boolean(key, v)
	case "cgroup_controllers":
		req.Cgroup.Controllers, err = texts(key, v)
	case "cgroup_path":
		req.Cgroup.Path, err = text(key, v)
	case "cgroup_sets":
		o.sets, err = texts(key, v)
	default:
		err = optError(string(key), "unknown option")
	}
	return err
}

// finish checks the options that go together and completes the request.
func (o *openOptions) finish() (host.Request, error) {
	req := o.req
	switch {
	case req.Program == "":
		return req, optError("program", "missing: {program, Binary} is required")
	case o.stderrToStdout && o.stderrOnly:
		return req, optError("capture_stderr_only", "excludes stderr_to_stdout")
	case len(req.Cgroup.Controllers) > 0 && req.Cgroup.Path == "":
		return req, optError("cgroup_controllers", "needs {cgroup_path, Binary}")
	case len(o.sets) > 0 && len(req.Cgroup.Controllers) == 0:
		return req, optError("cgroup_sets", "needs {cgroup_controllers, [Binary]} and {cgroup_path, Binary}")
	}
	for _, s := range o.sets {
		set, err := cgspec.ParseSet(s)
		if err != nil {
			return req, optError("cgroup_sets", "%v", err)
		}
		req.Cgroup.Sets = append(req.Cgroup.Sets, set)
	}
	if len(req.Cgroup.Controllers) == 0 {
		req.Cgroup.Path = "" // as in --packet mode: no controllers, no group
	}
	switch {
	case o.stderrToStdout:
		req.Stderr = procctl.ToStdout
	case o.stderrOnly:
		req.Stdout = procctl.Null
	}
	return req, nil
}

// text reads a binary without NUL bytes.
func text(key etf.Atom, v etf.Term) (string, error) {
	b, ok := v.([]byte)
	if !ok || strings.IndexByte(string(b), 0) >= 0 {
		return "", optError(string(key), "want a binary without NUL bytes, got %s", describe(v))
	}
	return string(b), nil
}

// texts reads a list of binaries without NUL bytes.
func texts(key etf.Atom, v etf.Term) ([]string, error) {
	l, ok := v.(etf.List)
	if !ok {
		return nil, optError(string(key), "want a list of binaries, got %s", describe(v))
	}
	out := make([]string, 0, len(l))
	for i, e := range l {
		b, ok := e.([]byte)
		if !ok || strings.IndexByte(string(b), 0) >= 0 {
			return nil, optError(string(key), "element %d: want a binary without NUL bytes, got %s", i+1, describe(e))
		}
		out = append(out, string(b))
	}
	return out, nil
}

func intIn(key etf.Atom, v etf.Term, lo, hi int64) (int64, error) {
	n, ok := v.(int64)
	if !ok || n < lo || n > hi {
		return 0, optError(string(key), "want an integer %d..%d, got %s", lo, hi, describe(v))
	}
	return n, nil
}

func boolean(key etf.Atom, v etf.Term) (bool, error) {
	switch v {
	case etf.Atom("true"):
		return true, nil
	case etf.Atom("false"):
		return false, nil
	}
	return false, optError(string(key), "want true or false, got %s", describe(v))
}

// envList reads [{Name, Value}] of binaries; with unset, a Value of false
// (or nil, Elixir's) is returned as "\x00" (no real value can hold a NUL byte).
func envList(v etf.Term, unset bool) ([][2]string, error) {
	l, ok := v.(etf.List)
	if !ok {
		return nil, fmt.Errorf("want a list of {Name, Value} tuples of binaries, got %s", describe(v))
	}
	out := make([][2]string, 0, len(l))
	for _, e := range l {
		kv, ok := e.(etf.Tuple)
		if !ok || len(kv) != 2 {
			return nil, fmt.Errorf("want {Name, Value} tuples, found %s", describe(e))
		}
		name, ok := kv[0].([]byte)
		if !ok || len(name) == 0 || strings.ContainsAny(string(name), "=\x00") {
			return nil, fmt.Errorf("want a name as a non-empty binary without '=' or NUL, found %s", describe(kv[0]))
		}
		if unset && (kv[1] == etf.Atom("false") || kv[1] == etf.Atom("nil")) {
			out = append(out, [2]string{string(name), "\x00"})
			continue
		}
		val, ok := kv[1].([]byte)
		if !ok || strings.IndexByte(string(val), 0) >= 0 {
			want := "a binary without NUL bytes"
			if unset {
				want += ", or false to unset"
			}
			return nil, fmt.Errorf("value of %s: want %s, got %s", name, want, describe(kv[1]))
		}
		out = append(out, [2]string{string(name), string(val)})
	}
	return out, nil
}

// describe writes a term in Erlang's syntax, cut to a readable length, for
// error messages.
func describe(t etf.Term) string {
	var b strings.Builder
	writeTerm(&b, t)
	if b.Len() > 200 {
		return b.String()[:200] + "..."
	}
	return b.String()
}

func writeTerm(b *strings.Builder, t etf.Term) {
	if b.Len() > 200 {
		return
	}
	switch v := t.(type) {
	case etf.Atom:
		b.WriteString(string(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case *big.Int:
		b.WriteString(v.String())
	case []byte:
		if len(v) > 64 {
			fmt.Fprintf(b, "<<%d bytes>>", len(v))
		} else {
			fmt.Fprintf(b, "<<%q>>", v)
		}
	case etf.Tuple:
		writeTerms(b, '{', v, '}')
	case etf.List:
		writeTerms(b, '[', v, ']')
	default:
		fmt.Fprintf(b, "%v", v)
	}
}

// writeTerms writes ts between open and close, separated by commas.
func writeTerms(b *strings.Builder, open byte, ts []etf.Term, close byte) {
	b.WriteByte(open)
	for i, e := range ts {
		if i > 0 {
			b.WriteString(", ")
		}
		writeTerm(b, e)
	}
	b.WriteByte(close)
}

// idSet is the set of ids whose children have ended, as sorted disjoint
// ranges: ids are counted up by the owner, so the ranges stay few (about
// one per child still running) however many children came and went.
type idSet struct{ r []idRange }

type idRange struct{ lo, hi int32 } // inclusive

// find is the index of the first range with hi >= id.
func (s *idSet) find(id int32) int {
	return sort.Search(len(s.r), func(i int) bool { return s.r[i].hi >= id })
}

func (s *idSet) has(id int32) bool {
	i := s.find(id)
	return i < len(s.r) && s.r[i].lo <= id
}

func (s *idSet) add(id int32) {
	i := s.find(id)
	if i < len(s.r) && s.r[i].lo <= id {
		return
	}
	joinPrev := i > 0 && s.r[i-1].hi == id-1
	joinNext := i < len(s.r) && s.r[i].lo == id+1
	switch {
	case joinPrev && joinNext:
		s.r[i-1].hi = s.r[i].hi
		s.r = append(s.r[:i], s.r[i+1:]...)
	case joinPrev:
		s.r[i-1].hi = id
	case joinNext:
		s.r[i].lo = id
	default:
		s.r = append(s.r, idRange{})
		copy(s.r[i+1:], s.r[i:])
		s.r[i] = idRange{id, id}
	}
}
