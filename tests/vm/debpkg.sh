#!/usr/bin/env bash
# Fetch (or reuse from cache) files of a Debian package for the test VM.
#
# Usage: tests/vm/debpkg.sh SUITE PACKAGE PATH...
#   e.g. tests/vm/debpkg.sh bookworm prometheus /usr/bin/promtool
#
# Prints the cached copy of each PATH, one per line. The package comes from
# SUITE through a private apt configuration on this host's mirror
# (tests/vm/apt.sh) and is extracted under
# ${SCX_AGENTCG_CACHE:-<repo>/.cache}/deb/SUITE/PACKAGE.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${SCX_AGENTCG_CACHE:-$REPO/.cache}
say() { echo "debpkg.sh: $*" >&2; }
die() { echo "debpkg.sh: error: $*" >&2; exit 1; }
[ $# -ge 3 ] || die "usage: debpkg.sh SUITE PACKAGE PATH..."
suite=$1 pkg=$2; shift 2
dir=$CACHE/deb/$suite/$pkg

have_all() {
    local p
    for p in "$@"; do [ -e "$dir/root$p" ] || return 1; done
}
if ! have_all "$@"; then
    . "$REPO/tests/vm/apt.sh"
    apt_private "$suite"
    uri=$(mirror_uri) || die "no apt mirror URI found in /etc/apt"
    echo "deb $uri $suite main" > "$APTD/sources.list"
    say "updating private apt lists ($suite)"
    apt-get "${APT_OPTS[@]}" -qq update > "$APTD/update.log" 2>&1 \
        || die "apt update for $suite failed (see $APTD/update.log)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    say "downloading $pkg from $suite"
    (cd "$tmp" && apt-get "${APT_OPTS[@]}" -qq download "$pkg" >&2) || die "cannot download $pkg from $suite"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/root"
    dpkg-deb -x "$tmp"/*.deb "$dir.tmp/root"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    have_all "$@" || die "$pkg ($suite) has no $*"
fi
for p in "$@"; do echo "$dir/root$p"; done
