#!/bin/sh
# What a ps_port start costs (issue 11, item 6): package init before main
# and the wall and CPU time of `ps_port --help` and `ps_port --packet --
# /bin/true`, beside an empty Go program built the same way. Extra
# LABEL=PATH arguments add other builds (e.g. an older one, for before/after).
#
#   bench/startup.sh                    # 200 runs of each
#   N=500 bench/startup.sh before=/tmp/ps_port.old
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s build
mkdir -p "$tmp/empty"
printf 'package main\n\nfunc main() {}\n' > "$tmp/empty/main.go"
printf 'module empty\n\ngo 1.21\n' > "$tmp/empty/go.mod"
(cd "$tmp/empty" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$tmp/empty.bin" .)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
go run ./bench/startup -n "${N:-200}" -empty "$tmp/empty.bin" "ps_port=bin/ps_port" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
