"""The pure parts of enforcement: peer parsing, the desired set elements (merged, never
overlapping), the JSON a set element becomes and is read back from, diffs; and the
firewall against the real kernel on a table of its own (no Docker)."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid

import pytest

from support.enforce import nft_elements, nft_table
from enforcer.enforce import ruleset as R
from enforcer.enforce.blocks import BlockInput, desired_ruleset
from enforcer.models import BadPeer, split_peer_port
from enforcer.enforce.firewall import Firewall
from enforcer.enforce.nft import Nft, NftError
from support.harness import sh


@pytest.mark.parametrize("text,expected", [
    ("db", ("db", None)), ("db:5432", ("db", 5432)), ("10.0.0.0/8:53", ("10.0.0.0/8", 53)),
    ("10.1.2.3", ("10.1.2.3", None)), ("fd00::1", ("fd00::1", None)), ("[fd00::1]:80", ("fd00::1", 80)),
    ("[fd00::/64]", ("fd00::/64", None)),
])
def test_peer_and_port_are_split(text, expected):
    assert split_peer_port(text) == expected


@pytest.mark.parametrize("text", ["", "db:0", "db:70000", "[fd00::1]:99999"])
def test_bad_peers_are_refused(text):
    with pytest.raises(BadPeer):
        split_peer_port(text)


ADDRS = {"web": ["172.18.0.2"], "db": ["172.18.0.3", "fd00::3"], "gone": [], "v6": ["fd00::9"]}


def test_desired_elements_are_keyed_by_the_blocked_address_and_merged():
    blocks = [
        BlockInput(1, "web", "db", "container", 0, "any"),
        BlockInput(2, "web", "10.0.0.0/8", "network", 0, "any"),
        BlockInput(3, "web", "10.1.0.0/16", "network", 0, "any"),  # inside block 2: merged away
        BlockInput(4, "web", "10.2.0.5/32", "network", 443, "tcp"),
        BlockInput(5, "web", "10.2.0.4/32", "network", 443, "tcp"),  # adjacent: one /31
        BlockInput(6, "gone", "db", "container", 0, "any"),  # not running: nothing
        BlockInput(7, "v6", "db", "container", 53, "any"),  # both protos, v6 only
    ]
    sets, views = desired_ruleset(blocks, lambda n: ADDRS.get(n, []), protect=["172.18.0.2"],
                                  threats=[ipaddress.ip_network("192.0.2.0/25"), ipaddress.ip_network("192.0.2.128/25")])
    assert sets["blk4"] == {("172.18.0.2", "10.0.0.0/8")}
    assert sets["blkx4"] == {("172.18.0.2", "172.18.0.3/32")}  # one address: the hash set
    assert sets["blkp4"] == {("172.18.0.2", "10.2.0.4/31", 6, 443)}
    assert sets["blkpx6"] == {("fd00::9", "fd00::3/128", 6, 53), ("fd00::9", "fd00::3/128", 17, 53)}
    assert sets["protect4"] == {("172.18.0.2",)} and sets["threat4"] == {("192.0.2.0/24",)}
    assert views[1].active and not views[6].active and views[6].own == []
    assert views[3].active  # merged into block 2's element, still in force


def test_elements_survive_json_and_back():
    samples = {
        "blk4": ("172.18.0.2", "10.0.0.0/8"), "blk6": ("fd00::2", "fd00::/64"),
        "blkp4": ("172.18.0.2", "10.0.0.5/32", 17, 53), "threat4": ("192.0.2.0/24",), "threat6": ("2001:db8::1/128",),
        "protect4": ("172.18.0.2",), "blkx4": ("172.18.0.2", "172.18.0.3/32"),
        "blkpx6": ("fd00::2", "fd00::3/128", 6, 443),
    }
    for name, element in samples.items():
        assert R.parse_element(name, R.element_json(name, element)) == element


def test_diff_deletes_before_it_adds():
    old = {**R.empty_ruleset(), "blk4": frozenset({("1.1.1.1", "10.1.0.0/16")})}
    new = {**R.empty_ruleset(), "blk4": frozenset({("1.1.1.1", "10.0.0.0/8")})}
    cmds = R.diff_commands("t", R.diff(old, new))
    assert [next(iter(c)) for c in cmds] == ["delete", "delete", "add", "add"]  # inet and bridge each


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
