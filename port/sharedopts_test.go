package port

import (
	"strings"
	"testing"
	"time"

	"github.com/protonstream/ps_port/etf"
	"github.com/protonstream/ps_port/procctl"
)

func kv(k string, v etf.Term) etf.Tuple { return etf.Tuple{etf.Atom(k), v} }

func TestSharedRequestOptions(t *testing.T) {
	sv := &shared{cfg: SharedConfig{Window: 1000, StdinLimit: 2000, DelayToSIGKILL: time.Second}}
	req, err := sv.request(etf.List{
		kv("program", []byte("cat")), kv("args", etf.List{[]byte("-n"), []byte("x")}),
		kv("arg0", []byte("kitty")), kv("cd", []byte("/tmp")),
		kv("env", etf.List{etf.Tuple{[]byte("A"), []byte("1")}, etf.Tuple{[]byte("B"), etf.Atom("false")}, etf.Tuple{[]byte("C"), etf.Atom("nil")}}),
		kv("uid", int64(0)), kv("gid", []byte("root")),
		kv("delay_to_sigkill", int64(250)), kv("stdio_window", int64(4096)), kv("stdin_limit", int64(8192)),
		kv("stderr_to_stdout", etf.Atom("true")), kv("capture_stderr_only", etf.Atom("false")),
		kv("cgroup_controllers", etf.List{[]byte("memory")}), kv("cgroup_path", []byte("a/b")),
		kv("cgroup_sets", etf.List{[]byte("memory.limit_in_bytes=1000000")}),
	}, []string{"PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	want := struct {
		prog, arg0, dir, uid, gid string
		args, env, unset, base    string
		window, limit             int
		delay                     time.Duration
		stderr                    procctl.Stdio
		cg                        string
	}{"cat", "kitty", "/tmp", "0", "root", "-n x", "A=1", "B C", "PATH=/bin", 4096, 8192, 250 * time.Millisecond, procctl.ToStdout, "memory a/b memory.limit_in_bytes=1000000"}
	got := want
	got.prog, got.arg0, got.dir, got.uid, got.gid = req.Program, req.Arg0, req.Dir, req.UID, req.GID
	got.args, got.env, got.unset, got.base = strings.Join(req.Args, " "), strings.Join(req.Env, " "), strings.Join(req.Unset, " "), strings.Join(req.BaseEnv, " ")
	got.window, got.limit, got.delay, got.stderr = req.Window, req.StdinLimit, req.DelayToSIGKILL, req.Stderr
	var sets []string
	for _, s := range req.Cgroup.Sets {
		sets = append(sets, s.String())
	}
	got.cg = strings.Join(append(append(req.Cgroup.Controllers, req.Cgroup.Path), sets...), " ")
	if got != want {
		t.Errorf("request:\n got %+v\nwant %+v", got, want)
	}

	// Defaults come from the command line of ps_port --shared.
	req, err = sv.request(etf.List{kv("program", []byte("cat")), kv("cgroup_path", []byte("ignored"))}, nil)
	if err != nil || req.Window != 1000 || req.StdinLimit != 2000 || req.DelayToSIGKILL != time.Second ||
		req.BaseEnv != nil || req.Cgroup.Path != "" || req.Stderr != procctl.Pipe || req.Stdout != procctl.Pipe {
		t.Errorf("defaults: %+v, %v", req, err)
	}
	if req, _ := sv.request(etf.List{kv("program", []byte("cat")), kv("capture_stderr_only", etf.Atom("true"))}, nil); req.Stdout != procctl.Null {
		t.Errorf("capture_stderr_only: stdout %v, want Null", req.Stdout)
	}
}

// TestSharedRequestRefusals: every wrong option is refused, naming it.
func TestSharedRequestRefusals(t *testing.T) {
	sv := &shared{}
	prog := kv("program", []byte("cat"))
	cases := []struct {
		opts etf.Term
		want string
	}{
		{etf.Atom("x"), "want Opts as a list"},
		{etf.List{etf.Atom("program")}, "want {key, value} tuples with atom keys"},
		{etf.List{etf.Tuple{[]byte("program"), []byte("cat")}}, "want {key, value} tuples with atom keys"},
		{etf.List{}, "option program: missing"},
		{etf.List{kv("program", []byte(""))}, "option program: empty"},
		{etf.List{kv("program", []byte("a\x00b"))}, "option program: want a binary without NUL bytes"},
		{etf.List{prog, prog}, "option program: given twice"},
		{etf.List{prog, kv("args", []byte("x"))}, "option args: want a list of binaries"},
		{etf.List{prog, kv("args", etf.List{int64(1)})}, "option args: element 1: want a binary"},
		{etf.List{prog, kv("cd", etf.Atom("tmp"))}, "option cd: want a binary"},
		{etf.List{prog, kv("env", etf.List{etf.Tuple{[]byte(""), []byte("x")}})}, "option env: want a name as a non-empty binary"},
		{etf.List{prog, kv("env", etf.List{etf.Tuple{[]byte("A"), int64(1)}})}, "option env: value of A: want a binary without NUL bytes, or false to unset"},
		{etf.List{prog, kv("env", etf.List{[]byte("A=1")})}, "option env: want {Name, Value} tuples"},
		{etf.List{prog, kv("uid", int64(-1))}, "option uid: want a name as a binary or a number"},
		{etf.List{prog, kv("gid", []byte(""))}, "option gid: want a name"},
		{etf.List{prog, kv("delay_to_sigkill", int64(600001))}, "option delay_to_sigkill: want an integer 0..600000, got 600001"},
		{etf.List{prog, kv("stdio_window", int64(0))}, "option stdio_window: want an integer 1..67108864, got 0"},
		{etf.List{prog, kv("stdin_limit", []byte("1"))}, "option stdin_limit: want an integer 1..268435456"},
		{etf.List{prog, kv("stderr_to_stdout", int64(1))}, "option stderr_to_stdout: want true or false, got 1"},
		{etf.List{prog, kv("stderr_to_stdout", etf.Atom("true")), kv("capture_stderr_only", etf.Atom("true"))}, "option capture_stderr_only: excludes stderr_to_stdout"},
		{etf.List{prog, kv("cgroup_controllers", etf.List{[]byte("memory")})}, "option cgroup_controllers: needs {cgroup_path, Binary}"},
		{etf.List{prog, kv("cgroup_sets", etf.List{[]byte("memory.x=1")})}, "option cgroup_sets: needs {cgroup_controllers"},
		{etf.List{prog, kv("cgroup_controllers", etf.List{[]byte("memory")}), kv("cgroup_path", []byte("p")), kv("cgroup_sets", etf.List{[]byte("novalue")})}, "option cgroup_sets:"},
		{etf.List{prog, kv("parallelism", etf.Atom("true"))}, "option parallelism: unknown option"},
	}
	for _, c := range cases {
		_, err := sv.request(c.opts, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || ReasonOf(err) != "badarg" {
			t.Errorf("%s: error %v (reason %s), want badarg containing %q", describe(c.opts), err, ReasonOf(err), c.want)
		}
	}
}
