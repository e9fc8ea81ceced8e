#!/usr/bin/env bash
# Build the demo's images locally, with no container registry:
#   stockade-demo/base      debootstrap --variant=minbase of Debian with demo/images/base/packages,
#                           imported with `docker import`
#   stockade-demo/blog-web  lighttpd + PHP (FastCGI), FROM base
#   stockade-demo/blog-db   MariaDB with the blog's database baked in, FROM base
#   stockade-demo/pinger    the weak app (Python), FROM base
#   stockade-demo/attacker  Debian's static busybox serving the "exploit kit", FROM scratch
# Cached: each image carries the sha256 of what it was built from (label stockade.demo.hash;
# the base: scripts/debootstrap-image.sh); an image whose hash matches is not rebuilt, so a
# second run takes a second or two. The environment of scripts/debootstrap-image.sh applies.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
images="$here/images"
cache="${STOCKADE_BUILD_CACHE:-/var/cache/stockade-build}"
label=stockade.demo.hash
say() { printf 'demo-build: %s\n' "$*"; }
die() { printf 'demo-build: %s\n' "$*" >&2; exit 1; }

# sha256 of a build context: every file's path and content, plus extra words.
context_hash() {
    local dir=$1; shift
    { (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); printf '%s\n' "$@"; } \
        | sha256sum | cut -d' ' -f1
}

image_hash() { docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true; }

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
    if ! docker build --force-rm --network none --label "$label=$2" -t "stockade-demo/$1:latest" "$3" >"$log" 2>&1; then
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
bash "$here/../scripts/debootstrap-image.sh" stockade-demo/base:latest "$images/base/packages"
base_id=$(docker image inspect -f '{{.Id}}' stockade-demo/base:latest)
for name in blog-web blog-db pinger; do
    build_image "$name" "base=$base_id"
done
build_attacker
# Older builds of these images, now untagged (only ours: they carry our labels).
docker image prune -f --filter "label=$label" >/dev/null 2>&1 || true
docker image prune -f --filter "label=stockade.image.hash" >/dev/null 2>&1 || true
say "images ready ($((SECONDS - start)) s)"
