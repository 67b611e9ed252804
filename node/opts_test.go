package node

import (
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ergo-services/ergo/etf"
)

var owner = etf.Pid{Node: "a@b", ID: 1, Creation: 1}

func kw(kv ...interface{}) etf.List {
	var l etf.List
	for i := 0; i < len(kv); i += 2 {
		l = append(l, etf.Tuple{etf.Atom(kv[i].(string)), kv[i+1]})
	}
	return l
}

func TestParseOpenAcceptsShimOptions(t *testing.T) {
	r, err := parseOpen([]byte("cat"), etf.List{[]byte("-n"), "x"}, kw(
		"cd", []byte("/tmp"),
		"env", etf.List{etf.Tuple{"FOO", "bar"}, etf.Tuple{[]byte("GONE"), false}, etf.Tuple{"NIL", etf.Atom("nil")}},
		"arg0", etf.List{int64(0x65e5)}, // a charlist with a code point above 255
		"cgroup_controllers", etf.List{[]byte("memory")},
		"cgroup_path", []byte("jobs/1"),
		"cgroup_sets", etf.List{etf.Tuple{[]byte("memory"), []byte("memory.limit_in_bytes"), []byte("1000000")}},
		"delay_to_sigkill", 250,
		"uid", 1000,
		"gid", []byte("users"),
		"stdio_window", int64(70000),
		"stderr_to_stdout", true,
		"flow", etf.Atom("ack"),
		"stdin_limit", 5000,
		"stdin_ack", true,
		"parallelism", true,
	), owner)
	if err != nil {
		t.Fatal(err)
	}
	if r.command != "cat" || strings.Join(r.args, " ") != "-n x" || r.dir != "/tmp" || r.arg0 != "日" ||
		r.delay != 250*time.Millisecond || r.uid != "1000" || r.gid != "users" || r.window != 70000 ||
		!r.stderrToStdout || r.flow != flowAck || r.stdinLimit != 5000 || !r.stdinAck || !r.cgWanted || r.cgPath != "jobs/1" ||
		len(r.sets) != 1 || r.sets[0].Key != "memory.limit_in_bytes" {
		t.Fatalf("%+v", r)
	}
	env := r.environ([]string{"GONE=1", "NIL=2", "KEEP=3", "FOO=old"})
	if strings.Join(env, " ") != "KEEP=3 FOO=bar" {
		t.Fatalf("env %v", env)
	}
	// A map works as well as a keyword list.
	if _, err := parseOpen("cat", etf.List{}, etf.Map{etf.Atom("cd"): "/"}, owner); err != nil {
		t.Fatal(err)
	}
}

func TestParseOpenRefusesBadOptions(t *testing.T) {
	for _, c := range []struct {
		command, args, opts etf.Term
		option              string
	}{
		{[]byte(""), etf.List{}, etf.List{}, "command"},
		{[]byte("a\x00b"), etf.List{}, etf.List{}, "command"},
		{etf.Atom("cat"), etf.List{}, etf.List{}, "command"},
		{"cat", "abc", etf.List{}, "args"},
		{"cat", etf.List{etf.Atom("x")}, etf.List{}, "args"},
		{"cat", etf.List{}, etf.Atom("x"), "opts"},
		{"cat", etf.List{}, etf.List{etf.Atom("cd")}, "opts"},
		{"cat", etf.List{}, kw("nope", 1), "nope"},
		{"cat", etf.List{}, kw("cd", 1), "cd"},
		{"cat", etf.List{}, kw("cd", "a", "cd", "b"), "cd"},
		{"cat", etf.List{}, kw("env", etf.List{etf.Tuple{"A=B", "c"}}), "env"},
		{"cat", etf.List{}, kw("env", etf.List{etf.Tuple{"A", 1}}), "env"},
		{"cat", etf.List{}, kw("delay_to_sigkill", -1), "delay_to_sigkill"},
		{"cat", etf.List{}, kw("stdio_window", 0), "stdio_window"},
		{"cat", etf.List{}, kw("stdio_window", new(big.Int).Lsh(big.NewInt(1), 80)), "stdio_window"},
		{"cat", etf.List{}, kw("stderr_to_stdout", etf.Atom("yes")), "stderr_to_stdout"},
		{"cat", etf.List{}, kw("stderr_to_stdout", true, "capture_stderr_only", true), "capture_stderr_only"},
		{"cat", etf.List{}, kw("cgroup_path", "../x"), "cgroup_path"},
		{"cat", etf.List{}, kw("cgroup_path", "/abs"), "cgroup_path"},
		{"cat", etf.List{}, kw("cgroup_path", "a", "cgroup_base", "b"), "cgroup_path"},
		{"cat", etf.List{}, kw("cgroup_sets", etf.List{etf.Tuple{"memory", "memory.x", "1"}}), "cgroup_sets"},
		{"cat", etf.List{}, kw("cgroup_controllers", etf.List{"cpu"}, "cgroup_sets", etf.List{etf.Tuple{"memory", "cpu.x", "1"}}), "cgroup_sets"},
		{"cat", etf.List{}, kw("flow", etf.List{}), "flow"},
		{"cat", etf.List{}, kw("flow", etf.Map{}), "flow"},
	} {
		_, err := parseOpen(c.command, c.args, c.opts, owner)
		var ba *badarg
		if !errors.As(err, &ba) || ba.option != c.option {
			t.Errorf("%v %v %v: got %v, want badarg on %s", c.command, c.args, c.opts, err, c.option)
		}
	}
	if _, err := parseOpen("cat", etf.List{}, etf.List{}, "notapid"); err == nil {
		t.Error("a non-pid owner was accepted")
	}
}

func TestIodata(t *testing.T) {
	in := etf.List{97, "bc", etf.List{[]byte("de"), []byte("f")}, int64(10)}
	if n := iodataSize(in, 0); n != 7 {
		t.Fatalf("size %d", n)
	}
	b, err := appendIodata(nil, in, 0)
	if err != nil || string(b) != "abcdef\n" {
		t.Fatalf("%q %v", b, err)
	}
	for _, bad := range []etf.Term{etf.Atom("x"), etf.List{256}, etf.List{-1}, etf.Tuple{}, 3} {
		if iodataSize(bad, 0) >= 0 {
			t.Errorf("%v taken for iodata", bad)
		}
	}
	deep := etf.Term([]byte("x"))
	for i := 0; i < 200; i++ {
		deep = etf.List{deep}
	}
	if iodataSize(deep, 0) >= 0 {
		t.Error("200-deep iolist accepted")
	}
}

func TestAllowed(t *testing.T) {
	if !allowedPath([]string{"/usr/bin/*"}, "/usr/bin/cat") || allowedPath([]string{"/usr/bin/*"}, "/usr/bin/x/cat") ||
		allowedPath([]string{"/opt/*"}, "/usr/bin/cat") || !allowedPath([]string{"/opt/*"}, "/x", "/opt/y") {
		t.Fatal("glob semantics")
	}
	if err := checkPatterns([]string{"relative/*"}); err == nil {
		t.Fatal("relative pattern accepted")
	}
	if err := checkPatterns([]string{"/a/[x"}); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

func TestParseCall(t *testing.T) {
	ref := etf.Ref{Node: "a@b", ID: [5]uint32{1, 2, 3}}
	from, req, ok := parseCall(etf.Tuple{etf.Atom("$gen_call"), etf.Tuple{owner, etf.List{etf.Atom("alias"), ref}}, etf.Atom("$os_pid")})
	if !ok || !from.alias || from.ref != ref || !isAtom(req, "$os_pid") {
		t.Fatalf("%v %v %v", from, req, ok)
	}
	to, msg := from.replyTo(42)
	if to != etf.Alias(ref) || msg.(etf.Tuple)[1] != 42 {
		t.Fatalf("%v %v", to, msg)
	}
	if _, _, ok := parseCall(etf.Tuple{etf.Atom("$gen_call"), etf.Tuple{owner, etf.List{etf.List{}, ref}}, 1}); ok {
		t.Fatal("bad tag accepted")
	}
}
