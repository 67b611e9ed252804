#!/usr/bin/env bash
# A second runtime for the tests: Debian 13 (trixie) with Erlang/OTP 27 and
# Elixir 1.18, in a chroot at .otp27/ beside this repository's checkout.
#
#   scripts/otp27.sh create           build .otp27/ when it is missing (debootstrap)
#   scripts/otp27.sh run [--] CMD...  run CMD inside it, in the current directory
#   scripts/otp27.sh shell            an interactive shell inside it
#   scripts/otp27.sh remove           delete .otp27/
#
# "run" creates the root when missing, then enters a private mount namespace
# (unshare -m) where it mounts /proc, binds /sys, /dev, /tmp, this checkout,
# Go (/usr/local/go, the module and build caches) at their own paths, and
# chroots. The mounts belong to that namespace only: they disappear when CMD
# exits, however it exits, and concurrent runs do not see each other's. The
# chroot shares the host's network and pids, so epmd and Erlang distribution
# work between host and chroot (use 127.0.0.1 node names).
#
# Environment: OTP27_ROOT (default: <checkout>/.otp27), OTP27_MIRROR (default:
# the Debian mirror of /etc/apt/sources.list*, else http://deb.debian.org/debian).
# Needs root (debootstrap, mount, chroot).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${OTP27_ROOT:-$here/.otp27}
suite=trixie
packages=erlang-base,erlang-dev,erlang-crypto,erlang-syntax-tools,erlang-ssl,elixir,bc,procps,cgroup-tools,ca-certificates

die() { echo "otp27: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount, chroot)"

# The first Debian mirror that apt on this host uses.
mirror() {
  if [ -n "${OTP27_MIRROR:-}" ]; then echo "$OTP27_MIRROR"; return; fi
  local m=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk 'tolower($1)=="uris:" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/) { if ($i ~ /\/debian\/?$/) { print $i; exit } ; break } }')
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

create() {
  if [ -f "$root/.otp27-complete" ]; then
    return 0
  fi
  if ! command -v debootstrap >/dev/null; then
    echo "otp27: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2; }
  fi
  # Debian 12's debootstrap knows trixie; older ones can use sid's script.
  local script=""
  [ -e "/usr/share/debootstrap/scripts/$suite" ] || script=/usr/share/debootstrap/scripts/sid
  # Serialize concurrent creators (the lock is this script). A root without
  # the completion mark (an interrupted run) is removed and made again.
  exec 9<"${BASH_SOURCE[0]}"
  flock 9
  if [ -f "$root/.otp27-complete" ]; then exec 9<&-; return 0; fi
  rm -rf "$root"
  mkdir -p "$root"
  local m log
  m=$(mirror)
  log=$(mktemp /tmp/otp27-debootstrap.XXXXXX)
  echo "otp27: debootstrap $suite from $m into $root (about a minute)" >&2
  local start=$SECONDS
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$m" $script >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "debootstrap failed (whole log: $log)"
  fi
  rm -f "$log"
  rm -rf "$root/var/cache/apt/archives/"*.deb
  touch "$root/.otp27-complete"
  exec 9<&-
  echo "otp27: ready in $((SECONDS - start)) s: OTP $(chroot "$root" erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().'), $(chroot "$root" elixir --version 2>/dev/null | tail -n 1)" >&2
}

# enter runs "$@" inside the root; it must already run in a private mount
# namespace (see run).
enter() {
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  bind() { # bind SRC at the same path inside the root
    [ -e "$1" ] || return 0
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
  }
  bind /tmp
  bind "$here"
  bind /usr/local/go
  local gomod gocache
  gomod=$(GOFLAGS= /usr/local/go/bin/go env GOMODCACHE 2>/dev/null || true)
  gocache=$(GOFLAGS= /usr/local/go/bin/go env GOCACHE 2>/dev/null || true)
  [ -n "$gomod" ] && mkdir -p "$gomod" && bind "$gomod"
  [ -n "$gocache" ] && mkdir -p "$gocache" && bind "$gocache"
  cp -f /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  export GOMODCACHE="$gomod" GOCACHE="$gocache"
  # No git in the root: do not let go build try to stamp VCS information.
  case "${GOFLAGS:-}" in
    *-buildvcs*) ;;
    *) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" ;;
  esac
  export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin"
  export LANG=C.UTF-8 LC_ALL=C.UTF-8 ELIXIR_ERL_OPTIONS="+fnu"
  export HOME=${HOME:-/root}
  mkdir -p "$root$HOME"
  exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' otp27 "$PWD" "$@"
}

run() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "run: no command"
  create
  # A private mount namespace: the mounts vanish with the last process in it.
  exec unshare --mount --propagation private "$0" __enter "$@"
}

case "${1:-}" in
  create) create ;;
  run) shift; run "$@" ;;
  shell) run /bin/bash ;;
  remove) rm -rf "$root" ;;
  __enter) shift; enter "$@" ;;
  *) sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
