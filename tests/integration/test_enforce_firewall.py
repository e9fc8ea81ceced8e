"""The firewall against the real kernel on a table of its own (no Docker): diffs applied,
a table changed behind its back repaired, one owner per table, the kernel state adopted at
restart, and libnftables errors in one line. The pure parts are in
tests/unit/test_enforce_units.py."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from enforcer.enforce import ruleset as R
from enforcer.enforce.firewall import Firewall
from enforcer.enforce.nft import Nft, NftError
from support.enforce import nft_elements, nft_table
from support.harness import sh

pytestmark = pytest.mark.nftables


@pytest.fixture
def table():
    name = f"sttest_{int(__import__('time').time())}_{uuid.uuid4().hex[:6]}"
    yield name
    for family in R.FAMILIES:
        sh("nft", "delete", "table", family, name, check=False)


def _run(coro):
    return asyncio.run(coro)


def test_firewall_applies_diffs_and_repairs_a_table_someone_else_changed(table):
    async def scenario() -> None:
        fw = Firewall(table)
        await fw.open()
        want = {**R.empty_ruleset(), "blk4": frozenset({("172.31.9.2", "10.9.0.0/16")}),
                "blkp4": frozenset({("172.31.9.2", "10.8.0.1/32", 6, 80)})}
        assert await fw.apply(want) == (2, 0)
        assert await fw.apply(want) == (0, 0)  # nothing to do: no transaction
        assert await fw.verify()
        # Someone deletes our whole table behind our back: verify sees it, reconcile restores it.
        for family in R.FAMILIES:
            sh("nft", "delete", "table", family, table)
        assert not await fw.verify()
        report = await fw.reconcile(want)
        assert report.table_existed is False and report.missing == 2
        assert await fw.verify()
        # An element removed by hand makes the next diff fail in the kernel: repaired whole.
        sh("nft", "delete", "element", "inet", table, "blk4", "{ 172.31.9.2 . 10.9.0.0/16 }")
        assert await fw.apply({**want, "blk4": frozenset()}) == (0, 1)
        assert fw.stats.repairs == 1 and await fw.verify()
        # A second enforcer on the same table is refused: one owner per table.
        other = Firewall(table)
        with pytest.raises(NftError, match="owned by another enforcer"):
            await other.open()
        await other.stop()
        await fw.stop()
        # Closing keeps the table and its elements: enforcement outlives the process.
        assert "10.8.0.1" in str(nft_elements("bridge", table, "blkp4"))

    _run(scenario())
    # Every rule is in our table; base chains hook forward/input/output (inet) and forward (bridge).
    hooks = {(c["chain"]["family"], c["chain"].get("hook")) for c in nft_table("inet", table) + nft_table("bridge", table)
             if "chain" in c and c["chain"].get("hook")}
    assert hooks == {("inet", "forward"), ("inet", "input"), ("inet", "output"), ("bridge", "forward")}


def test_restart_adopts_the_kernel_state_until_reconciled(table):
    async def scenario() -> None:
        fw = Firewall(table)
        await fw.open()
        want = {**R.empty_ruleset(), "blk4": frozenset({("172.31.9.3", "10.7.0.0/16")})}
        await fw.apply(want)
        await fw.stop()
        again = Firewall(table)
        report = await again.open()  # nothing lifted while the inventory is still loading
        assert report.table_existed and again.applied["blk4"] == want["blk4"]
        assert "10.7.0.0" in str(nft_elements("inet", table, "blk4"))
        await again.stop()

    _run(scenario())


def test_nft_errors_are_one_line():
    nft = Nft()
    try:
        with pytest.raises(NftError) as err:
            nft.run([{"list": {"table": {"family": "inet", "name": "sttest_no_such_table_x"}}}])
        assert "\n" not in str(err.value) and err.value.errno_name == "ENOENT"
    finally:
        nft.close()
