"""Matching: what the detector asks for every event, against compiled feed indexes.
Also the never-cut-your-own-traffic rule and the export for enforcement."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

from enforcer.feeds.index import build_index
from enforcer.feeds.matcher import Matcher
from enforcer.feeds.parsers import parse
from enforcer.feeds.ranges import ProtectedRanges

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
PROTECTED = ProtectedRanges.build()


def matcher_of(*feeds: tuple[str, str, str], local: bool = False, protected: ProtectedRanges = PROTECTED) -> Matcher:
    m = Matcher()
    indexes = {}
    for name, fmt, fixture in feeds:
        body = (FIXTURES / fixture).read_bytes() if fixture.endswith((".txt", ".json", ".csv", ".netset")) \
            else fixture.encode()
        indexes[name] = build_index(name, parse(fmt, body), None if local else protected, f"{name} list")
    m.install(indexes)
    return m


def test_cidr_and_single_address_hits_carry_feed_indicator_type_and_matched_value():
    m = matcher_of(("firehol", "ip-list", "firehol_level1.netset"))
    hit = m.match_ip("1.10.20.30")
    assert hit is not None
    assert (hit.feed, hit.indicator, hit.type, hit.matched) == ("firehol", "1.10.16.0/20", "cidr", "1.10.20.30")
    assert hit.description == "firehol list"
    single = m.match_ip("23.94.74.110")
    assert single and (single.indicator, single.type) == ("23.94.74.110", "ip")
    assert m.match_ip("23.94.74.111") is None
    assert m.match_ip("1.10.32.0") is None and m.match_ip("1.10.15.255") is None  # just outside /20


def test_private_loopback_cgnat_link_local_and_reserved_are_dropped_unless_local():
    m = matcher_of(("firehol", "ip-list", "firehol_level1.netset"))
    for own in ("10.1.2.3", "172.17.0.2", "192.168.1.1", "127.0.0.1", "100.64.0.1", "169.254.169.254",
                "224.0.0.251", "0.0.0.0"):
        assert m.match_ip(own) is None, own
    assert m.indexes[0].dropped == 8
    local = matcher_of(("lab", "ip-list", "local_lab.txt"), local=True)
    assert local.match_ip("10.66.3.4").indicator == "10.66.0.0/16"
    assert local.match_ip("172.30.66.10").type == "ip"
    assert local.match_ip("fd00:66::1").indicator == "fd00:66::/64"
    not_local = matcher_of(("lab", "ip-list", "local_lab.txt"))
    assert not_local.match_ip("10.66.3.4") is None and not_local.indexes[0].dropped == 4


def test_host_docker_networks_are_protected_too():
    extra = ProtectedRanges.build(["8.8.8.0/24"])  # as if this host's Docker pool were public space
    m = matcher_of(("x", "ip-list", "8.8.8.8\n8.8.4.4\n"), protected=extra)
    assert m.match_ip("8.8.8.8") is None and m.match_ip("8.8.4.4") is not None


def test_a_big_block_that_covers_private_space_is_dropped_but_what_it_holds_is_kept():
    m = matcher_of(("x", "ip-list", "0.0.0.0/0\n5.5.5.0/24\n"))
    assert m.match_ip("5.5.5.5").indicator == "5.5.5.0/24"
    assert m.match_ip("6.6.6.6") is None
    assert m.indexes[0].dropped == 1


def test_nested_cidrs_and_duplicates_answer_with_the_enclosing_block():
    m = matcher_of(("x", "ip-list", "5.0.0.0/8\n5.5.5.0/24\n5.5.5.5\n5.5.5.5\n6.0.0.1\n"))
    assert m.match_ip("5.5.5.5").indicator == "5.0.0.0/8"
    assert m.match_ip("6.0.0.1").type == "ip"
    assert len(m.indexes[0].v4) == 2


def test_ipv6_and_mapped_ipv4_and_zone_ids():
    m = matcher_of(("drop6", "ip-list", "spamhaus_drop_v6.json"), ("feodo", "ip-list", "feodo_ipblocklist.txt"))
    assert m.match_ip("2a06:e480:1::5").indicator == "2a06:e480::/29"
    assert m.match_ip("::ffff:162.243.103.246").feed == "feodo"
    assert m.match_ip("fe80::1%eth0") is None
    for junk in ("", "not an ip", "1.2.3", "::g", None):
        assert m.match_ip(junk) is None  # type: ignore[arg-type]


def test_a_listed_url_makes_its_address_and_host_match_as_url():
    m = matcher_of(("urlhaus", "csv", "urlhaus_csv_online.csv"))
    hit = m.match_ip("45.95.169.115")
    assert hit and hit.type == "url" and hit.indicator == "http://45.95.169.115/bins/sora.x86"
    by_name = m.match_domain("kit-update.example-bad.ru")
    assert by_name and by_name.type == "url" and by_name.indicator.endswith("/kit.tar.gz")
    # A URL lists one host, not its whole domain: shared hosting must not trip.
    assert m.match_domain("other.example-bad.ru") is None and m.match_domain("example-bad.ru") is None


def test_a_listed_domain_matches_itself_and_its_subdomains_only():
    m = matcher_of(("d", "domain-list", "domains.txt"))
    assert m.match_domain("evil.example-bad.ru").indicator == "evil.example-bad.ru"
    hit = m.match_domain("a.b.Evil.Example-Bad.RU.")
    assert hit and (hit.indicator, hit.type, hit.matched) == ("evil.example-bad.ru", "domain", "a.b.evil.example-bad.ru")
    assert m.match_domain("x.wild.badcdn.io").indicator == "wild.badcdn.io"
    assert m.match_domain("notevil.example-bad.ru") is None
    assert m.match_domain("example-bad.ru") is None
    assert m.match_domain("ru") is None and m.match_domain("") is None


def test_hashes_by_length_any_case():
    m = matcher_of(("mb256", "sha256-list", "malwarebazaar_sha256.txt"), ("mb5", "md5-list", "malwarebazaar_md5.txt"),
                   ("mb1", "sha1-list", "malwarebazaar_sha1.txt"))
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    sha = hashlib.sha256(eicar).hexdigest()
    hit = m.match_hash(sha.upper())
    assert hit and (hit.feed, hit.type, hit.indicator, hit.matched) == ("mb256", "sha256", sha, sha)
    assert m.match_hash(hashlib.md5(eicar).hexdigest()).type == "md5"
    assert m.match_hash(hashlib.sha1(eicar).hexdigest()).type == "sha1"
    assert m.match_hash(hashlib.sha256(b"clean").hexdigest()) is None
    assert m.match_hash("zz" * 32) is None and m.match_hash("abc") is None and m.match_hash("") is None


def test_digest_set_with_equal_prefixes_confirms_the_whole_digest():
    a = "00" * 8 + "11" * 24
    b = "00" * 8 + "22" * 24
    m = matcher_of(("h", "sha256-list", f"{a}\n{b}\n"))
    assert m.match_hash(a) and m.match_hash(b)
    assert m.match_hash("00" * 8 + "33" * 24) is None


def test_install_swaps_the_whole_set_and_counts_generations():
    m = matcher_of(("a", "ip-list", "5.5.5.5\n"))
    before = m.generation
    m.install({"b": build_index("b", parse("ip-list", b"6.6.6.6\n"), PROTECTED)})
    assert m.generation == before + 1
    assert m.match_ip("5.5.5.5") is None and m.match_ip("6.6.6.6").feed == "b"
    m.install({})
    assert m.match_ip("6.6.6.6") is None and m.match_domain("x.y") is None and m.match_hash("00" * 32) is None


def test_ip_export_for_enforcement_is_disjoint_across_feeds_and_excludes_dropped_space():
    m = matcher_of(("drop", "ip-list", "spamhaus_drop.txt"), ("fh", "ip-list", "firehol_level1.netset"),
                   ("drop6", "ip-list", "spamhaus_drop_v6.json"), ("inner", "ip-list", "1.10.17.0/24\n7.7.7.7\n"))
    nets = m.ip_networks()
    assert ipaddress.ip_network("1.10.16.0/20") in nets
    assert ipaddress.ip_network("1.10.17.0/24") not in nets  # inside the /20 listed by two other feeds
    assert ipaddress.ip_network("7.7.7.7/32") in nets and ipaddress.ip_network("2a06:e480::/29") in nets
    assert not any(n.overlaps(ipaddress.ip_network("10.0.0.0/8")) for n in nets if n.version == 4)
    assert all(not a.overlaps(b) for a, b in zip(nets, nets[1:]) if a.version == b.version)
    ranges = m.ip_ranges()
    assert len(ranges) == len(nets)
    assert (4, int(ipaddress.ip_address("7.7.7.7")), int(ipaddress.ip_address("7.7.7.7")), 32) in ranges
    assert [r[:2] for r in ranges] == sorted(r[:2] for r in ranges)
