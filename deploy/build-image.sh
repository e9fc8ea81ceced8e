#!/usr/bin/env bash
# Build the enforcer's container image stockade/enforcer:latest locally (no registry):
#   1. stockade/enforcer-base: Debian minbase + deploy/enforcer-packages (debootstrap, cached)
#   2. wheels of the project and its dependencies (pip, from the package index or pip's cache)
#   3. docker build deploy/Dockerfile with --network none: the wheels are installed offline
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cache="${STOCKADE_BUILD_CACHE:-/var/cache/stockade-build}"
ctx="$cache/context-enforcer"
say() { printf 'enforcer-image: %s\n' "$*"; }
[ -x .venv/bin/pip ] || { echo "enforcer-image: no .venv: run make setup first" >&2; exit 1; }
start=$SECONDS
bash scripts/debootstrap-image.sh stockade/enforcer-base:latest deploy/enforcer-packages
rm -rf "$ctx"
mkdir -p "$ctx/wheels"
say "building wheels of the project and its dependencies"
.venv/bin/pip wheel -q --disable-pip-version-check -w "$ctx/wheels" . >"$cache/wheels.log" 2>&1 \
    || { tail -n 20 "$cache/wheels.log" >&2; exit 1; }
cp deploy/Dockerfile "$ctx/"
say "docker build stockade/enforcer:latest"
docker build --force-rm --network none -t stockade/enforcer:latest "$ctx" >"$cache/build-enforcer.log" 2>&1 \
    || { tail -n 30 "$cache/build-enforcer.log" >&2; exit 1; }
rm -rf "$ctx"
say "built in $((SECONDS - start)) s: $(docker image inspect -f '{{.Size}}' stockade/enforcer:latest | numfmt --to=iec) "
