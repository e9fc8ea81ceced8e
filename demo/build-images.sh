#!/usr/bin/env bash
# Build the demo's images locally, with no container registry:
#   stockade-demo/base      debootstrap --variant=minbase of Debian with demo/images/base/packages,
#                           imported with `docker import`
#   stockade-demo/blog-web  lighttpd + PHP (FastCGI), FROM base
#   stockade-demo/blog-db   MariaDB with the blog's database baked in, FROM base
#   stockade-demo/pinger    the weak app (Python), FROM base
#   stockade-demo/attacker  Debian's static busybox serving the "exploit kit", FROM scratch
# Cached: each image carries the sha256 of what it was built from (label stockade.demo.hash);
# an image whose hash matches is not rebuilt, so a second run takes a second or two.
# Environment: STOCKADE_DEMO_CACHE (debootstrap's package cache, default
# /var/cache/stockade-demo), STOCKADE_DEMO_MIRROR (default: the machine's apt source),
# STOCKADE_DEMO_SUITE (default: this machine's Debian codename).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
images="$here/images"
cache="${STOCKADE_DEMO_CACHE:-/var/cache/stockade-demo}"
label=stockade.demo.hash
say() { printf 'demo-build: %s\n' "$*"; }
die() { printf 'demo-build: %s\n' "$*" >&2; exit 1; }

suite="${STOCKADE_DEMO_SUITE:-}"
if [ -z "$suite" ]; then
    suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    suite="${suite:-bookworm}"
fi

# The mirror this machine's apt already uses (deb822 .sources first, then one-line lists),
# so that the demo reaches exactly the package archive the machine is allowed to reach.
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

# sha256 of a build context: every file's path and content, plus extra words.
context_hash() {
    local dir=$1; shift
    { (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); printf '%s\n' "$@"; } \
        | sha256sum | cut -d' ' -f1
}

image_hash() { docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true; }

build_base() {
    local want
    want=$(context_hash "$images/base" "suite=$suite" "arch=$(dpkg --print-architecture)")
    if [ "$(image_hash stockade-demo/base)" = "$want" ]; then
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing (make setup installs it)"
    local mirror="${STOCKADE_DEMO_MIRROR:-$(apt_mirror)}"
    [ -n "$mirror" ] || die "no apt source for suite $suite found; set STOCKADE_DEMO_MIRROR to a Debian mirror URL"
    local packages
    packages=$(grep -v '^[[:space:]]*\(#\|$\)' "$images/base/packages" | tr -s ' \n' ',' | sed 's/,$//')
    local rootfs="$cache/rootfs-$want"
    mkdir -p "$cache/debs"
    rm -rf "$rootfs"
    say "debootstrap $suite (minbase + $packages) into $rootfs; a first build downloads about 90 MB and takes a minute or two"
    local start=$SECONDS
    if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
            "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        rm -rf "$rootfs"
        die "debootstrap failed; full log in $cache/debootstrap.log"
    fi
    # What a container never needs: docs, man pages, translations, apt's lists and caches.
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
           "$rootfs"/usr/share/locale/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
           "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    # The database files mariadb-server's postinst made (about 100 MB of redo log): blog-db
    # makes its own, smaller ones.
    rm -rf "$rootfs"/var/lib/mysql/*
    say "importing the root file system as stockade-demo/base"
    tar --numeric-owner --xattrs -C "$rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . \
        | docker import --change "LABEL $label=$want" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - stockade-demo/base:latest >/dev/null
    rm -rf "$rootfs"
    say "base image built in $((SECONDS - start)) s"
}

# build_image NAME EXTRA...: docker build demo/images/NAME unless its hash matches.
build_image() {
    local name=$1; shift
    local want
    want=$(context_hash "$images/$name" "$@")
    if [ "$(image_hash "stockade-demo/$name")" = "$want" ]; then
        return
    fi
    say "building stockade-demo/$name"
    docker_build "$name" "$want" "$images/$name"
}

# docker_build NAME HASH CONTEXT: quiet when it works, the build's output when it fails.
docker_build() {
    local log="$cache/build-$1.log"
    mkdir -p "$cache"
    # --network none: nothing in a demo build needs the network.
    if ! docker build --network none --label "$label=$2" -t "stockade-demo/$1:latest" "$3" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "building stockade-demo/$1 failed; full output in $log"
    fi
}

build_attacker() {
    # The attacker's box: Debian's static busybox, copied in like the test image.
    local busybox
    busybox=$(command -v busybox || echo /bin/busybox)
    [ -x "$busybox" ] || die "busybox is missing (make setup installs busybox-static)"
    local want
    want=$(context_hash "$images/attacker" "busybox=$(sha256sum "$busybox" | cut -d' ' -f1)")
    if [ "$(image_hash stockade-demo/attacker)" = "$want" ]; then
        return
    fi
    say "building stockade-demo/attacker"
    local ctx="$cache/context-attacker"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp -a "$images/attacker/." "$ctx/"
    cp "$busybox" "$ctx/busybox"
    docker_build attacker "$want" "$ctx"
    rm -rf "$ctx"
}

start=$SECONDS
build_base
base_id=$(docker image inspect -f '{{.Id}}' stockade-demo/base:latest)
for name in blog-web blog-db pinger; do
    build_image "$name" "base=$base_id"
done
build_attacker
say "images ready ($((SECONDS - start)) s)"
