#!/usr/bin/env bash
# debootstrap-image.sh IMAGE PACKAGES_FILE: a Docker image of Debian (minbase) with the
# packages listed in PACKAGES_FILE (one a line, # comments), made with debootstrap and
# `docker import`: no container registry involved. Used for the demo's base image and the
# enforcer's image. Cached: the image carries the sha256 of its package list, suite and
# architecture (label stockade.image.hash) and is rebuilt only when that changes.
# Environment: STOCKADE_BUILD_CACHE (package cache, default /var/cache/stockade-build),
# STOCKADE_DEBIAN_MIRROR (default: this machine's apt source), STOCKADE_DEBIAN_SUITE
# (default: this machine's Debian codename).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 IMAGE PACKAGES_FILE" >&2; exit 2; }
image=$1
packages_file=$2
cache="${STOCKADE_BUILD_CACHE:-/var/cache/stockade-build}"
label=stockade.image.hash
say() { printf 'image %s: %s\n' "$image" "$*"; }
die() { printf 'image %s: %s\n' "$image" "$*" >&2; exit 1; }

suite="${STOCKADE_DEBIAN_SUITE:-}"
if [ -z "$suite" ]; then
    suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    suite="${suite:-bookworm}"
fi

# The mirror this machine's apt already uses (deb822 .sources first, then one-line lists),
# so that the build reaches exactly the package archive the machine is set up to reach.
apt_mirror() {
    local uri=""
    uri=$(awk -v cn="$suite" 'BEGIN { RS = ""; FS = "\n" }
        { uri = ""; suites = ""; types = ""
          for (i = 1; i <= NF; i++) {
              if ($i ~ /^URIs:/) { line = $i; sub(/^URIs:[ \t]*/, "", line); split(line, a, /[ \t]+/); uri = a[1] }
              else if ($i ~ /^Suites:/) { line = $i; sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
              else if ($i ~ /^Types:/) { types = $i " " }
          }
          if (uri != "" && types ~ /[ \t]deb[ \t]/ && index(suites, " " cn " ")) { print uri; exit }
        }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk -v cn="$suite" '$1 == "deb" {
                  i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                  if ($(i + 1) == cn) { print $i; exit } }' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    printf '%s' "$uri"
}

[ -f "$packages_file" ] || die "no package list $packages_file"
packages=$(grep -v '^[[:space:]]*\(#\|$\)' "$packages_file" | tr -s ' \n' ',' | sed 's/,$//')
want=$({ cat "$packages_file"; echo "suite=$suite arch=$(dpkg --print-architecture)"; } | sha256sum | cut -d' ' -f1)
have=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)
if [ "$have" = "$want" ]; then
    exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is missing (make setup installs it)"
mirror="${STOCKADE_DEBIAN_MIRROR:-$(apt_mirror)}"
[ -n "$mirror" ] || die "no apt source for suite $suite found; set STOCKADE_DEBIAN_MIRROR to a Debian mirror URL"
rootfs="$cache/rootfs-$want"
log="$cache/debootstrap-${want:0:12}.log"
mkdir -p "$cache/debs"
rm -rf "$rootfs"
say "debootstrap $suite (minbase + $packages); a first build downloads the packages and takes a minute or two"
start=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
        "$suite" "$rootfs" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -rf "$rootfs"
    die "debootstrap failed; full log in $log"
fi
# What a container never needs: docs, man pages, translations, apt's lists and caches, and
# the database files mariadb-server's postinst makes (about 100 MB of redo log; images that
# run MariaDB initialise their own).
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/var/lib/mysql/*
tar --numeric-owner --xattrs -C "$rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . \
    | docker import --change "LABEL $label=$want" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$image" >/dev/null
rm -rf "$rootfs"
say "built in $((SECONDS - start)) s"
