"""The store on real SQLite files: migrations, WAL, write-behind, failures that lose nothing."""

from __future__ import annotations

import sqlite3

import pytest

from enforcer.models import Container
from enforcer.store import Store, StoreError
from enforcer.store.schema import LATEST_VERSION


async def test_migrations_run_once_and_set_the_version(tmp_path):
    path = tmp_path / "s.db"
    store = Store(str(path))
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"containers", "apps", "container_modes", "audit", "profiles", "profile_entries", "alerts"} <= tables
    conn.close()
    # A second open applies nothing and keeps the data.
    store = Store(str(path))
    await store.open()
    await store.inventory.set_app_mode("blog", "protect")
    await store.close()
    store = Store(str(path))
    await store.open()
    assert (await store.inventory.app_settings())["blog"]["mode"] == "protect"
    await store.close()


async def test_newer_schema_is_refused_with_one_line(tmp_path):
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={LATEST_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this Stockade"):
        await Store(str(path)).open()


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        await Store(str(path)).open()


async def test_write_behind_snapshot_is_committed_and_readable(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    c = Container(id="a" * 64, name="blog_web_1", app="blog", service="web", image="img", cgroup_id=42)
    store.inventory.save_container(c)
    assert store.db.pending == 1
    assert await store.db.flush()
    assert store.db.pending == 0
    got = await store.inventory.get_container("blog_web_1")
    assert got is not None and got.cgroup_id == 42 and got.id == c.id
    assert (await store.inventory.get_container("aaaa")).name == "blog_web_1"
    await store.close()


async def test_failed_batch_is_kept_and_written_when_the_database_accepts_again(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    # Another connection holds the write lock: our batch must wait, not vanish.
    blocker = sqlite3.connect(tmp_path / "s.db", timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    await store.db.conn.execute("PRAGMA busy_timeout=50")
    store.inventory.save_container(Container(id="b" * 64, name="x", app="x", service="x", image="i"))
    assert await store.db.flush() is False
    assert store.db.pending == 1 and "locked" in store.db.last_error
    blocker.rollback()
    blocker.close()
    assert await store.db.flush() is True
    assert store.db.pending == 0
    assert (await store.inventory.get_container("x")) is not None
    await store.close()


async def test_audit_records_who_what_and_result(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    await store.audit.record(1000, "alice", "freeze", "blog_web_1", {"target": "blog_web_1"}, "ok")
    await store.audit.record(0, "root", "block", "x", {}, "error: no such container")
    entries = await store.audit.recent()
    assert [(e.user, e.action, e.result) for e in entries] == [
        ("root", "block", "error: no such container"), ("alice", "freeze", "ok")]
    assert entries[1].time.endswith("Z")
    await store.close()
