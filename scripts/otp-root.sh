#!/usr/bin/env bash
# Another Erlang/OTP and Elixir for the tests: a Debian release (trixie: OTP 27
# and Elixir 1.18; sid: the newest, OTP 29 and Elixir 1.20 today) in a chroot
# at .otp-roots/RELEASE/ beside this repository's checkout.
#
#   scripts/otp-root.sh RELEASE create           build the root when it is missing (debootstrap)
#   scripts/otp-root.sh RELEASE run [--] CMD...  run CMD inside it, in the current directory
#   scripts/otp-root.sh RELEASE shell            an interactive shell inside it
#   scripts/otp-root.sh RELEASE versions         print "OTP 29.1.2 / Elixir 1.20.4 (Debian sid, ...)"
#   scripts/otp-root.sh host versions            the same for the host's erl and elixir
#   scripts/otp-root.sh RELEASE remove           delete it
#
# RELEASE is a Debian suite or codename that debootstrap knows (trixie, sid,
# forky, ...). "run" creates the root when missing, then enters a private mount
# namespace (unshare -m) where it mounts /proc, binds /sys, /dev, /tmp, this
# checkout, the host's Go (its GOROOT, module and build caches) at their own paths,
# and chroots. The mounts belong to that namespace only: they disappear when
# CMD exits, however it exits, and concurrent runs do not see each other's. The
# chroot shares the host's network and pids, so epmd and Erlang distribution
# work between host and chroot (use 127.0.0.1 node names).
#
# Environment: OTP_ROOTS (default: <checkout>/.otp-roots), OTP_MIRROR (default:
# the Debian mirror of /etc/apt/sources.list*, else http://deb.debian.org/debian).
# Needs root (debootstrap, mount, chroot).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self="$here/scripts/$(basename "${BASH_SOURCE[0]}")"
# What the suites run inside a root: the BEAM and Elixir (erlang-dev for
# erlc's headers, ssl with its dependencies for TLS distribution), and the
# commands the tests open (bc, ps and kill, cgcreate).
packages=erlang-base,erlang-dev,erlang-crypto,erlang-syntax-tools,erlang-asn1,erlang-public-key,erlang-ssl,elixir,bc,procps,cgroup-tools,ca-certificates

die() { echo "otp-root: $*" >&2; exit 1; }
usage() { sed -n '2,24s/^# \{0,1\}//p' "$self" >&2; exit 2; }

[ $# -ge 2 ] || usage
release=$1
action=$2
shift 2
case "$release" in
  "" | *[!a-z0-9-]*) die "bad RELEASE '$release': a Debian codename or suite such as trixie or sid" ;;
esac
roots=${OTP_ROOTS:-$here/.otp-roots}
root=$roots/$release
mark=$root/.otp-root-complete

# The first Debian mirror that apt on this host uses.
mirror() {
  if [ -n "${OTP_MIRROR:-}" ]; then echo "$OTP_MIRROR"; return; fi
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

# versions prints the OTP (full version), Elixir and Debian release of the
# root, or of the host when RELEASE is "host".
versions() {
  local in=() where otp ex
  if [ "$release" = host ]; then
    where="host, Debian $(cat /etc/debian_version 2>/dev/null || echo '?')"
  else
    in=(chroot "$root")
    where="Debian $release, $(cat "$root/etc/debian_version" 2>/dev/null || echo '?')"
  fi
  otp=$("${in[@]}" erl -noshell -eval '
    F = filename:join([code:root_dir(), "releases", erlang:system_info(otp_release), "OTP_VERSION"]),
    V = case file:read_file(F) of {ok, B} -> string:trim(B); _ -> erlang:system_info(otp_release) end,
    io:format("~s", [V]), halt().') || otp="?"
  ex=$("${in[@]}" env LANG=C.UTF-8 elixir -e 'IO.write(System.version())' 2>/dev/null) || ex="?"
  echo "OTP $otp / Elixir $ex ($where)"
}

# complete: the root was made, with today's package list (a root made
# with another list is made again, so adding a package here reaches
# existing roots).
complete() {
  [ -f "$mark" ] && [ "$(cat "$mark")" = "$packages" ]
}

create() {
  complete && return 0
  if ! command -v debootstrap >/dev/null; then
    echo "otp-root: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2; }
  fi
  # A suite this debootstrap has no script for (a release newer than it)
  # bootstraps like sid.
  local script=""
  [ -e "/usr/share/debootstrap/scripts/$release" ] || script=/usr/share/debootstrap/scripts/sid
  # Serialize concurrent creators of this root. A root without the
  # completion mark (an interrupted run) or with another package list is
  # removed and made again.
  mkdir -p "$roots"
  exec 9>"$roots/.$release.lock"
  flock 9
  if complete; then exec 9>&-; return 0; fi
  rm -rf "$root"
  mkdir -p "$root"
  local m log start=$SECONDS
  m=$(mirror)
  log=$(mktemp /tmp/otp-root-debootstrap.XXXXXX)
  echo "otp-root: debootstrap $release from $m into $root (about a minute)" >&2
  # shellcheck disable=SC2086 # $script is empty or one path
  if ! debootstrap --variant=minbase --include="$packages" "$release" "$root" "$m" $script >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    case "$(cat "$log")" in
      *NO_PUBKEY* | *"unknown key"* | *"Release signed by unknown key"*)
        echo "otp-root: this host's debian-archive-keyring does not know the key that signs $release; install a newer one (apt-get install debian-archive-keyring, or from backports)" >&2 ;;
    esac
    die "debootstrap failed (whole log: $log)"
  fi
  rm -f "$log"
  rm -rf "$root/var/cache/apt/archives/"*.deb
  echo "$packages" >"$mark"
  exec 9>&-
  echo "otp-root: $release ready in $((SECONDS - start)) s: $(versions)" >&2
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
  # The current directory may be another checkout (a test's temporary copy).
  case "$PWD/" in
    "$here"/* | /tmp/*) ;;
    *) bind "$PWD" ;;
  esac
  # The host's Go, wherever it is installed (/usr/local/go, a Debian
  # golang package, ...): its GOROOT at the same path, its bin on PATH.
  local go goroot="" gomod="" gocache=""
  go=$(PATH="$PATH:/usr/local/go/bin" command -v go || true)
  if [ -n "$go" ]; then
    goroot=$(GOFLAGS='' "$go" env GOROOT 2>/dev/null || true)
    gomod=$(GOFLAGS='' "$go" env GOMODCACHE 2>/dev/null || true)
    gocache=$(GOFLAGS='' "$go" env GOCACHE 2>/dev/null || true)
  fi
  if [ -n "$goroot" ]; then bind "$goroot"; fi
  if [ -n "$gomod" ]; then mkdir -p "$gomod" && bind "$gomod"; fi
  if [ -n "$gocache" ]; then mkdir -p "$gocache" && bind "$gocache"; fi
  cp -f /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  export GOMODCACHE="$gomod" GOCACHE="$gocache"
  # No git in the root: do not let go build try to stamp VCS information.
  case "${GOFLAGS:-}" in
    *-buildvcs*) ;;
    *) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" ;;
  esac
  export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${goroot:+:$goroot/bin}"
  export LANG=C.UTF-8 LC_ALL=C.UTF-8 ELIXIR_ERL_OPTIONS="+fnu"
  export HOME=${HOME:-/root}
  mkdir -p "$root$HOME"
  exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' otp-root "$PWD" "$@"
}

run() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "run: no command"
  create
  # A private mount namespace: the mounts vanish with the last process in it.
  exec unshare --mount --propagation private "$self" "$release" __enter "$@"
}

if [ "$release" = host ]; then
  [ "$action" = versions ] || die "host: only 'versions' (the host is no root to $action)"
  versions
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount, chroot)"

case "$action" in
  create) create ;;
  run) run "$@" ;;
  shell) run /bin/bash ;;
  versions) create && versions ;;
  remove) rm -rf "$root" "$roots/.$release.lock" ;;
  __enter) enter "$@" ;;
  *) usage ;;
esac
