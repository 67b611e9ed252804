// Package cgroup contains ps_port's children in Linux control groups and
// applies limits to them. It works on cgroup v1 (legacy), hybrid and v2
// (unified) hosts, creating groups through github.com/containerd/cgroups/v3.
//
// A Spec names the controllers, a group path relative to each hierarchy's
// root (MuonTrap's --group), and key=value settings (MuonTrap's --set).
// Create makes the group; the resulting *Group implements
// procctl.Placement:
//
//   - v1 and hybrid: EnterThread writes the calling OS thread's id to the
//     "tasks" file of each v1 group, so a child forked from that thread is
//     born inside them; leave moves the thread back to the groups it came
//     from. The caller must hold runtime.LockOSThread from EnterThread until
//     leave has returned, and fork in between. Measured on kernel 6.18
//     (hybrid): the single-thread move works for every mounted v1 controller
//     (cpu, cpuacct, cpuset, memory, devices, freezer, blkio, pids,
//     name=systemd), and the child starts in all of them. No gate is needed.
//   - hybrid and v2: the group also exists in the cgroup2 tree (on hybrid the
//     controller-less one at /sys/fs/cgroup/unified). CgroupFD returns an open
//     directory fd of it for clone3(CLONE_INTO_CGROUP)
//     (syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}), so even a child
//     that forks at once is tracked without a race. On v2 EnterThread does
//     nothing.
//   - Kill SIGKILLs every member and returns only when the group is empty.
//     It writes "cgroup.kill" when there is a cgroup2 group (kernel 5.14+).
//     Otherwise it repeats read-members/SIGKILL until none is left, freezing
//     the group around each round when a freezer is available (the v1
//     freezer controller when it was asked for, or cgroup.freeze on v2; never
//     while a forker thread is inside, which would freeze ps_port itself).
//     It never waits on pids, so the child's exit status stays with its
//     reaper: zombies are not members (measured: cgroup.procs, "populated"
//     and rmdir all treat a killed, unreaped child as gone).
//   - Delete removes every directory Create made, retrying on EBUSY with a
//     short backoff for up to a second while the kernel finishes releasing
//     the last tasks (on kernel 6.18 rmdir right after Kill has not needed a
//     retry in any test run).
//   - Hybrid hosts whose cgroup2 tree is not writable (EACCES, EPERM, EROFS)
//     get groups that work as on pure v1: CgroupFD is -1, Kill loops.
//
// The process that calls these methods is never a member as far as Procs and
// Kill are concerned: its forker thread passes through the v1 groups during
// EnterThread, which makes its pid appear in their cgroup.procs for a moment.
//
// # Inside
//
// Each kind of hierarchy is a backend with the same verbs (members, kill
// file, OOM count, freezer, directories, removal): v1Group (v1.go) holds the
// group's directory in each v1 hierarchy, v2Group (v2.go) its directory in
// a cgroup2 tree. Create (group.go) picks them by the host's mode, once: a
// v1 host has v1Group, a v2 host v2Group, a hybrid host both (v2Group in the
// controller-less tree, dropped when that tree is not writable); every verb
// of Group applies the backends it has in turn. Leases and the reclaiming of
// dead ps_ports' groups are in reclaim.go.
//
// # Settings on v2
//
// Settings are written in the order given, each as one write of the value to
// the file named by its key. On a v2 host these v1 keys are translated:
//
//	memory.limit_in_bytes=N          memory.max=N ("max" for -1)
//	cpu.cfs_quota_us=Q, cpu.cfs_period_us=P
//	                                 cpu.max="Q P" (one write, where the first of
//	                                 the two was; Q "max" for -1 or absent,
//	                                 P 100000 when absent)
//	cpu.shares=S                     cpu.weight=W (containerd's mapping:
//	                                 2→1, 1024→100, 262144→10000)
//
// Every other key is written as is, so v2 keys (memory.high, pids.max,
// io.max, ...) work, and a v1-only key fails with an error naming it. The v1
// controller names cpuacct, devices, freezer, net_cls, net_prio and
// perf_event have no cgroup.subtree_control entry on v2 (their function is
// built in) and are accepted without enabling anything; blkio means io.
//
// # Limits worth knowing
//
//   - pids.max counts the forker thread while it is inside (with pids.max=1
//     the fork itself fails with EAGAIN), so EnterThread raises a numeric
//     pids.max by one until leave. In the microseconds between the child's
//     exec and leave, the child could start one process more than the limit.
//   - A cpu quota that the group has already used up can delay the forker
//     thread inside EnterThread…leave by up to one period.
//   - Moving the forker thread through a cpuset resets its CPU affinity to
//     the cpuset of the group it returns to.
//   - Like MuonTrap, Create refuses a group directory that already exists
//     (another run may be using it). Parents are created as needed; Delete
//     removes the ones this group created unless another group still lives
//     in them, and leaves parents that existed before (for example a base
//     made with cgcreate to grant a user access).
package cgroup
