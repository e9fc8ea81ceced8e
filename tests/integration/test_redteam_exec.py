"""Red team, exec identity (issue 13, items 2, 5 and 7), against the real enforcer, real
containers and the real kernel. Each test learns a profile, then attacks it in alert mode
(the alert must come) and in protect mode (the program must never run):

- a TOCTOU on the exec path: a second thread flips the path string from an allowed program
  to a forbidden one while the first thread execs it (the decision must be made on the
  kernel's own copy of the path, not on user memory);
- a multi-call binary under an allowed path: `exec -a nc /bin/sh -l -p 4445` runs busybox's
  nc where the profile allows only /bin/sh run as sh;
- an exec storm: thousands of execs of a forbidden program from many processes (no table
  that can fill may turn into an allow).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from support.enforce import sensing, wait_active, wait_known
from support.harness import EnforcerProcess, exec_in, wait_for
from support.exec_race import attack_container, build_attacks, escaped, tally

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 10


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[EnforcerProcess]:
    with sensing(tmp_path_factory.mktemp("redteam") / "enforcer", LEARN_SECONDS) as e:
        yield e


@pytest.fixture(scope="module")
def attacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_attacks(tmp_path_factory.mktemp("attacks"))


def _process_alert(e: EnforcerProcess, container: str, subject: str, action: str | None = None) -> dict:
    return wait_for(lambda: next((a for a in e.call("alerts", container=container)
                                  if a["kind"] == "process" and a["subject"] == subject
                                  and (action is None or a["action"] == action)), None),
                    timeout=30, what=f"a process alert for {subject}")


def _learned(e: EnforcerProcess, dockerx, attacks: Path, *learn: tuple[str, ...]) -> str:
    """A container whose profile learned /x/race and /x/a (and what `learn` runs), in alert mode."""
    c = attack_container(dockerx, attacks, dockerx.network())
    wait_known(e, c)
    exec_in(c, "/x/race", "learn", check=True)
    for cmd in learn:
        exec_in(c, "/x/race", *cmd, check=True)
    e.cli("mode", c, "alert")
    wait_active(e, c)
    return c


def test_a_path_flipped_after_the_check_is_decided_on_the_kernels_copy(enforcer, dockerx, attacks):
    c = _learned(enforcer, dockerx, attacks)
    # Alert mode: whatever ran as /x/b is reported as /x/b.
    t = tally(c, "race", "400")
    print("race, alert mode:", t)
    assert t["bad"] > 0, f"the flip never landed: {t}"  # the race is real on this machine
    _process_alert(enforcer, c, "/x/b", "alerted")
    # Protect mode: /x/b never runs, whichever thread wins; /x/a still does.
    enforcer.cli("mode", c, "protect")
    wait_for(lambda: enforcer.call("container", target=c)["mode"] == "protect", what="protect mode")
    before = escaped(c)
    t = tally(c, "race", "3000")
    print("race, protect mode:", t)
    assert t["bad"] == 0 and escaped(c) == before, f"/x/b ran in protect mode: {t}"
    assert t["killed"] > 0 and t["ok"] > 0, t  # both programs were really tried
    _process_alert(enforcer, c, "/x/b", "killed")


def test_a_busybox_applet_under_an_allowed_path_is_its_own_program(enforcer, dockerx, attacks):
    # The profile allows /bin/sh run as sh (learned), and nothing else of busybox.
    c = _learned(enforcer, dockerx, attacks, ("execas", "2000", "sh", "/bin/sh", "-c", "exit 0"))
    allowed = exec_in(c, "/x/race", "execas", "2000", "sh", "/bin/sh", "-c", "exit 0").stdout
    assert "exit=0" in allowed, allowed
    # Alert mode: busybox's nc runs (it listens on 4445) and is reported as /bin/sh:nc.
    out = exec_in(c, "/x/race", "execas", "1500", "nc", "/bin/sh", "-l", "-p", "4445").stdout
    assert "alive listening4445=1" in out, out
    alert = _process_alert(enforcer, c, "/bin/sh:nc", "alerted")
    assert alert["detail"]["path"] == "/bin/sh" and alert["detail"]["argv"][0] == "nc"
    # Protect mode: killed before it runs; sh at the same path still runs.
    enforcer.cli("mode", c, "protect")
    wait_for(lambda: enforcer.call("container", target=c)["mode"] == "protect", what="protect mode")
    out = exec_in(c, "/x/race", "execas", "1500", "nc", "/bin/sh", "-l", "-p", "4445").stdout
    assert "signal=9" in out, out
    _process_alert(enforcer, c, "/bin/sh:nc", "killed")
    assert "exit=0" in exec_in(c, "/x/race", "execas", "2000", "sh", "/bin/sh", "-c", "exit 0").stdout
    # The applet is the basename of argv[0], whatever directory it names.
    out = exec_in(c, "/x/race", "execas", "1500", "/usr/bin/nc", "/bin/sh", "-l", "-p", "4445").stdout
    assert "signal=9" in out, out
    # An argv[0] longer than the kernel reads, its basename past the cut: no applet, no pass.
    for argv0 in ("x" * 46 + "/nc", "/" * 44 + "sh/nc", "/" * 45 + "sh/nc"):
        out = exec_in(c, "/x/race", "execas", "1500", argv0, "/bin/sh", "-l", "-p", "4445").stdout
        assert "signal=9" in out, (argv0, out)


def test_an_exec_storm_never_lets_a_forbidden_program_run(enforcer, dockerx, attacks):
    c = _learned(enforcer, dockerx, attacks)
    t = tally(c, "storm", "4", "50")
    assert t["bad"] == 200, t
    _process_alert(enforcer, c, "/x/b", "alerted")
    enforcer.cli("mode", c, "protect")
    wait_for(lambda: enforcer.call("container", target=c)["mode"] == "protect", what="protect mode")
    before = escaped(c)
    started = time.monotonic()
    t = tally(c, "storm", "16", "400", timeout=600)
    print(f"storm, protect mode: {t} in {time.monotonic() - started:.1f} s")
    assert t == {"ok": 0, "bad": 0, "killed": 6400, "other": 0}, t
    assert escaped(c) == before
    _process_alert(enforcer, c, "/x/b", "killed")
