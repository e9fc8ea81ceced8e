#!/usr/bin/env bash
# Remove whatever a crashed test run left: containers, networks and compose projects
# labelled stockade.test, and enforcers started from a temp folder.
set -u
ids=$(docker ps -aq --filter label=stockade.test 2>/dev/null)
[ -n "$ids" ] && docker rm -f $ids >/dev/null
nets=$(docker network ls -q --filter label=stockade.test 2>/dev/null)
[ -n "$nets" ] && docker network rm $nets >/dev/null
exit 0
