// Package limits holds the bounds and defaults that ps_port and the Elixir
// shim share. They live in limits.txt, the one table both read: this
// package embeds it, and the shim (elixir_shim/lib/proton_stream/limits.ex)
// reads it when it is compiled, so neither side mirrors the other's
// numbers by hand.
package limits

import (
	_ "embed" // limits.txt
	"fmt"
	"strconv"
	"strings"
	"time"
)

//go:embed limits.txt
var table string

// values is limits.txt parsed; a malformed table is a build mistake, caught
// by the package's tests, so it panics.
var values = mustParse(table)

var (
	// StdinLimitDefault is how many bytes of stdin may wait for a child
	// before a command that would go past them is refused, in every mode.
	StdinLimitDefault = get("stdin_limit_default")
	// StdinLimitMax is the most stdin_limit an owner may ask for.
	StdinLimitMax = get("stdin_limit_max")
	// StdioWindowDefault is a child's output window (bytes in flight to
	// its owner) when the owner names none, in every mode.
	StdioWindowDefault = get("stdio_window_default")
	// StdioWindowMax is the most stdio_window an owner may ask for.
	StdioWindowMax = get("stdio_window_max")
	// DelayToSIGKILLMax is the most delay_to_sigkill an owner may ask for.
	DelayToSIGKILLMax = time.Duration(get("delay_to_sigkill_max_ms")) * time.Millisecond
	// MaxFrame is the longest frame ps_port takes from its owner.
	MaxFrame = get("max_frame")
	// MaxRequestDefault, MaxRequestMin and MaxRequestMax are ps_port
	// node's --max-request default and bounds; MaxRequestMax is also the
	// largest distribution message it sends.
	MaxRequestDefault = get("max_request_default")
	MaxRequestMin     = get("max_request_min")
	MaxRequestMax     = get("max_request_max")
)

func get(name string) int {
	v, ok := values[name]
	if !ok {
		panic("internal/limits: limits.txt has no " + name)
	}
	return v
}

func mustParse(text string) map[string]int {
	m, err := parse(text)
	if err != nil {
		panic(err)
	}
	return m
}

// parse reads "name value" lines; blank lines and lines starting with #
// are skipped. A name given twice, or a value that is not a positive
// decimal integer, is an error.
func parse(text string) (map[string]int, error) {
	m := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("internal/limits: limits.txt line %d: want \"name value\", got %q", i+1, line)
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil || n <= 0 || strconv.Itoa(n) != fields[1] {
			return nil, fmt.Errorf("internal/limits: limits.txt line %d: %s: want a positive decimal integer, got %q", i+1, fields[0], fields[1])
		}
		if _, dup := m[fields[0]]; dup {
			return nil, fmt.Errorf("internal/limits: limits.txt line %d: %s given twice", i+1, fields[0])
		}
		m[fields[0]] = n
	}
	return m, nil
}
