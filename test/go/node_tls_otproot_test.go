//go:build otproot

package blackbox

import "testing"

// TestOTPRootNodeTLS runs the TLS node tests with owners on the OTP of the
// root PS_OTP_ROOT names (otproot_test.go; the root's /tmp is the host's, so
// the certificates are seen there).
func TestOTPRootNodeTLS(t *testing.T) {
	withRootErl(t)
	t.Run("TLS", TestNodeTLS)
	t.Run("TLSDial", TestNodeTLSDial)
	t.Run("TLSPeerOnPlainNode", TestNodeTLSPeerOnPlainNode)
}
