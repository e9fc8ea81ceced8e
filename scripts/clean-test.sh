#!/usr/bin/env bash
# Remove whatever a crashed test run left: containers, networks and compose projects
# labelled stockade.test, and enforcers started from a temp folder.
#
# By default only objects older than 30 minutes go: test sessions run in parallel on one
# machine, and a session starting must not remove what another one is using right now
# (no test takes that long). `--all` removes every labelled object (make clean-test).
set -u
min_age=1800
[ "${1:-}" = "--all" ] && min_age=0
now=$(date +%s)

old_enough() {  # stdin: "ID CREATED" lines; stdout: the IDs created at least min_age ago
    while read -r id created; do
        [ -z "$id" ] && continue
        t=$(date -d "${created% UTC}" +%s 2>/dev/null || echo "$now")  # unparsable: keep it
        [ $((now - t)) -ge "$min_age" ] && echo "$id"
    done
}

ids=$(docker ps -aq --filter label=stockade.test 2>/dev/null)
[ -n "$ids" ] && ids=$(docker inspect -f '{{.Id}} {{.Created}}' $ids 2>/dev/null | old_enough)
[ -n "$ids" ] && docker rm -f $ids >/dev/null
# Containers of the private demo copies (label stockade.demo=sdt<hex>), never the real demo's.
ids=$(docker ps -aq --filter label=stockade.demo 2>/dev/null)
[ -n "$ids" ] && ids=$(docker inspect -f '{{.Id}} {{index .Config.Labels "stockade.demo"}} {{.Created}}' $ids 2>/dev/null \
    | awk '$2 ~ /^sdt[0-9a-f]+$/ {print $1, $3}' | old_enough)
[ -n "$ids" ] && docker rm -f $ids >/dev/null
nets=$(docker network ls -q 2>/dev/null)  # ... and their networks (shared, and compose's)
[ -n "$nets" ] && nets=$(docker network inspect -f '{{.Id}} {{with index .Labels "stockade.demo"}}{{.}}{{end}}{{with index .Labels "com.docker.compose.project"}}{{.}}{{end}} {{.Created}}' $nets 2>/dev/null \
    | awk '$2 ~ /^sdt[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]/ {print $1, $3}' | old_enough)
[ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1
nets=$(docker network ls -q --filter label=stockade.test 2>/dev/null)
[ -n "$nets" ] && nets=$(docker network inspect -f '{{.Id}} {{.Created}}' $nets 2>/dev/null | old_enough)
[ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1
# nftables tables of test enforcers (sttest_<epoch>_<id>, in the inet and bridge families).
if command -v nft >/dev/null; then
    nft list tables 2>/dev/null | while read -r _ family name; do
        case "$name" in sttest_*_*) ;; *) continue ;; esac
        created=${name#sttest_}; created=${created%%_*}
        case "$created" in ''|*[!0-9]*) continue ;; esac
        [ $((now - created)) -ge "$min_age" ] && nft delete table "$family" "$name" 2>/dev/null
    done
fi
# ... their bpffs pins (policy maps and program links: they keep programs attached) ...
for dir in /sys/fs/bpf/stockade/sttest_*_*; do
    [ -d "$dir" ] || continue
    created=${dir#/sys/fs/bpf/stockade/sttest_}; created=${created%%_*}
    case "$created" in ''|*[!0-9]*) continue ;; esac
    [ $((now - created)) -ge "$min_age" ] && rm -rf "$dir"
done
# The private demo copies of tests/e2e (sdt<hex>_demo) name no time: their pin folder's age
# does, and an enforcer that still runs holds its table's lock.
for dir in /sys/fs/bpf/stockade/sdt*_demo; do
    [ -d "$dir" ] || continue
    name=${dir##*/}
    [ $((now - $(stat -c %Y "$dir"))) -ge "$min_age" ] || continue
    lock=/run/stockade/nft-$name.lock
    if [ -e "$lock" ] && ! flock -n "$lock" true 2>/dev/null; then continue; fi
    rm -rf "$dir"
    for family in inet bridge; do nft delete table "$family" "$name" 2>/dev/null; done
done
if command -v nft >/dev/null; then  # ... and their tables once no enforcer holds them
    nft list tables 2>/dev/null | while read -r _ family name; do
        case "$name" in sdt*_demo) ;; *) continue ;; esac
        lock=/run/stockade/nft-$name.lock
        if [ -e "$lock" ] && ! flock -n "$lock" true 2>/dev/null; then continue; fi
        nft delete table "$family" "$name" 2>/dev/null
    done
fi
# ... and their ownership locks, unless an enforcer still holds one.
for lock in /run/stockade/nft-sttest_*_*.lock; do
    [ -e "$lock" ] || continue
    created=${lock#/run/stockade/nft-sttest_}; created=${created%%_*}
    case "$created" in ''|*[!0-9]*) continue ;; esac
    [ $((now - created)) -ge "$min_age" ] && flock -n "$lock" rm -f "$lock" 2>/dev/null
done
# ... and the throwaway sshd of the SSH transport tests (tests/support/sshd.py), with its folder.
ps -eo pid=,etimes=,args= 2>/dev/null | while read -r pid age args; do
    # (sshd rewrites its title: "sshd: /usr/sbin/sshd -D -e -f /tmp/stockade-sshd-X/sshd_config [listener] ...")
    case "$args" in *"/usr/sbin/sshd -D -e -f /tmp/stockade-sshd-"*/sshd_config*) ;; *) continue ;; esac
    [ "$age" -ge "$min_age" ] || continue
    dir=${args#*-f }; dir=${dir%%/sshd_config*}
    kill "$pid" 2>/dev/null
    case "$dir" in /tmp/stockade-sshd-*) rm -rf "$dir" ;; esac
done
exit 0
