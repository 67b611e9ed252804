package limits

import (
	"strings"
	"testing"
	"time"
)

// TestTable: every value is read, and the defaults lie within their bounds.
func TestTable(t *testing.T) {
	if len(values) != 9 {
		t.Errorf("limits.txt has %d values, the package reads 9: a value nobody reads, or one added without a variable", len(values))
	}
	if StdinLimitDefault != 16<<20 || StdinLimitDefault > StdinLimitMax {
		t.Errorf("StdinLimitDefault %d (want 16 MiB, at most StdinLimitMax %d)", StdinLimitDefault, StdinLimitMax)
	}
	if MaxRequestDefault < MaxRequestMin || MaxRequestDefault > MaxRequestMax {
		t.Errorf("MaxRequestDefault %d outside %d..%d", MaxRequestDefault, MaxRequestMin, MaxRequestMax)
	}
	// A command of the default stdin limit fits one frame and one request.
	if StdinLimitDefault > MaxFrame || StdinLimitDefault > MaxRequestDefault {
		t.Errorf("StdinLimitDefault %d exceeds MaxFrame %d or MaxRequestDefault %d", StdinLimitDefault, MaxFrame, MaxRequestDefault)
	}
	if StdioWindowDefault < 1 || StdioWindowDefault > StdioWindowMax {
		t.Errorf("StdioWindowDefault %d outside 1..StdioWindowMax %d", StdioWindowDefault, StdioWindowMax)
	}
	if DelayToSIGKILLMax != 10*time.Minute {
		t.Errorf("DelayToSIGKILLMax %v, want 10m", DelayToSIGKILLMax)
	}
}

// TestParseRefuses: lines of another shape, values that are not positive
// decimal integers and names given twice are refused, naming the line.
func TestParseRefuses(t *testing.T) {
	for _, text := range []string{
		"a 1 2",
		"a",
		"a 0x10",
		"a -1",
		"a 0",
		"a 010",
		"a 1\na 2",
	} {
		if _, err := parse(text); err == nil || !strings.Contains(err.Error(), "limits.txt line") {
			t.Errorf("parse(%q) = %v, want an error naming the line", text, err)
		}
	}
	m, err := parse("# comment\n\n  a 1  \nb 2\n")
	if err != nil || m["a"] != 1 || m["b"] != 2 || len(m) != 2 {
		t.Errorf("parse = %v, %v; want a=1 b=2", m, err)
	}
}
