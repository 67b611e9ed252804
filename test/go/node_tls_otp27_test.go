//go:build otp27

package blackbox

import "testing"

// TestOTP27NodeTLS runs the TLS node tests with OTP 27 owners (the chroot
// of otp27_test.go; its /tmp is the host's, so the certificates are seen
// there).
func TestOTP27NodeTLS(t *testing.T) {
	erl := otp27Erl(t)
	saved := erlCommand
	erlCommand = erl
	t.Cleanup(func() { erlCommand = saved })
	cookie := randomCookie()
	ps := startPsNode(t, cookie)
	if rel := otp27Release(startErl(t, cookie, ps.name)); rel != `"27"` {
		t.Fatalf("erl from the chroot runs OTP %s", rel)
	}
	t.Run("TLS", TestNodeTLS)
	t.Run("TLSDial", TestNodeTLSDial)
	t.Run("TLSPeerOnPlainNode", TestNodeTLSPeerOnPlainNode)
}
