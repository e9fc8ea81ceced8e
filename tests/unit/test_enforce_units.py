"""The pure parts of enforcement: peer parsing, the desired set elements (merged, never
overlapping), the JSON a set element becomes and is read back from, diffs. The firewall
against the real kernel is in tests/integration/test_enforce_firewall.py."""

from __future__ import annotations

import ipaddress

import pytest

from enforcer.enforce import ruleset as R
from enforcer.enforce.blocks import BlockInput, desired_ruleset
from enforcer.models import BadPeer, split_peer_port


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
