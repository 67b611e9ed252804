// Package procctl owns one child's life: it spawns the OS process (working
// directory, environment, arg0, credentials, its own session and process group,
// a parent-death signal), queues its stdin, reads its stdout and stderr under a
// flow-control window, reports how it ended, and takes its whole process tree
// down.
//
// Nothing here knows about framing: a Child hands its output to a Sink and the
// transport (port mode or node mode) decides how it travels.
//
// Forking happens on one OS thread that lives as long as the program, because
// the kernel's parent-death signal fires when the forking thread exits, not the
// process (golang/go#27505).
//
// # Taking a tree down
//
// Termination costs O(1) per child, never a scan of every process (tree.go):
// SIGTERM to the child's process group, sent through its pidfd
// (PIDFD_SIGNAL_PROCESS_GROUP, so it stays right after the child is reaped
// and its pid reused), and to the escapees already reparented to this
// program; after DelayToSIGKILL, SIGKILL to the group, to the escapees and to
// the child's containment (see Placement), in rounds until the group is
// empty and no escapee is left. Escapees (a setsid'd double fork) are found
// among this program's own children (with BecomeSubreaper every orphan of a
// child is reparented to its main thread, and /proc/self/task/PID/children
// lists them; every Child is forked by another thread, so the list holds
// orphans only) by the marker they inherited (MarkerEnv), or with
// Spec.Sweep as the orphans of the one child. A marker is read whole: not
// while the process execs, when /proc/PID/environ reads empty or cut short
// (readEnviron).
// Terminations that happen together share those listings (one per round,
// whatever the number of children), and orphans are signalled under the
// lock their reaping takes, so a pid is never signalled after it could have
// been reused.
//
// # When this program dies
//
// A program killed without a chance to clean up (SIGKILL, a crash) takes
// its children with it (parent-death signal), but not their children. So a
// program that starts children calls Register: it enters itself in a state
// directory (StateDir, /run/ps_port/live: one locked file per live program,
// named by its pid and instance id), and looks, in the background, for the
// entries of programs that died; for each one found, a scan of /proc kills
// every process whose marker carries the dead program's instance id, and
// the caller's hook reclaims the cgroups it left. A live program's entry is
// locked, so its children are never touched; a start pays one lock attempt
// per live program, and the scan of /proc only when one died.
package procctl
