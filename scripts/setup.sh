#!/usr/bin/env bash
# Idempotent machine set-up for Stockade on Debian 12: packages, kernel headers for bcc,
# tracefs, a running Docker engine, and .venv with the project installed.
# A second run on a ready machine only checks and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*"; }

PACKAGES=(docker.io docker-compose busybox-static python3-bpfcc bpfcc-tools
          linux-headers-amd64 nftables tmux python3-venv debootstrap iproute2 procps
          libcairo2 fonts-dejavu-core rsyslog openssh-client openssh-server)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: must run as root (it installs packages, mounts tracefs, starts dockerd)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # openssh-server is for the SSH transport's tests, which run their own sshd on 127.0.0.1:
    # the package must not start (or enable) the system's sshd. policy-rc.d says no to starts.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || { echo "setup: apt-get failed (exit $rc)" >&2; exit "$rc"; }
    if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper disable ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
fi

# bcc compiles C at run time against kernel headers. This kernel ships none; Debian's
# headers work for tracepoint programs (we never read kernel structs by offset).
kdir="/lib/modules/$(uname -r)"
if [ ! -e "$kdir/build/Makefile" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
    build=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$build" ] || [ -z "$common" ]; then
        echo "setup: no kernel headers under /usr/src (is linux-headers-amd64 installed?)" >&2
        exit 1
    fi
    say "linking kernel headers $build into $kdir"
    mkdir -p "$kdir"
    ln -sfn "$build" "$kdir/build"
    ln -sfn "$common" "$kdir/source"
fi

mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
# bpffs: the sensors pin their policy maps and program links here so that kill-on-exec
# holds while the enforcer is down (sensors/pins.py).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
# Traffic between containers on one bridge must pass netfilter for nftables blocks.
modprobe br_netfilter 2>/dev/null || true
[ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables

if ! docker info >/dev/null 2>&1; then
    if pgrep -x dockerd >/dev/null; then
        say "dockerd is running but not answering yet; waiting"
    else
        say "starting dockerd (log: /var/log/dockerd.log)"
        nohup dockerd >/var/log/dockerd.log 2>&1 &
    fi
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2; exit 1; }
fi

# The venv uses Debian's python3 so that Debian's bcc module matches its interpreter.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PY" -m venv .venv
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Only the bcc package, not all of dist-packages: Debian's other modules must not shadow PyPI's.
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"

stamp=.venv/.stockade-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing the project into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi

# `stockade` on the PATH of a non-interactive ssh session (sshd's default PATH has /usr/local/bin):
# `--host ssh://this-machine` runs `stockade dial-stdio` here.
entry=$(readlink -f .venv/bin/stockade)
if [ "$(readlink /usr/local/bin/stockade 2>/dev/null)" != "$entry" ]; then
    if [ -e /usr/local/bin/stockade ] && [ ! -L /usr/local/bin/stockade ]; then
        say "leaving /usr/local/bin/stockade alone (not a link of ours); ssh:// targets need stockade on the PATH"
    else
        say "linking /usr/local/bin/stockade -> $entry"
        ln -sfn "$entry" /usr/local/bin/stockade
    fi
fi

.venv/bin/python -c 'import bcc, textual, docker, pyroute2, aiosqlite, httpx' \
    || { echo "setup: .venv cannot import its dependencies" >&2; exit 1; }
say "ready"
