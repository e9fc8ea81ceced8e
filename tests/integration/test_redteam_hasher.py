"""Red team, the hasher (issue 13, item 1 and the empty sha256 of item 5): one container
must never blind the host through the file hasher.

A real enforcer with its eBPF sensors and two busybox containers, both learned then
active. Container A writes to /dev/zero (under many names), to a FIFO with a reader and
to 10 GiB sparse files, all the time. Meanwhile a new binary run in container B is still
alerted within a bound, `stats`/`status` say what was not hashed and why, and the
enforcer's CPU stays well below one core. And a learned binary replaced by one too big to
hash is "could not be verified", never taken for the learned one.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from support.enforce import sensing, wait_active, wait_known
from support.harness import EnforcerProcess, exec_in, wait_for
from support.hasher_attack import cpu_share, exec_to_alert, process_alert, start_attack

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 12
ALERT_BOUND = 10.0  # seconds from B's exec to its alert while A attacks the hasher


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("redteam-hasher") / "enforcer", LEARN_SECONDS) as e:
        yield e


def test_a_container_writing_to_dev_zero_does_not_blind_the_host(enforcer, dockerx):
    net = dockerx.network()
    a, b = dockerx.run(network=net), dockerx.run(network=net)
    wait_known(enforcer, a, b)
    # Learning: what the test later runs in B (cp, a busybox copy at a learned path).
    for c in (a, b):
        exec_in(c, "cp", "/bin/busybox", "/tmp/learned")
        exec_in(c, "/tmp/learned", "true")
    wait_active(enforcer, a)
    wait_active(enforcer, b)

    start_attack(a)
    hasher = wait_for(lambda: (h := enforcer.call("stats")["hasher"])["skipped"]["not_regular"] >= 3
                      and h["skipped"]["too_large"] >= 1 and h, timeout=30, what="A's files to be skipped")

    # B's new binary is alerted within the bound while A keeps at it.
    waited, alert = exec_to_alert(enforcer, b, "/tmp/dropped", timeout=ALERT_BOUND)
    assert waited < ALERT_BOUND
    assert alert["detail"]["sha256"], alert["detail"]  # hashed: B did not queue behind A
    # ... and again later: nothing piles up behind A.
    waited2, _ = exec_to_alert(enforcer, b, "/tmp/dropped2", timeout=ALERT_BOUND)

    # The enforcer's CPU stays bounded (before the fix: one core reading /dev/zero forever).
    share = cpu_share(enforcer.proc.pid, 5.0)
    assert share < 0.6, f"the enforcer used {share:.0%} of a core while A attacked the hasher"

    # What was not hashed is counted, by reason, in stats and in `stockade status`.
    status = enforcer.cli_json("status")
    h = status["hasher"]
    assert h["skipped"]["not_regular"] >= hasher["skipped"]["not_regular"]
    assert h["skipped"]["too_large"] >= 1
    assert h["stuck_reads"] == 0 and h["workers"] >= 1
    text = enforcer.cli("status").stdout
    assert "not regular" in text and "too large" in text, text
    print(f"\nB's alerts {waited:.2f} s and {waited2:.2f} s after its exec; enforcer CPU {share:.0%} of a core; "
          f"hasher {h}")


def test_a_learned_binary_too_big_to_hash_is_not_taken_for_the_learned_one(enforcer, dockerx):
    net = dockerx.network()
    b = dockerx.run(network=net)
    wait_known(enforcer, b)
    exec_in(b, "cp", "/bin/busybox", "/tmp/tool")
    exec_in(b, "/tmp/tool", "true")
    wait_active(enforcer, b)
    # Replaced in place by a binary padded past the hash cap (still a valid ELF: the loader
    # reads its program headers, not its length). Before: an empty sha256 counted as known.
    assert exec_in(b, "truncate", "-s", "40M", "/tmp/tool").returncode == 0
    exec_in(b, "/tmp/tool", "true")
    alert = wait_for(lambda: (x := process_alert(enforcer, b, "/tmp/tool")) and "verified" in x["summary"] and x,
                     timeout=15, what="the unverified binary alert")
    assert alert["severity"] == "critical"
    assert "over 32 MiB" in alert["summary"], alert["summary"]
    assert alert["detail"]["sha256"] == "" and alert["detail"]["hash_reason"] == "too_large"
    # A new binary too big to hash is unexpected, and says why it has no hash.
    exec_in(b, "cp", "/bin/busybox", "/tmp/huge")
    exec_in(b, "truncate", "-s", "40M", "/tmp/huge")
    exec_in(b, "/tmp/huge", "true")
    alert = wait_for(lambda: process_alert(enforcer, b, "/tmp/huge"), timeout=15, what="the huge binary's alert")
    assert "not hashed: over 32 MiB" in alert["summary"], alert["summary"]


def test_a_container_writing_big_files_all_the_time_is_held_to_its_budget_and_said(enforcer, dockerx):
    net = dockerx.network()
    a = dockerx.run(network=net)
    wait_known(enforcer, a)
    exec_in(a, "true")
    wait_active(enforcer, a)
    before = enforcer.call("stats")["hasher"]["skipped"]["over_budget"]
    # 12 distinct 20 MiB regular files (under the cap) as fast as the container can write
    # them. With cp, which closes what it wrote (a shell redirection closes its fd before
    # the command writes: the sensor reports that close, of an empty file).
    assert exec_in(a, "sh", "-c", "head -c 20971520 /dev/zero > /tmp/src; for i in 1 2 3 4 5 6 7 8 9 10 11 12; "
                                  "do cp /tmp/src /tmp/r$i; done").returncode == 0
    alert = wait_for(lambda: next((x for x in enforcer.call("alerts", container=a)
                                   if x["kind"] == "file" and x["subject"] == "unhashed over_budget"), None),
                     timeout=15, what=f"the over-budget alert (hasher: {enforcer.call('stats')['hasher']})")
    assert alert["rule"] == "research:unhashed" and "hash budget (64 MiB/s) is spent" in alert["summary"]
    assert enforcer.call("stats")["hasher"]["skipped"]["over_budget"] > before
    exec_in(a, "sh", "-c", "rm -f /tmp/r*")
