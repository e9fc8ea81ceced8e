#!/usr/bin/env bash
# The Stockade demo (`make demo` runs it after `make setup`):
#   scripts/demo.sh [up] [--no-console]   build the demo images (cached), start the enforcer
#                                         in the background, deploy the blog, the weak app
#                                         and the attacker's box, serve and add the demo's
#                                         threat feeds, then open the console
#   scripts/demo.sh down                  stop and remove everything `up` started
# `up` is idempotent: a second run reuses the enforcer, feed server and containers that run.
# Settings and their defaults: demo/demo-env.sh. Then: `make attack` (demo/attack.py).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
# shellcheck source=../demo/demo-env.sh
. demo/demo-env.sh
venv="$repo/.venv/bin"
state="$STOCKADE_DEMO_STATE"
apps=(attacker blog pinger)
say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
stockade() { "$venv/stockade" --socket "$STOCKADE_SOCKET" "$@"; }

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

compose() { # compose APP ARGS...
    local app=$1; shift
    docker-compose -f "demo/compose/$app.yml" -p "${STOCKADE_DEMO_PREFIX}$app" "$@"
}

pid_alive() { # pid_alive PIDFILE WORD: the pid in PIDFILE runs a command line containing WORD
    local pid cmdline
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmdline" == *"$2"* ]]
}

enforcer_answers() { stockade status --json >/dev/null 2>&1; }

write_state() {
    mkdir -p "$state/forensics"
    # What demo/attack.py and the tests read: the resolved settings of this demo.
    {
        for v in STOCKADE_DEMO_INSTANCE STOCKADE_DEMO_PREFIX STOCKADE_DEMO_STATE STOCKADE_SOCKET \
                 STOCKADE_DEMO_BLOG_PORT STOCKADE_DEMO_PINGER_PORT STOCKADE_DEMO_FEED_PORT \
                 STOCKADE_DEMO_NET STOCKADE_DEMO_SHARED_NET STOCKADE_DEMO_LEARN_SECONDS STOCKADE_NFT_TABLE \
                 STOCKADE_DEMO_DB_IP STOCKADE_DEMO_PINGER_IP STOCKADE_DEMO_ATTACKER_IP; do
            printf '%s=%s\n' "$v" "${!v}"
        done
    } >"$state/demo.env"
}

start_enforcer() {
    if enforcer_answers; then
        say "an enforcer already answers on $STOCKADE_SOCKET: using it"
        return
    fi
    mkdir -p "$(dirname "$STOCKADE_SOCKET")"
    say "starting stockade-enforcer (learning period ${STOCKADE_DEMO_LEARN_SECONDS} s, log $state/enforcer.log)"
    # setsid: its own session, so Ctrl-C in this terminal never reaches it.
    STOCKADE_FORENSICS_DIR="$state/forensics" setsid "$venv/stockade-enforcer" \
        --socket "$STOCKADE_SOCKET" --db "$state/stockade.db" --config "$repo/demo/enforcer.toml" \
        --learn-seconds "$STOCKADE_DEMO_LEARN_SECONDS" >>"$state/enforcer.log" 2>&1 </dev/null &
    echo $! >"$state/enforcer.pid"
    for _ in $(seq 240); do
        enforcer_answers && return
        pid_alive "$state/enforcer.pid" stockade-enforcer || break
        sleep 0.25
    done
    tail -n 20 "$state/enforcer.log" >&2
    die "the enforcer did not start; its log: $state/enforcer.log"
}

start_hostside() {
    if pid_alive "$state/hostside.pid" hostside.py; then
        return
    fi
    say "serving the demo's threat feeds on http://127.0.0.1:$STOCKADE_DEMO_FEED_PORT/ and starting the visitor"
    setsid "$venv/python" demo/hostside.py >>"$state/hostside.log" 2>&1 </dev/null &
    echo $! >"$state/hostside.pid"
    for _ in $(seq 40); do
        curl -fsS -o /dev/null "http://127.0.0.1:$STOCKADE_DEMO_FEED_PORT/health" 2>/dev/null && return
        pid_alive "$state/hostside.pid" hostside.py || break
        sleep 0.25
    done
    tail -n 5 "$state/hostside.log" >&2
    die "the feed server did not start; its log: $state/hostside.log"
}

# 0: every sensor loaded; 1: still loading; 2: a sensor failed (its error on stdout).
sensors_state() {
    stockade status --json 2>/dev/null | "$venv/python" -c '
import json, sys
sensors = json.load(sys.stdin).get("sensors") or []
errors = sorted({s["error"] for s in sensors if s.get("error")})
if errors:
    print("; ".join(errors)); sys.exit(2)
sys.exit(0 if sensors and all(s.get("loaded") for s in sensors) else 1)'
}

wait_for_sensors() {
    # Profiles learn from what the sensors see: deploy the apps only once they watch.
    local rc=1 error="" told=0
    for _ in $(seq 480); do
        rc=0; error=$(sensors_state) || rc=$?
        [ "$rc" = 1 ] || break
        if [ "$told" = 0 ]; then say "compiling and loading the eBPF sensors (bcc; up to a minute on a slow machine)"; told=1; fi
        sleep 0.25
    done
    case "$rc" in
        0) ;;
        2) say "WARNING: the eBPF sensors did not load: $error; the demo runs, but sees nothing" ;;
        *) say "WARNING: the eBPF sensors are still not loaded after 2 minutes; see $state/enforcer.log" ;;
    esac
}

create_shared_network() {
    docker network inspect "$STOCKADE_DEMO_SHARED_NET" >/dev/null 2>&1 && return
    docker network create --internal --subnet "$STOCKADE_DEMO_NET.0/24" \
        --label "stockade.demo=$STOCKADE_DEMO_INSTANCE" "$STOCKADE_DEMO_SHARED_NET" >/dev/null \
        || die "cannot create network $STOCKADE_DEMO_SHARED_NET ($STOCKADE_DEMO_NET.0/24); set STOCKADE_DEMO_NET to a free 10.x.y"
}

add_feeds() {
    if ! stockade feeds list --json >"$state/feeds.json" 2>/dev/null; then
        say "this enforcer has no threat feeds yet (stockade feeds failed): skipping the demo feeds"
        return
    fi
    local base="http://127.0.0.1:$STOCKADE_DEMO_FEED_PORT"
    grep -q '"demo-bad-ips"' "$state/feeds.json" \
        || stockade feeds add demo-bad-ips "$base/bad-ips.txt" --format ip-list --local >/dev/null
    grep -q '"demo-kit-sha256"' "$state/feeds.json" \
        || stockade feeds add demo-kit-sha256 "$base/kit-sha256.txt" --format sha256-list >/dev/null
    stockade feeds sync >/dev/null || say "feed sync reported a problem: see stockade feeds list"
    say "threat feeds demo-bad-ips ($STOCKADE_DEMO_ATTACKER_IP) and demo-kit-sha256 added and synced"
}

up() {
    local console=1
    for arg in "$@"; do
        case "$arg" in
            --no-console) console=0 ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option $arg (try --help)" ;;
        esac
    done
    [ -x "$venv/stockade-enforcer" ] || die "no .venv: run make setup first"
    local start=$SECONDS
    bash demo/build-images.sh
    mkdir -p "$state"
    write_state
    start_enforcer
    wait_for_sensors
    create_shared_network
    for app in "${apps[@]}"; do
        compose "$app" up -d --no-build 2>>"$state/compose.log" >/dev/null \
            || { tail -n 20 "$state/compose.log" >&2; die "deploying $app failed (log: $state/compose.log)"; }
    done
    say "deployed apps ${STOCKADE_DEMO_PREFIX}blog (web + db), ${STOCKADE_DEMO_PREFIX}pinger (the weak app) and ${STOCKADE_DEMO_PREFIX}attacker"
    # The attacker's box stands for a machine out on the internet: keep it in learn mode so
    # that only what happens to the blog and the weak app raises alerts.
    stockade mode "${STOCKADE_DEMO_PREFIX}attacker" learn >/dev/null 2>&1 \
        || say "could not set ${STOCKADE_DEMO_PREFIX}attacker to learn mode (stockade mode failed)"
    start_hostside
    add_feeds
    cat <<EOF
demo: ready in $((SECONDS - start)) s
  blog        http://127.0.0.1:$STOCKADE_DEMO_BLOG_PORT/   (web + MariaDB; a visitor reads it every 2 s)
  weak app    http://127.0.0.1:$STOCKADE_DEMO_PINGER_PORT/   (pinger: its ping form has a command injection)
  attacker    $STOCKADE_DEMO_ATTACKER_IP on the internal network $STOCKADE_DEMO_SHARED_NET (listed in the demo feed)
  profiles learn for $STOCKADE_DEMO_LEARN_SECONDS s; then, in another terminal: make attack
  stop it all: make demo-down        enforcer log: $state/enforcer.log
EOF
    if [ "$console" = 1 ]; then
        exec "$venv/stockade" --socket "$STOCKADE_SOCKET"
    fi
}

thaw_demo_containers() {
    # A frozen container cannot be stopped: ask the enforcer to thaw, and thaw by hand if it can't.
    local id
    for id in $(docker ps -q --no-trunc --filter "label=stockade.demo=$STOCKADE_DEMO_INSTANCE" 2>/dev/null); do
        stockade unfreeze "$id" >/dev/null 2>&1 || true
        for f in /sys/fs/cgroup/freezer/docker/"$id"/freezer.state /sys/fs/cgroup/freezer/system.slice/docker-"$id".scope/freezer.state; do
            [ -w "$f" ] && echo THAWED >"$f" 2>/dev/null || true
        done
        for f in /sys/fs/cgroup/docker/"$id"/cgroup.freeze /sys/fs/cgroup/system.slice/docker-"$id".scope/cgroup.freeze; do
            [ -w "$f" ] && echo 0 >"$f" 2>/dev/null || true
        done
    done
}

stop_pidfile() { # stop_pidfile PIDFILE WORD
    if pid_alive "$1" "$2"; then
        local pid
        pid=$(cat "$1")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 80); do
            pid_alive "$1" "$2" || break
            sleep 0.25
        done
        pid_alive "$1" "$2" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

down() {
    say "stopping the demo"
    thaw_demo_containers
    for app in "${apps[@]}"; do
        compose "$app" down -v -t 2 --remove-orphans >/dev/null 2>&1 || true
    done
    docker network rm "$STOCKADE_DEMO_SHARED_NET" >/dev/null 2>&1 || true
    stop_pidfile "$state/hostside.pid" hostside.py
    if [ -f "$state/enforcer.pid" ]; then
        stop_pidfile "$state/enforcer.pid" stockade-enforcer
        # Its table and pinned programs outlive it by design (protect across restarts); the
        # demo's go with it, or the programs would stay attached to every exec on the host.
        "$venv/stockade-enforcer" --config "$repo/demo/enforcer.toml" --uninstall >/dev/null \
            || say "could not uninstall table and pins $STOCKADE_NFT_TABLE (see above)"
    elif enforcer_answers; then
        say "left the enforcer on $STOCKADE_SOCKET running: the demo did not start it"
    fi
    if [ -d "$state" ]; then
        find "$state" -mindepth 1 -maxdepth 1 ! -name forensics -exec rm -rf {} +
        if [ -d "$state/forensics" ] && [ -n "$(ls -A "$state/forensics")" ]; then
            say "kept the forensics bundles in $state/forensics"
        else
            rm -rf "$state"
        fi
    fi
    say "stopped; the images stay cached (docker rmi \$(docker images -q 'stockade-demo/*') removes them)"
}

case "${1:-up}" in
    up) shift || true; up "$@" ;;
    --no-console) up "$@" ;;
    down) down ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
