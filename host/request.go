// Package host runs one child's whole session, whatever the transport: it
// turns a transport-neutral Request into a started, contained process
// (environment, working directory, credentials, cgroup), applies the
// owner's requests to it (command, eof, ack, signal, stop) under one stdin
// rule, and reports how it ended (OOM kills, cgroup removal, exit status)
// through an Output. Transports (the port's codecs, node mode) only decode
// requests and encode what their Output is handed.
package host

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/protonstream/ps_port/cgroup/cgspec"
	"github.com/protonstream/ps_port/internal/limits"
	"github.com/protonstream/ps_port/procctl"
)

// DefaultStdinLimit is how many bytes may wait in a child's stdin queue
// before a command that would go past it is refused (docs/protocol.md).
// The shim reads the same table (internal/limits).
var DefaultStdinLimit = limits.StdinLimitDefault

// StdinNoticeBytes is how many stdin bytes written to the child's pipe make
// a session with stdin acks report them (or half the stdin limit, when
// that is less); an emptied queue reports whatever is left at once.
const StdinNoticeBytes = 64 << 10

// Request describes a child to start, independent of how the request
// travelled.
type Request struct {
	Program string   // resolved as execvp does, in Dir and with the child's PATH
	Args    []string // arguments after argv[0]
	Arg0    string   // argv[0]; Program when empty
	Dir     string   // working directory; ps_port's when empty

	// BaseEnv is the environment the child's starts from, "KEY=VALUE"
	// (os.Environ() when nil). Env entries are set over it, and Unset
	// names removed from it.
	BaseEnv []string
	Env     []string
	Unset   []string

	UID, GID string // user and group, by name or number; "" keeps ps_port's
	// Credential, when set, is used instead of looking up UID and GID: for
	// a transport with its own policy on who a child may run as (node).
	Credential *syscall.Credential

	// Exec, when set, is the program already opened and checked by the
	// transport (see procctl.Spec.Exec); Program then only names it.
	Exec *os.File

	// Where the standard streams go: procctl.Pipe (the zero value) for all
	// three streams in the {packet,4} protocols; Stderr procctl.ToStdout
	// merges stderr into stdout, Stdout procctl.Null captures stderr only.
	Stdin, Stdout, Stderr procctl.Stdio

	Window     int // flow-control window; procctl.DefaultWindow when 0
	MaxRead    int // largest output chunk (procctl.Spec.MaxRead); 64 KiB when 0
	StdinLimit int // see DefaultStdinLimit (used when 0)
	// StdinAck asks for Output.StdinWritten notices: stdin credit for an
	// owner that keeps a bounded amount of stdin in flight.
	StdinAck       bool
	DelayToSIGKILL time.Duration // between SIGTERM and SIGKILL
	Cgroup         cgspec.Spec   // no cgroup when Cgroup.Controllers is empty (made by NewGroup)
	// Group, when set, is a cgroup the transport made itself (node mode's
	// claimed groups); Cgroup is then ignored. The session deletes it.
	Group Group

	// Sweep: this program runs this one child only (see procctl.Spec.Sweep).
	Sweep bool
}

// NewGroup makes the cgroup of a Request whose Cgroup names controllers
// (cgroup.Create). ps_port (cmd/ps_port) sets it before starting anything
// (node mode makes its groups itself: Request.Group); it stays nil in ps_port_lean,
// which links nothing of the cgroup backend so that it starts lean, and
// where such a request is refused with reason "badcgroup". host does not
// import package cgroup itself for the same reason.
var NewGroup func(cgspec.Spec) (Group, error)

// ErrNoCgroups is the error of a cgroup asked of a binary without NewGroup.
var ErrNoCgroups = errors.New("this ps_port binary is built without cgroup support (ps_port_lean); run ps_port, beside it, for a cgroup")

// Group is a cgroup a child runs in: where it is placed before its first
// instruction, its OOM count, and its removal. *cgroup.Group is one.
type Group interface {
	procctl.Placement
	OOMKills() (uint64, error)
	Delete() error
}

// spec builds what procctl starts, without the cgroup.
func (r *Request) spec() (procctl.Spec, error) {
	cred := r.Credential
	if cred == nil {
		var err error
		if cred, err = procctl.LookupCredential(r.UID, r.GID); err != nil {
			return procctl.Spec{}, err
		}
	}
	base := r.BaseEnv
	if base == nil {
		base = os.Environ()
	}
	return procctl.Spec{
		Path:           r.Program,
		Exec:           r.Exec,
		Args:           r.Args,
		Arg0:           r.Arg0,
		Dir:            r.Dir,
		Env:            Environ(base, r.Env, r.Unset),
		Credential:     cred,
		Stdin:          r.Stdin,
		Stdout:         r.Stdout,
		Stderr:         r.Stderr,
		Window:         r.Window,
		MaxRead:        r.MaxRead,
		DelayToSIGKILL: r.DelayToSIGKILL,
		Sweep:          r.Sweep,
	}, nil
}

// Environ returns base with every "KEY=VALUE" of set applied (replacing
// KEY) and every key of unset removed; a key both set and unset is set.
func Environ(base, set, unset []string) []string {
	drop := make(map[string]bool, len(set)+len(unset))
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

// MaxID is the largest uid or gid.
const MaxID = 1<<32 - 1

// IDOption reads a uid or gid option as every transport takes it: a number
// 0..MaxID (num, when isNum) or a non-empty name. It returns the text
// Request.UID and Request.GID hold (procctl.LookupCredential reads it).
func IDOption(num int64, isNum bool, name string) (string, error) {
	switch {
	case isNum && num >= 0 && num <= MaxID:
		return strconv.FormatInt(num, 10), nil
	case isNum:
		return "", fmt.Errorf("want a name or a number 0..%d, got %d", MaxID, num)
	case name == "":
		return "", errors.New("empty")
	}
	return name, nil
}
