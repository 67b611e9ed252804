// Command ps_port_node is ps_port's node mode (docs/node.md): a distributed
// Erlang node, on ergo, hosting many processes for remote owners. It is a
// binary of its own so that port mode, which runs once per child, does not
// link ergo, TLS and net/http and pay for their package initialisation at
// every start; "ps_port node ARGS" execs it (it must sit beside ps_port, as
// make build and the shim's compiler put it).
package main

import (
	"os"
	"strings"
)

func main() {
	os.Exit(nodeMain(os.Args[1:]))
}

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }
