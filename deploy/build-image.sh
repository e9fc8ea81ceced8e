#!/usr/bin/env bash
# Build the enforcer's container image stockade/enforcer:latest locally (no registry):
#   1. stockade/enforcer-base: Debian minbase + deploy/enforcer-packages (debootstrap, cached)
#   2. wheels of the project and its dependencies (pip, from the package index or pip's cache)
#   3. docker build deploy/Dockerfile with --network none: the wheels are installed offline
# Cached: the image carries the sha256 of everything it is built from (label
# stockade.enforcer.hash): the project's sources (enforcer/, console/, pyproject.toml), the
# Dockerfile, this script and the base image (itself labelled with the hash of
# deploy/enforcer-packages). When that matches, nothing is rebuilt (no pip, no docker build)
# and a run takes about a second. STOCKADE_REBUILD=1 builds anyway (e.g. to pick up newer
# releases of the dependencies, which the hash does not cover).
# Environment: STOCKADE_BUILD_CACHE, STOCKADE_ENFORCER_IMAGE (default stockade/enforcer:latest)
# and those of scripts/debootstrap-image.sh.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cache="${STOCKADE_BUILD_CACHE:-/var/cache/stockade-build}"
image="${STOCKADE_ENFORCER_IMAGE:-stockade/enforcer:latest}"
label=stockade.enforcer.hash
say() { printf 'enforcer-image: %s\n' "$*"; }
die() { printf 'enforcer-image: %s\n' "$*" >&2; exit 1; }
[ -x .venv/bin/pip ] || die "no .venv: run make setup first"
command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "the Docker engine does not answer (make setup starts it)"
start=$SECONDS
mkdir -p "$cache"
bash scripts/debootstrap-image.sh stockade/enforcer-base:latest deploy/enforcer-packages
base_id=$(docker image inspect -f '{{.Id}}' stockade/enforcer-base:latest)

# What goes into the wheel of the project (setuptools packs every file of the enforcer and
# console packages that it finds, so untracked files count too; bytecode does not) and into
# the image. README.md is left out on purpose: it only reaches the wheel's metadata.
inputs_hash() {
    {
        find enforcer console -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
        sha256sum pyproject.toml deploy/Dockerfile deploy/build-image.sh
        printf 'base=%s\n' "$base_id"
    } | sha256sum | cut -d' ' -f1
}
want=$(inputs_hash)
have=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)
if [ "$have" = "$want" ] && [ -z "${STOCKADE_REBUILD:-}" ]; then
    say "$image is up to date (inputs ${want:0:12}); nothing to build"
    exit 0
fi

# A build context of its own (two builds at once must not share one), removed whatever happens.
ctx=$(mktemp -d "$cache/context-enforcer.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/wheels" "$ctx/src"
# The wheel is built from a copy of exactly the hashed sources: a build/ folder left in the
# checkout by an earlier build can hold files since deleted, which setuptools would pack.
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md enforcer console | tar -x -C "$ctx/src"
say "building wheels of the project and its dependencies"
.venv/bin/pip wheel -q --disable-pip-version-check -w "$ctx/wheels" "$ctx/src" >"$cache/wheels.log" 2>&1 \
    || { tail -n 20 "$cache/wheels.log" >&2; die "pip wheel failed; full log in $cache/wheels.log"; }
cp deploy/Dockerfile "$ctx/"
say "docker build $image"
if ! docker build --force-rm --network none --label "$label=$want" -t "$image" "$ctx" \
        >"$cache/build-enforcer.log" 2>&1; then
    tail -n 30 "$cache/build-enforcer.log" >&2
    die "docker build failed; full output in $cache/build-enforcer.log"
fi
# Older builds, now untagged (only ours: they carry the label).
docker image prune -f --filter "label=$label" >/dev/null 2>&1 || true
say "built $image in $((SECONDS - start)) s: $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)"
