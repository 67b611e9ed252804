// Package node is ps_port's node mode (docs/node.md): an ergo node that
// Erlang/OTP nodes ask, by a gen:call to its registered process
// proton_stream, to run programs for owner processes of theirs. Each child
// is a host.Session whose output goes to its owner as messages, with flow
// control over distribution, and which dies with its owner.
//
// Its files:
//
//   - node.go: Config, Start (checks, ergo's options from otpdist, the
//     registered spawner), handling an open;
//   - opts.go: an open's options, read from the terms a peer sent;
//   - allow.go, creds.go, cgroups.go: what a peer may run, as whom, in
//     which cgroup;
//   - child.go: one child, its owner's requests and its output queue;
//   - direct.go, move.go: a child's messages written straight to its
//     owner's connection (otpdist.Direct), skipping ergo's sender, its
//     output spliced from the pipe when it can (procctl.Mover);
//   - flow.go: credit from the owner's message_queue_len (flow: :queue_len);
//   - loop.go, route.go: the node's processes, which take the network's
//     messages from the connection's reader directly;
//   - rpc.go: calls to the owners' nodes (queue lengths, liveness);
//   - memory.go: heap given back to the OS after a burst;
//   - logs.go: ergo's log lines, filtered, to the node's logger;
//   - terms.go: reading the terms ergo decodes.
//
// The distribution protocol itself, and the translation that lets ergo
// talk to OTP 26 and later, are package otpdist.
package node
