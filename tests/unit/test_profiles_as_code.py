"""Profiles as code: export, import and diff, through the real socket of the rig's daemon."""

from __future__ import annotations

import pytest

from enforcer.profiles import export as profile_file
from enforcer.protocol import ProtocolError
from enforcer.sensors.events import ExecEvent, NetworkEvent
from support.rig import Rig

SHA = "a" * 64


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path / "rig", learn_seconds=3600.0)
    r.compose("shop", {"web": {"expose": [{"port": 8080}], "depends_on": ["db"]}, "db": {"expose": [{"port": 5432}]}})
    await r.start()
    yield r
    await r.stop()


async def _learned(rig):
    web = rig.container("shop_web_1", "shop", "web", ip="10.5.0.2")
    db = rig.container("shop_db_1", "shop", "db", ip="10.5.0.4")
    await rig.feed(ExecEvent(container_id=web.id, path="/usr/bin/httpd", sha256=SHA, argv=["httpd"]),
                   NetworkEvent(container_id=web.id, direction="out", proto="tcp", remote_ip="10.5.0.4",
                                remote_port=5432))
    return web, db


async def test_export_import_export_is_byte_identical_and_import_is_active_at_once(rig, tmp_path):
    web, _ = await _learned(rig)
    first = (await rig.call("profile.export", target="shop"))["yaml"]
    assert first.count("\n---") + first.startswith("---") >= 2  # one document per service
    assert "format: stockade-profile/v1" in first and "origin: learned" in first and "origin: seed" in first
    # Another host: a fresh enforcer with the same app running, still learning.
    other = Rig(tmp_path / "other", learn_seconds=3600.0)
    other.compose("shop", {"web": {"expose": [{"port": 8080}], "depends_on": ["db"]},
                           "db": {"expose": [{"port": 5432}]}})
    await other.start()
    try:
        web2 = other.container("shop_web_1", "shop", "web", ip="10.6.0.2")
        assert other.profiles.for_container(web2.id).profile.state == "learning"
        out = await other.call("profile.import", text=first, name="shop.yml")
        assert {p["service"] for p in out["imported"]} == {"web", "db"}
        p = other.profiles.for_container(web2.id).profile
        assert p.state == "active" and "/usr/bin/httpd" in p.processes  # no learning period
        assert (await other.call("profile.export", target="shop"))["yaml"] == first
        audit = [e for e in await other.call("audit") if e["action"] == "profile.import"]
        assert audit and audit[0]["target"] == "shop.yml" and audit[0]["result"] == "ok"
    finally:
        await other.stop()


@pytest.mark.parametrize("mutate, reason", [
    (lambda t: t.replace("format: stockade-profile/v1", "format: nope", 1), "format must be"),
    (lambda t: t.replace("origin: learned", "origin: guessed", 1), "origin must be one of"),
    (lambda t: t.replace("proto: tcp", "proto: icmp", 1), "proto must be one of"),
    (lambda t: t.replace("path: /usr/bin/httpd", "path: usr/bin/httpd", 1), "path must be absolute"),
    (lambda t: t + "\n--- [unclosed", "not YAML"),
])
async def test_a_bad_file_is_refused_with_its_line_and_nothing_is_applied(rig, mutate, reason):
    web, _ = await _learned(rig)
    good = (await rig.call("profile.export", target="shop"))["yaml"]
    before = {k: dict(v) for k, v in rig.profiles.for_container(web.id).profile.entries.items()}
    with pytest.raises(ProtocolError) as e:
        await rig.call("profile.import", text=mutate(good))
    assert e.value.code == "bad_request" and reason in str(e.value)
    assert "line " in str(e.value)
    assert {k: dict(v) for k, v in rig.profiles.for_container(web.id).profile.entries.items()} == before


async def test_diff_against_a_file_a_container_and_the_previous_image(rig):
    web, db = await _learned(rig)
    exported = (await rig.call("profile.export", target=web.name))["yaml"]
    await rig.feed(ExecEvent(container_id=web.id, path="/bin/extra", sha256="b" * 64, argv=["extra"]))
    d = await rig.call("profile.diff", target=web.name, text=exported)
    assert [(r["kind"], r["key"]) for r in d["added"]] == [("process", "/bin/extra sha256:" + "b" * 64)]
    assert d["removed"] == []
    d = await rig.call("profile.diff", target=web.name, other=db.name)
    assert d["added"] and d["removed"]
    # A new image digest of web: its new profile against the old one (drift on deploy).
    web_v2 = rig.container("shop_web_2", "shop", "web", image_id="sha256:img2", ip="10.5.0.7")
    d = await rig.call("profile.diff", target=web_v2.name)
    assert any(r["key"].startswith("/usr/bin/httpd") for r in d["removed"])  # learned on v1 only
    with pytest.raises(ProtocolError) as e:
        await rig.call("profile.diff", target=db.name)
    assert e.value.code == "not_found"


def test_parse_keeps_origins_and_provenance():
    text = """---
format: stockade-profile/v1
app: a
service: s
image_digest: sha256:x
entries:
  process:
  - path: /bin/x
    sha256: ''
    origin: allowed
    by: alice
    alert_id: 7
  syscall:
  - name: read
    nr: 0
    origin: seed
"""
    (doc,) = profile_file.parse(text)
    proc = next(e for e in doc.entries if e.kind == "process")
    assert proc.source == "allowed" and proc.data["by"] == "alice" and proc.data["alert_id"] == 7
    with pytest.raises(profile_file.ProfileFileError) as e:
        profile_file.parse(text.replace("    by: alice\n", ""))
    assert e.value.line == 8
