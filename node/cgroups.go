package node

import (
	"fmt"
	"strings"

	"github.com/ergo-services/ergo/etf"
	"github.com/protonstream/ps_port/cgroup"
)

// Group claims: a peer picks its child's cgroup path (cgroup_path), and a
// group inside another owner's live group would be counted against its
// limits and killed with it, one around it would take it in. So every
// group a live child holds is claimed for its owner, and a path that
// equals, lies inside or contains another owner's claim is refused.

// claimGroup claims path p (below --cgroup-base) for owner's new child.
func (n *Node) claimGroup(p string, owner etf.Pid) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for q, o := range n.groups {
		if o == owner {
			continue
		}
		if p == q || strings.HasPrefix(p, q+"/") || strings.HasPrefix(q, p+"/") {
			return &cgroupError{fmt.Errorf("cgroup %s: another owner's live child has the group %s; "+
				"a group may not be, lie inside or contain another owner's: pick a cgroup_path of your own", p, q)}
		}
	}
	n.groups[p] = owner
	return nil
}

// releaseGroup drops the claim on p once its group is gone.
func (n *Node) releaseGroup(p string) {
	n.mu.Lock()
	delete(n.groups, p)
	n.mu.Unlock()
}

// claimedGroup is a child's group; deleting it drops its claim.
type claimedGroup struct {
	*cgroup.Group
	n    *Node
	path string
}

// Delete removes the group and then its claim.
func (g *claimedGroup) Delete() error {
	err := g.Group.Delete()
	g.n.releaseGroup(g.path)
	return err
}
