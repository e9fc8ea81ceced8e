"""Forensics without the daemon or Docker: it is given its ports (a fake Docker, the bundle
folder, and callables for incidents, audit entries and the profile), and the functions the
wiring binds to them (incidents_of, audit_of, profile_of) behave as before."""

from __future__ import annotations

import json
import tarfile

from types import SimpleNamespace

from enforcer.enforce.forensics import Forensics, audit_of, incidents_of, profile_of
from enforcer.models import Alert, AuditEntry, Container
from enforcer.store.alerts import AlertQuery

CID = "ab" * 32
C = Container(id=CID, name="shop-web-1", app="shop", service="web", image="busybox", state="exited")


def alert(n: int) -> Alert:
    return Alert(id=n, time="t", host="h", app="shop", service="web", container=C.name, container_id=CID,
                 image="busybox", kind="process", severity="high", summary=f"alert {n}")


class FakeDocker:
    def __init__(self) -> None:
        self.api = SimpleNamespace(diff=lambda cid: [], logs=lambda cid, **kw: b"a log line\n")

    async def inspect_container(self, cid: str) -> dict | None:
        return {"Id": cid}

    async def call(self, fn):  # noqa: ANN001
        return fn(self.api)


async def test_capture_writes_what_its_ports_give(tmp_path):
    async def incidents(c):
        return [{"id": 7, "container_id": c.id}]

    async def audit(c):
        return [{"action": "freeze", "target": c.name}]

    f = Forensics(FakeDocker(), str(tmp_path / "bundles"), incidents=incidents, audit_entries=audit,
                  profile_view=lambda c: {"app": c.app})
    result = await f.capture(C, out=None, uid=0, gid=0, groups=set, freezer_state="", blocks=[])
    assert result.path.startswith(str(tmp_path / "bundles")) and result.members > 0
    with tarfile.open(result.path) as tar:
        read = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert json.loads(read["alerts.json"]) == [{"id": 7, "container_id": CID}]
    assert json.loads(read["audit.json"]) == [{"action": "freeze", "target": C.name}]
    assert json.loads(read["profile.json"]) == {"app": "shop"}
    assert json.loads(read["inspect.json"]) == {"Id": CID}
    assert read["logs.txt"] == b"a log line\n"
    assert "container is exited: no processes or sockets" in json.loads(read["manifest.json"])["notes"]


async def test_incidents_are_queried_for_the_container_and_a_failure_gives_none():
    seen: list[AlertQuery] = []

    async def query(q):
        seen.append(q)
        return [alert(1)]

    assert [a["id"] for a in await incidents_of(query, C)] == [1]
    assert seen[0].container == CID and seen[0].limit == 1000

    async def broken(q):
        raise RuntimeError("store closed")

    assert await incidents_of(broken, C) == []


async def test_audit_keeps_the_entries_about_the_container():
    entries = [AuditEntry(id=i, time="t", uid=0, user="root", action="freeze", target=t)
               for i, t in enumerate([C.name, CID, C.short_id, CID[:4], CID[:3], "other", ""])]

    async def recent(limit: int = 500):
        assert limit == 10_000
        return entries

    assert [e["id"] for e in await audit_of(recent, C)] == [0, 1, 2, 3]


def test_profile_of_a_container_without_one_or_without_a_book_is_none():
    views = SimpleNamespace(attached={CID: "att"}, profile_view=lambda att: {"att": att})
    assert profile_of(views, C) == {"att": "att"}
    assert profile_of(SimpleNamespace(attached={}, profile_view=None), C) is None
    assert profile_of(None, C) is None

    def broken(att):
        raise KeyError("image")

    assert profile_of(SimpleNamespace(attached={CID: "att"}, profile_view=broken), C) is None
