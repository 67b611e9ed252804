package node

import (
	"context"

	"github.com/ergo-services/ergo/lib"
	ergonode "github.com/ergo-services/ergo/node"
)

// plainAtomsProto is ergo's distribution protocol with the header atom
// cache off for what this node sends. ergo's cache bookkeeping hands the
// empty atom (in every SEND control message) the last cache slot and can
// mark it as known to the peer before the peer has it; OTP 25 then drops
// the connection with "corrupted distribution header" (seen here about once
// in 30 test runs, on the first data message of a connection). Every
// message still goes out with a distribution header, just with no cached
// atoms; the peer's flag stays advertised, so OTP is not surprised, and
// what OTP sends is decoded as before (the receiving side ignores the flag).
type plainAtomsProto struct {
	ergonode.ProtoInterface
}

// Init implements ergonode.ProtoInterface.
func (p plainAtomsProto) Init(ctx context.Context, conn lib.NetReadWriter, nodename string,
	details ergonode.HandshakeDetails) (ergonode.ConnectionInterface, error) {
	details.Flags.EnableHeaderAtomCache = false
	return p.ProtoInterface.Init(ctx, conn, nodename, details)
}
