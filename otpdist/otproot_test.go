//go:build otproot

package otpdist

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The other side of erl_test.go, run by "make test-otp REL=..."
// (build tag otproot): erl from the chroot of the Debian release that
// PS_OTP_ROOT names (scripts/otp-root.sh; trixie: OTP 27, sid: the newest).
func TestOTPRootDistWithErlang(t *testing.T) {
	rel := os.Getenv("PS_OTP_ROOT")
	if rel == "" {
		t.Fatal("PS_OTP_ROOT is not set: name the Debian release whose Erlang/OTP to test, e.g. PS_OTP_ROOT=sid (or run make test-otp REL=sid)")
	}
	script, err := filepath.Abs("../scripts/otp-root.sh")
	if err != nil {
		t.Fatal(err)
	}
	erl := []string{script, rel, "run", "--", "erl"}
	if out, err := exec.Command(script, rel, "create").CombinedOutput(); err != nil {
		t.Fatalf("%s %s create: %v\n%s", script, rel, err, out)
	}
	args := append(append([]string(nil), erl[1:]...), "-noshell", "-eval", `io:format("~s", [erlang:system_info(otp_release)]), halt().`)
	out, err := exec.Command(erl[0], args...).Output()
	if err != nil {
		t.Fatalf("%v: %v", erl, err)
	}
	testDistWithErlang(t, erl, strings.TrimSpace(string(out)))
}
