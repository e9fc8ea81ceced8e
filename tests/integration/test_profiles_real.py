"""Profiles and detection against the real thing: a real enforcer process with its eBPF
sensors, a compose app on a real engine with a steady workload (a client fetching from a
web server in a loop), a few seconds of learning, then one anomaly per test.

The module shares one deployment (learning takes a while); each anomaly test looks only at
the incidents raised since it started, and asserts that every one of them is of the
expected kind and on the expected container. The last tests check that the steady
workload raises nothing and that everything survives kill -9.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support.enforce import sensors_loaded
from support.harness import DockerResources, EnforcerProcess, docker, ensure_busybox_image, exec_in, unique, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.bpf, pytest.mark.nftables, pytest.mark.slow]

LEARN_SECONDS = 10
QUIET_SECONDS = 15  # how long the steady workload must run without a single alert
SETTLE_SECONDS = 3  # after an anomaly: time for stragglers of the same action to arrive

COMPOSE = """
version: "2.4"
services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
    expose: ["8080"]
    labels: {{stockade.test: "1"}}
    networks: [back]
  client:
    image: {image}
    command: ["sh", "-c", "while true; do wget -q -O /dev/null http://web:8080/ ; sleep 0.5; done"]
    links: ["web"]
    labels: {{stockade.test: "1"}}
    networks: [back]
networks:
  back:
    internal: true
    labels: {{stockade.test: "1"}}
"""

# What an operator does once in a while, done while learning so that doing it again later
# is not an anomaly: docker exec (runc entering), shell redirects, tools run directly.
CLIENT_CHORES = [
    ["sh", "-c", "true"],
    ["sh", "-c", "mkdir -p /tmp && echo x > /tmp/chore && read x < /tmp/chore"],
    ["unshare", "--help"],
    ["nc", "--help"],
    ["timeout", "1", "nc", "-l", "-p", "9998"],  # a listener, so bind/listen are known calls
    ["true", "--help"],
    ["wget", "--help"],  # /bin/wget run directly (the loop runs the applet inside sh)
]
WEB_CHORES = [
    ["sh", "-c", "true"],
    ["sh", "-c", "read x < /etc/hostname"],
]


class Deployment:
    def __init__(self, enforcer: EnforcerProcess, docker_res: DockerResources, project: str) -> None:
        self.enforcer = enforcer
        self.docker = docker_res
        self.project = project
        self.web = f"{project}_web_1"
        self.client = f"{project}_client_1"
        self.network = f"{project}_back"

    def call(self, op: str, **args: Any) -> Any:
        return self.enforcer.call(op, **args)

    def last_id(self) -> int:
        return max([a["id"] for a in self.call("alerts", limit=1)] or [0])

    def alerts_since(self, since: int) -> list[dict[str, Any]]:
        return [a for a in self.call("alerts", since=since) if a["app"] == self.project
                or a["container"] in (self.web, self.client)]

    def anomaly(self, action: Callable[[], Any], container: str, kind: str,
                match: Callable[[dict[str, Any]], bool] = lambda a: True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Do `action`; wait for the expected incident; return it and every incident since."""
        since = self.last_id()
        action()
        found = wait_for(lambda: [a for a in self.alerts_since(since)
                                  if a["container"] == container and a["kind"] == kind and match(a)],
                         timeout=20, what=f"a {kind} alert on {container}")
        time.sleep(SETTLE_SECONDS)
        return found[0], self.alerts_since(since)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if docker("info", check=False).returncode != 0:
        pytest.fail("the Docker engine does not answer: run `make setup`")
    image = ensure_busybox_image()
    workdir = tmp_path_factory.mktemp("profiles-real")
    res = DockerResources()
    enforcer = EnforcerProcess(workdir / "enforcer", "--learn-seconds", str(LEARN_SECONDS))
    try:
        enforcer.start()
        wait_for(lambda: sensors_loaded(enforcer), timeout=120, what="the sensors to load")
        project = unique("stpr")
        res.compose_up(project, COMPOSE.format(image=image), Path(workdir) / project)
        d = Deployment(enforcer, res, project)

        def watched() -> bool:
            rows = enforcer.call("containers", app=project)
            return len(rows) == 2 and all(c["cgroup_id"] and c["profile_state"] == "learning" for c in rows)

        wait_for(watched, timeout=30, what="both containers watched and learning")
        for chore in CLIENT_CHORES:
            exec_in(d.client, *chore)
        for chore in WEB_CHORES:
            exec_in(d.web, *chore)
        states = {c["name"]: c["profile_state"] for c in enforcer.call("containers", app=project)}
        assert set(states.values()) == {"learning"}, \
            f"learning ended before the chores were done (machine too busy?): {states}"
        wait_for(lambda: all(c["profile_state"] == "active" for c in enforcer.call("containers", app=project)),
                 timeout=LEARN_SECONDS + 20, what="the profiles to become active")
        yield d
    except BaseException:
        print(f"\n---- enforcer log ----\n{enforcer.log()[-20000:]}")
        raise
    finally:
        enforcer.stop()
        res.cleanup()


def test_learned_profiles_hold_what_the_app_does(app: Deployment):
    client = app.call("profile", target=app.client)["profile"]
    assert client["state"] == "active" and client["mode"] == "alert"
    processes = {e["data"]["path"] for e in client["entries"]["process"]}
    pinned = {e["data"]["path"]: e for e in client["entries"]["process"] if e["data"]["sha256"]}
    # The loop's wget runs inside busybox sh as /proc/self/exe, profiled by applet name
    # (seeded from the compose command; pinned once the sensors report it).
    assert "/proc/self/exe:wget" in processes
    assert pinned["/bin/wget"]["source"] == "learned" and pinned["/bin/wget"]["data"]["binary"] == "/bin/busybox"
    peers = {(e["data"]["direction"], e["data"]["peer"], e["data"]["port"]) for e in client["entries"]["peer"]}
    assert ("out", f"{app.project}/web", 8080) in peers
    web = app.call("profile", target=app.web)["profile"]
    assert {"key": "tcp/8080", "source": "seed"}.items() <= {**web["entries"]["listener"][0]}.items()
    edges = {(e["from"], e["to"], e["port"]) for a in app.call("apps") if a["name"] == app.project for e in a["edges"]}
    assert ("client", "web", 8080) in edges


def test_steady_workload_raises_no_alert(app: Deployment):
    since = app.last_id()
    time.sleep(QUIET_SECONDS)
    assert app.alerts_since(since) == []


def test_exec_of_a_new_program_is_a_process_alert(app: Deployment):
    alert, new = app.anomaly(lambda: exec_in(app.client, "false"), app.client, "process",
                             lambda a: a["subject"] == "/bin/false")
    assert alert["severity"] == "high" and alert["detail"]["argv"] == ["false"]
    assert [(a["container"], a["kind"]) for a in new] == [(app.client, "process")]


def test_connection_from_a_container_outside_the_app_is_a_network_alert_on_the_target(app: Deployment):
    outsider = app.docker.run(network=app.network, name=unique("stprx"),
                              command=["sh", "-c", f"sleep 2; wget -q -O /dev/null http://{app.web}:8080/; sleep 600"])
    alert, new = app.anomaly(lambda: None, app.web, "network")
    assert (alert["detail"]["direction"], alert["detail"]["local_port"]) == ("in", 8080)
    assert alert["detail"]["peer"] == f"{outsider}/{outsider}" and alert["detail"]["peer_container"] == outsider
    assert [(a["container"], a["kind"]) for a in new] == [(app.web, "network")]  # the outsider learns: no alert


def test_a_new_listener_is_a_network_alert(app: Deployment):
    alert, new = app.anomaly(lambda: docker("exec", "-d", app.client, "nc", "-l", "-p", "9999"),
                             app.client, "network", lambda a: a["subject"] == "listen tcp/9999")
    assert alert["severity"] == "high"
    assert {(a["container"], a["kind"]) for a in new} == {(app.client, "network")}


def test_a_write_under_etc_is_a_file_alert(app: Deployment):
    alert, new = app.anomaly(lambda: exec_in(app.client, "sh", "-c", "echo x > /etc/stockade-probe"),
                             app.client, "file")
    assert alert["detail"]["path"] == "/etc/stockade-probe" and alert["severity"] == "high"
    assert [(a["container"], a["kind"]) for a in new] == [(app.client, "file")]


def test_a_read_of_etc_shadow_is_a_file_alert(app: Deployment):
    alert, new = app.anomaly(lambda: exec_in(app.web, "sh", "-c", "read x < /etc/shadow"), app.web, "file")
    assert alert["subject"] == "read /etc/shadow" and alert["rule"] == "research:sensitive-file"
    assert [(a["container"], a["kind"]) for a in new] == [(app.web, "file")]


def test_unshare_is_a_syscall_alert(app: Deployment):
    alert, new = app.anomaly(lambda: exec_in(app.client, "unshare", "-U", "true"), app.client, "syscall",
                             lambda a: a["subject"] == "unshare")
    assert alert["rule"] == "research:dangerous-syscall" and alert["detail"]["ret"] < 0  # denied by seccomp
    assert {(a["container"], a["kind"]) for a in new} == {(app.client, "syscall")}


def test_a_changed_binary_at_a_learned_path_is_reported_as_such(app: Deployment):
    # Replace the wget applet link with a modified copy of busybox (still a working wget),
    # then run /bin/wget as the operator did while learning.
    swap = "cp /bin/busybox /tmp/bb && echo tampered >> /tmp/bb && rm /bin/wget && cp /tmp/bb /bin/wget"
    exec_in(app.client, "sh", "-c", swap, check=True)
    time.sleep(1)  # the written path leaves the kernel's allow-list
    alert, _ = app.anomaly(lambda: exec_in(app.client, "wget", "--help"), app.client, "process",
                           lambda a: a["subject"] == "/bin/wget")
    assert alert["summary"].startswith("binary changed at learned path /bin/wget")
    assert alert["severity"] == "critical"
    assert alert["detail"]["learned_sha256"] and alert["detail"]["sha256"] != alert["detail"]["learned_sha256"]


def test_steady_workload_after_the_anomalies_raises_nothing_new(app: Deployment):
    since = app.last_id()
    time.sleep(QUIET_SECONDS)
    assert app.alerts_since(since) == []


def test_profiles_and_alerts_survive_kill_9(app: Deployment):
    e = app.enforcer
    wait_for(lambda: e.call("status")["store"]["pending_writes"] == 0, timeout=10, what="the store to catch up")
    time.sleep(1)  # a growing incident is written every 0.25 s
    before = {a["id"]: (a["kind"], a["subject"], a["count"]) for a in app.alerts_since(0)}
    profiles = {n: app.call("profile", target=n)["profile"] for n in (app.web, app.client)}
    e.kill9()
    e.start()
    wait_for(lambda: sensors_loaded(e), timeout=120, what="the sensors to load again")
    after = {a["id"]: (a["kind"], a["subject"], a["count"]) for a in app.alerts_since(0)}
    for alert_id, (kind, subject, count) in before.items():
        assert after[alert_id][:2] == (kind, subject) and after[alert_id][2] >= count
    for name, p in profiles.items():
        q = wait_for(lambda: app.call("profile", target=name)["profile"], timeout=20, what=f"{name}'s profile")
        assert (q["id"], q["state"], q["activated"]) == (p["id"], "active", p["activated"])  # no relearning
        assert {e["key"] for e in q["entries"]["process"]} == {e["key"] for e in p["entries"]["process"]}
    # Still active and enforcing: the steady loop is quiet, a new program is not.
    since = max(after) if after else 0
    time.sleep(QUIET_SECONDS / 2)
    assert app.alerts_since(since) == []
    alert, _ = app.anomaly(lambda: exec_in(app.web, "cal"), app.web, "process", lambda a: a["subject"] == "/bin/cal")
    assert alert["id"] > since
