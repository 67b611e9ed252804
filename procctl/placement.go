package procctl

// Placement puts a child into its containment before its first instruction.
// cgroup.Group implements it; a nil Placement means no containment beyond the
// child's process group and ps_port's subreaper sweep.
type Placement interface {
	// EnterThread moves the calling OS thread into the containment, so that a
	// child forked from it starts inside (cgroup v1 accepts thread ids in its
	// "tasks" files). leave moves the thread back. It is called on the locked
	// forker thread right before the fork, and leave right after it.
	EnterThread() (leave func() error, err error)

	// CgroupFD returns an open directory fd of a cgroup v2 group to clone the
	// child into (CLONE_INTO_CGROUP), or -1 when there is none.
	CgroupFD() int

	// Kill SIGKILLs every process in the containment and returns when none is
	// left (or reports why it could not).
	Kill() error
}
