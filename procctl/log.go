package procctl

import "github.com/protonstream/ps_port/internal/stderrlog"

// logf reports a warning about c to its Spec.Logf (stderr when nil).
func (c *Child) logf(format string, args ...any) { stderrlog.Or(c.spec.Logf)(format, args...) }
