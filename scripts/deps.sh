#!/usr/bin/env bash
# Installs what building and testing ProtonStream needs on Debian 12, when it
# is missing: Erlang/OTP and Elixir (Debian's), cgroup-tools, bc and procps.
# Go itself must already be installed (https://go.dev/doc/install).
set -euo pipefail

need=()
command -v erl >/dev/null || need+=(erlang-base erlang-dev)
command -v elixir >/dev/null || need+=(elixir)
command -v cgcreate >/dev/null || need+=(cgroup-tools)
command -v bc >/dev/null || need+=(bc)
command -v ps >/dev/null || need+=(procps)
command -v epmd >/dev/null || need+=(erlang-base)
# Elixir's ExUnit, EEx etc. come with the elixir package; erlang modules the
# shim and tests use:
dpkg -s erlang-crypto >/dev/null 2>&1 || need+=(erlang-crypto)
dpkg -s erlang-syntax-tools >/dev/null 2>&1 || need+=(erlang-syntax-tools)
dpkg -s erlang-ssl >/dev/null 2>&1 || need+=(erlang-ssl erlang-public-key erlang-asn1) # TLS distribution tests

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing ${need[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! command -v go >/dev/null; then
  echo "deps: Go is not on PATH; install Go >= 1.24 (e.g. /usr/local/go/bin) and retry" >&2
  exit 1
fi
