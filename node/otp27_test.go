//go:build otp27

package node

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// The OTP 27 side of unlinkid_erl_test.go, run by "make test-otp27" (build
// tag otp27): erl from the Debian 13 chroot that scripts/otp27.sh makes.
func TestOTP27DistWithErlang(t *testing.T) {
	script, err := filepath.Abs("../scripts/otp27.sh")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(script, "create").CombinedOutput(); err != nil {
		t.Fatalf("%s create: %v\n%s", script, err, out)
	}
	testDistWithErlang(t, []string{script, "run", "--", "erl"})
}
