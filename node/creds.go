package node

import (
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/protonstream/ps_port/procctl"
)

// idSet is an --allow-uid or --allow-gid list: ids and ranges.
type idSet struct {
	ids    map[uint32]bool
	ranges [][2]uint32 // inclusive; never hold 0 (root is only ever named)
}

func (s *idSet) has(id uint32) bool {
	if s.ids[id] {
		return true
	}
	for _, r := range s.ranges {
		if id != 0 && id >= r[0] && id <= r[1] {
			return true
		}
	}
	return false
}

// parseIDs reads --allow-uid (group false) or --allow-gid (group true)
// values: a name, a number or a range LOW-HIGH. A range never includes 0:
// root is allowed only by naming it (0 or root).
func parseIDs(flag string, values []string, group bool) (*idSet, error) {
	s := &idSet{ids: map[uint32]bool{}}
	for _, v := range values {
		if lo, hi, ok := strings.Cut(v, "-"); ok {
			a, err1 := strconv.ParseUint(lo, 10, 32)
			b, err2 := strconv.ParseUint(hi, 10, 32)
			if err1 != nil || err2 != nil || a > b {
				return nil, fmt.Errorf("%s %q: want a name, a number or a range LOW-HIGH of numbers", flag, v)
			}
			s.ranges = append(s.ranges, [2]uint32{uint32(a), uint32(b)})
			continue
		}
		id, err := procctl.LookupID(v, group)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %v", flag, v, err)
		}
		s.ids[id] = true
	}
	return s, nil
}

// credential resolves the request's uid and gid into what the child runs
// as, and checks them. On a node running as root a peer may only pick a
// user in --allow-uid and a group in --allow-gid, the user's own primary
// group, or the node's own user and group; a user without a passwd entry
// has no group of its own, so it needs a gid. A node running as another
// user can only run children as itself: the kernel refuses the rest
// (procctl says so), and the lists do not apply.
func (n *Node) credential(req *openRequest) (*syscall.Credential, error) {
	if req.uid == "" && req.gid == "" {
		return nil, nil
	}
	root := os.Geteuid() == 0
	if root && req.uid != "" {
		// The list first: a peer learns nothing of users it may not pick.
		if id, err := procctl.LookupID(req.uid, false); err == nil && id != uint32(os.Getuid()) && !n.allowUID.has(id) {
			return nil, bad("uid", "uid %d (%s) is not allowed on this node: it runs children as uid %d unless started with --allow-uid %s",
				id, req.uid, os.Getuid(), req.uid)
		}
	}
	cred, err := procctl.LookupCredential(req.uid, req.gid)
	if err != nil {
		return nil, err
	}
	if !root {
		return cred, nil
	}
	primary := uint32(os.Getgid())
	if req.uid != "" {
		// procctl refused a uid without a passwd entry and without a gid.
		if u, err := user.LookupId(strconv.FormatUint(uint64(cred.Uid), 10)); err == nil {
			g, _ := strconv.ParseUint(u.Gid, 10, 32)
			primary = uint32(g)
		}
	}
	if req.gid != "" && cred.Gid != primary && cred.Gid != uint32(os.Getgid()) && !n.allowGID.has(cred.Gid) {
		return nil, bad("gid", "gid %d (%s) is not allowed on this node: it is not the user's primary group; start ps_port node with --allow-gid %s",
			cred.Gid, req.gid, req.gid)
	}
	return cred, nil
}

// describeIDs lists a set for the startup log.
func (s *idSet) String() string {
	var parts []string
	for id := range s.ids {
		parts = append(parts, strconv.FormatUint(uint64(id), 10))
	}
	sort.Strings(parts)
	for _, r := range s.ranges {
		parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
	}
	return strings.Join(parts, ",")
}
