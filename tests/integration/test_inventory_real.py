"""The inventory against a real engine: compose apps, containers, cgroups, addresses, changes."""

from __future__ import annotations

import os

import pytest

from support.harness import EnforcerProcess, container_info, docker, unique, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.nftables]

TWO_SERVICES = """
version: "2.4"
services:
  web:
    image: {image}
    command: ["httpd", "-f", "-p", "8080"]
    links: ["db:database"]
    depends_on: ["db"]
    expose: ["8080"]
    labels: {{stockade.test: "1"}}
    networks: [back]
  db:
    image: {image}
    command: ["nc", "-ll", "-p", "3306", "-e", "cat"]
    expose: ["3306"]
    labels: {{stockade.test: "1"}}
    networks: [back]
networks:
  back:
    internal: true
    labels: {{stockade.test: "1"}}
"""


def test_compose_app_is_seen_with_services_cgroups_and_addresses(dockerx, busybox_image, make_enforcer, tmp_path):
    enforcer: EnforcerProcess = make_enforcer("--no-sensors")
    project = unique("stapp")
    dockerx.compose_up(project, TWO_SERVICES.format(image=busybox_image), tmp_path / project)

    def app_seen():
        apps = {a["name"]: a for a in enforcer.cli_json("apps")}
        app = apps.get(project)
        if app and all(app["services"].get(s) for s in ("web", "db")):
            return app
        return None

    app = wait_for(app_seen, timeout=10, what="the compose app in `stockade apps`")
    assert app["lone"] is False
    declared = app["compose"]["services"]
    assert declared["web"]["links"] == ["db"]
    assert declared["web"]["depends_on"] == ["db"]
    assert [p["port"] for p in declared["db"]["expose"]] == [3306]

    containers = {c["service"]: c for c in enforcer.cli_json("containers", "--app", project)}
    assert set(containers) == {"web", "db"}
    for service, c in containers.items():
        info = container_info(c["name"])
        assert c["id"] == info["Id"]
        assert c["state"] == "running"
        assert c["image_id"] == info["Image"]
        # The cgroup id is the inode of the container's cgroup v2 directory (what eBPF sees).
        assert c["cgroup_id"] == os.stat(c["cgroup_path"]).st_ino
        assert info["Id"] in c["cgroup_path"]
        assert info["State"]["Pid"] in c["pids"]
        nets = {n["network"]: n["ip"] for n in c["networks"]}
        expected = {k: v["IPAddress"] for k, v in info["NetworkSettings"]["Networks"].items()}
        assert nets == expected and all(nets.values())

    # Stopping a container shows within a second (the event stream, not a poll).
    docker("stop", "-t", "0", containers["db"]["name"])
    wait_for(lambda: {c["service"]: c for c in enforcer.cli_json("containers", "--app", project)}["db"]["state"] == "exited",
             timeout=1.5, interval=0.05, what="the stopped container's state")
    docker("rm", "-f", containers["db"]["name"])
    wait_for(lambda: "db" not in {c["service"] for c in enforcer.cli_json("containers", "--app", project)},
             timeout=1.5, interval=0.05, what="the removed container to disappear")


def test_lone_container_is_an_app_of_one_service(dockerx, busybox_image, make_enforcer):
    enforcer = make_enforcer("--no-sensors")
    name = dockerx.run(network=dockerx.network())
    apps = wait_for(lambda: {a["name"]: a for a in enforcer.cli_json("apps")}.get(name), what="the lone container's app")
    assert apps["lone"] is True
    assert list(apps["services"]) == [name]


def test_restart_is_seen_with_a_new_pid(dockerx, busybox_image, make_enforcer):
    enforcer = make_enforcer("--no-sensors")
    name = dockerx.run()
    first = wait_for(lambda: next((c for c in enforcer.cli_json("containers") if c["name"] == name), None))
    docker("restart", "-t", "0", name)
    wait_for(lambda: next(c for c in enforcer.cli_json("containers") if c["name"] == name)["pid"] not in (0, first["pid"]),
             timeout=5, what="the restarted container's new pid")


def test_containers_present_before_the_enforcer_starts_are_listed(dockerx, busybox_image, make_enforcer):
    name = dockerx.run()
    enforcer = make_enforcer("--no-sensors")
    wait_for(lambda: any(c["name"] == name for c in enforcer.cli_json("containers")), timeout=5)
