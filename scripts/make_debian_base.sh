#!/usr/bin/env bash
# Make (once) a Debian bookworm minbase root filesystem as a layer tarball, for
# benchmarks/bench_build.py and the python-app example's test. debootstrap
# downloads from Debian's package mirror; the result is cached, so later runs
# reuse it:
#
#   scripts/make_debian_base.sh [CACHE_DIR]   # default ~/.cache/kanipy-bench
#   DEBIAN_INCLUDE=python3 scripts/make_debian_base.sh   # with extra packages
#
# Prints the path of the tarball: sorted entries, numeric owners, no device
# nodes (a builder provides its own /dev), no apt caches.
set -euo pipefail
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/kanipy-bench}
include=${DEBIAN_INCLUDE:-}
suffix=${include:+-${include//,/-}}
out="$cache/debian-bookworm-minbase$suffix.tar"
# The mirror this machine's apt already uses (DEBIAN_MIRROR overrides it).
apt_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v -- '-security' | head -n1)
    [[ -n $uri ]] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1)
    echo "$uri"
}
mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
if [[ -s $out ]]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
root=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "debootstrap --variant=minbase bookworm (a few minutes, once) ..." >&2
# With no mirror found, debootstrap uses its own default.
debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$root" \
    ${mirror:+"$mirror"} >"$cache/debootstrap.log" 2>&1 || {
    tail -20 "$cache/debootstrap.log" >&2
    exit 1
}
rm -rf "${root:?}"/dev/* "${root:?}"/var/cache/apt/archives/*.deb "${root:?}"/var/lib/apt/lists/* \
    "${root:?}"/var/log/* "${root:?}"/debootstrap
# mktemp made the root 0700; the tarball's "./" entry would carry that into the
# image, and no user but root could then reach anything in it.
chmod 0755 "$root"
tar --numeric-owner --sort=name --xattrs -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
