#!/bin/sh
# Owners killed at once: how long until every child and grandchild is gone
# (issue 11: 1 000 owners, goal 1 s). Each child is
# `sh -c 'sleep 600 & echo $!; wait'`; the figure is the time from the
# stops (shared) or the port closes (isolated) to the last process's exit,
# watched through pidfds.
#
#   bench/kill.sh                 # this checkout: 1 000 in one ps_port --shared,
#                                 # 1 000 ps_port --packet, 1 000 in procctl alone
#   N=300 bench/kill.sh           # fewer
#   PS_PORT_BIN=/path/to/ps_port bench/kill.sh   # another build (before/after)
#
# 1 000 isolated ps_ports take ~10 000 pids (Go runtime threads): mind
# /proc/sys/kernel/pid_max (32768 on the CI machine) and whatever else runs.
set -eu
cd "$(dirname "$0")/.."
N=${N:-1000}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
PS_KILL_N=$N go test -count=1 -v -timeout 30m \
	-run 'TestSharedThousandStoppedAtOnce|TestIsolatedManyClosedAtOnce' ./test/go/ |
	grep -E 'gone|^(ok|FAIL|---)'
if [ -z "${PS_PORT_BIN:-}" ]; then
	go test -run '^$' -bench TerminateThousand -benchtime 3x ./procctl/ | grep -E 'Benchmark|^ok'
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
