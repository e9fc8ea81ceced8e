"""Forensics bundles from a real container: frozen first, one tar.gz whose manifest holds
the sha256 of every member, the process tree with the binaries' hashes, sockets, the
changed files (and never a host file a planted symlink points at), logs and alerts."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from support.enforce import wait_known
from enforcer.enforce.forensics import member_path
from support.harness import container_info, exec_in, wait_for

pytestmark = pytest.mark.docker

# Listens, writes a script and a secret, plants a symlink to a host-only path, logs a line.
WORKLOAD = ["sh", "-c",
            "mkdir -p /tmp /root; echo 'evil payload' > /tmp/dropper.sh; chmod +x /tmp/dropper.sh; "
            "echo s3cret > /root/loot.txt; ln -s /etc/stockade-host-only-file /tmp/escape; "
            "echo started-workload; nc -ll -p 4444 -e cat & exec sleep 3600"]


def read_bundle(path: str) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            assert m.isfile() and m.mode == 0o600 and ".." not in m.name.split("/")
            out[m.name.split("/", 1)[1]] = tar.extractfile(m).read()  # type: ignore[union-attr]
        return out


@pytest.mark.nftables
def test_bundle_holds_process_tree_changed_files_and_a_manifest(dockerx, busybox_image, make_enforcer, tmp_path):
    host_secret = Path("/etc/stockade-host-only-file")
    host_secret.write_text("HOST SECRET: must never enter a bundle\n")
    try:
        e = make_enforcer("--no-sensors")
        name = dockerx.run(command=WORKLOAD)
        wait_known(e, name)
        wait_for(lambda: exec_in(name, "cat", "/root/loot.txt").stdout.strip() == "s3cret", what="the workload")
        wait_for(lambda: any(str(x["proto"]).startswith("tcp") for x in _listeners(name)), what="the listener")

        result = e.cli_json("forensics", name)
        assert result["frozen"] is True
        assert e.call("container", target=name)["frozen"] is True  # stays frozen for analysis
        path = result["path"]
        assert path.startswith(str(e.workdir / "forensics"))
        raw = Path(path).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == result["sha256"] and len(raw) == result["size"]
        assert os.stat(path).st_mode & 0o777 == 0o600

        members = read_bundle(path)
        manifest = json.loads(members.pop("manifest.json"))
        assert manifest["container"]["name"] == name and manifest["freezer_state"] == "FROZEN"
        assert {m["name"] for m in manifest["members"]} == set(members)
        for m in manifest["members"]:
            assert hashlib.sha256(members[m["name"]]).hexdigest() == m["sha256"], m["name"]

        # The process tree: sh -> (nc, sleep), each with the sha256 of its binary (busybox).
        busybox_sha = hashlib.sha256(Path(f"/proc/{container_info(name)['State']['Pid']}/exe").read_bytes()).hexdigest()
        procs = json.loads(members["processes.json"])
        comms = {p["comm"] for p in procs}
        assert {"sleep", "nc"} <= comms
        assert all(p["exe_sha256"] == busybox_sha for p in procs if not p["error"])
        tree = json.loads(members["process_tree.json"])
        assert len(tree) == 1 and tree[0]["comm"] == "sleep"  # the init process (exec'd sleep)
        assert any(child["comm"] == "nc" for child in tree[0]["children"])
        assert b"nc" in members["summary.txt"]

        # Sockets: the listener on 4444, with its owner.
        sockets = json.loads(members["sockets.json"])
        listener = next(s for s in sockets if s["local_port"] == 4444 and s["state"] == "LISTEN")
        assert listener["owners"] and listener["owners"][0]["comm"] == "nc"

        # Changed files with their hashes, and the files themselves.
        changes = {c["path"]: c for c in json.loads(members["changes.json"])}
        dropper = changes["/tmp/dropper.sh"]
        assert dropper["kind"] == "added" and dropper["type"] == "file"
        assert dropper["sha256"] == hashlib.sha256(b"evil payload\n").hexdigest()
        assert members[dropper["member"]] == b"evil payload\n"
        assert members["files/root/loot.txt"] == b"s3cret\n"
        # The planted link is recorded as a link; the host file it names is nowhere.
        assert changes["/tmp/escape"]["type"] == "symlink"
        assert changes["/tmp/escape"]["target"] == "/etc/stockade-host-only-file"
        assert not any(b"HOST SECRET" in data for data in members.values())

        assert b"started-workload" in members["logs.txt"]
        assert json.loads(members["inspect.json"])["Id"] == container_info(name)["Id"]

        # --out: a path of the caller's choosing, never over an existing file.
        out = tmp_path / "bundle.tar.gz"
        again = e.cli_json("forensics", name, "--out", str(out))
        assert again["path"] == str(out) and out.exists()
        proc = e.cli("forensics", name, "--out", str(out), check=False)
        assert proc.returncode != 0 and "exists" in proc.stderr
        e.cli("unfreeze", name)
    finally:
        host_secret.unlink()


def _listeners(name: str) -> list[dict[str, object]]:
    from enforcer.enforce.processes import read_sockets

    return [s for s in read_sockets(container_info(name)["State"]["Pid"]) if s["state"] == "LISTEN"]


def test_member_names_never_leave_the_bundle_folder():
    assert member_path("/tmp/a.sh") == "files/tmp/a.sh"
    assert member_path("/../../etc/passwd") == "files/etc/passwd"
    assert member_path("/") is None
    odd = member_path("/a/b\nc\udcff")
    assert odd is not None and odd.isascii() and odd.isprintable() and odd.startswith("files/a/")


@pytest.mark.nftables
def test_a_stopped_container_still_gets_its_changed_files(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--no-sensors")
    name = dockerx.run(command=["sh", "-c", "mkdir -p /tmp; echo left behind > /tmp/note.txt; "
                                            "ln -s /etc/passwd /tmp/link; sleep 3600"])
    wait_known(e, name)
    wait_for(lambda: exec_in(name, "cat", "/tmp/note.txt").stdout == "left behind\n", what="the workload")
    from support.harness import docker

    docker("stop", "-t", "0", name)
    wait_for(lambda: e.call("container", target=name)["state"] == "exited", what="the stop to be seen")
    result = e.cli_json("forensics", name)
    assert result["frozen"] is False and result["processes"] == 0
    members = read_bundle(result["path"])
    changes = {c["path"]: c for c in json.loads(members["changes.json"])}
    assert members[changes["/tmp/note.txt"]["member"]] == b"left behind\n"
    assert changes["/tmp/note.txt"]["sha256"] == hashlib.sha256(b"left behind\n").hexdigest()
    assert changes["/tmp/link"]["type"] == "symlink" and "member" not in changes["/tmp/link"]
    assert "container is exited" in json.loads(members["manifest.json"])["notes"][0]
