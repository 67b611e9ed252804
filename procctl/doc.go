// Package procctl owns one child's life: it spawns the OS process (working
// directory, environment, arg0, credentials, its own session and process group,
// a parent-death signal), queues its stdin, reads its stdout and stderr under a
// flow-control window, reports how it ended, and takes its whole process tree
// down: SIGTERM to the group, a delay, then SIGKILL to the group, to every
// descendant that escaped it and to its containment (see Placement).
//
// Nothing here knows about framing: a Child hands its output to a Sink and the
// transport (port mode or node mode) decides how it travels.
//
// Forking happens on one OS thread that lives as long as the program, because
// the kernel's parent-death signal fires when the forking thread exits, not the
// process (golang/go#27505).
package procctl
