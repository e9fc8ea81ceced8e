"""Each feed format against real-shaped fixture files: what is loaded, and the bad lines
counted and skipped (never fatal)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from enforcer.feeds.parsers import FeedFormatError, check_columns, parse
from enforcer.feeds.parsers.common import ParseResult, normalise_domain

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def load(fmt: str, fixture: str, columns: dict | None = None) -> ParseResult:
    return parse(fmt, (FIXTURES / fixture).read_bytes(), columns)


def v4(result: ParseResult) -> set[str]:
    out = set()
    for key in result.v4:
        start, plen = key >> 8, key & 0xFF
        text = ".".join(str((start >> s) & 0xFF) for s in (24, 16, 8, 0))
        out.add(text if plen == 32 else f"{text}/{plen}")
    return out


# -- ip-list ----------------------------------------------------------------------------
def test_firehol_level1_loads_cidrs_and_single_addresses_and_counts_bad_lines():
    r = load("ip-list", "firehol_level1.netset")
    assert r.rejected == 3 and r.samples == ["999.10.10.10", "45.95.169.0/33", "not-an-address"]
    got = v4(r)
    assert {"1.10.16.0/20", "23.94.74.110", "10.0.0.0/8", "224.0.0.0/3"} <= got
    assert len(r.v4) == 21 and r.lines == 24  # the 26 comment lines are not entries


def test_spamhaus_drop_text_with_inline_sbl_comments():
    r = load("ip-list", "spamhaus_drop.txt")
    assert len(r.v4) == 10 and r.rejected == 1
    assert "1.10.16.0/20" in v4(r) and "5.134.128.0/19" in v4(r)
    assert r.samples == ["1.2.3.0/24/8 ; SBL000001"]


def test_spamhaus_drop_json_lines_skip_metadata_and_count_broken_records():
    r = load("ip-list", "spamhaus_drop_v4.json")
    assert len(r.v4) == 10
    assert r.rejected == 2  # a cidr that is not one, a line that is not JSON
    assert r.lines == 12  # the metadata trailer is not an entry
    r6 = load("ip-list", "spamhaus_drop_v6.json")
    assert len(r6.v6) == 3 and r6.rejected == 1


def test_feodo_and_et_lists():
    feodo = load("ip-list", "feodo_ipblocklist.txt")
    assert {"162.243.103.246", "103.109.247.10", "192.168.1.50"} <= v4(feodo)
    assert feodo.rejected == 1 and feodo.samples == ["162.243.103"]
    et = load("ip-list", "et_compromised_ips.txt")
    assert len(et.v4) == 9 and et.rejected == 2


def test_ip_list_masks_host_bits_reads_ranges_and_v6_and_mapped_addresses():
    body = b"1.2.3.4/24\n5.6.7.8-5.6.7.11\n2001:db8::1\n::ffff:9.9.9.9\n0.0.0.0-255.255.255.255\n"
    r = parse("ip-list", body)
    assert v4(r) == {"1.2.3.0/24", "5.6.7.8/30", "9.9.9.9", "0.0.0.0/0"}
    assert len(r.v6) == 1 and r.rejected == 0


def test_ip_list_of_pure_garbage_is_all_rejected_not_an_exception():
    r = parse("ip-list", b"\x00\xff<html>\n<body>Login</body>\n" + bytes(range(256)))
    assert r.accepted == 0 and r.rejected >= 2


# -- domain-list ------------------------------------------------------------------------
def test_domain_list_plain_hosts_file_wildcards_and_idn_case():
    r = load("domain-list", "domains.txt")
    assert r.domains == {"c2-panel.badhost.top", "evil.example-bad.ru", "phish.login-update.xyz",
                         "tracker.badads.net", "wild.badcdn.io", "xn--80ak6aa92e.com"}
    assert r.rejected == 4 and r.samples == ["com", "not a domain", "bad_label-.net", "256.1.1.1"]


@pytest.mark.parametrize("text,expected", [
    ("Evil.Example.", "evil.example"), ("*.cdn.example", "cdn.example"), ("com", None),
    ("a..b", None), ("-x.example", None), ("1.2.3.4", None), ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
    ("a" * 64 + ".example", None),
])
def test_normalise_domain(text, expected):
    assert normalise_domain(text) == expected


# -- hash lists -------------------------------------------------------------------------
def test_malwarebazaar_sha256_md5_sha1_lists_insist_on_their_length():
    sha256 = load("sha256-list", "malwarebazaar_sha256.txt")
    assert len(sha256.hashes["sha256"]) == 7 and sha256.rejected == 3
    assert hashlib.sha256(EICAR).digest() in sha256.hashes["sha256"]
    md5 = load("md5-list", "malwarebazaar_md5.txt")
    assert len(md5.hashes["md5"]) == 5 and md5.rejected == 2
    assert hashlib.md5(EICAR).digest() in md5.hashes["md5"]
    sha1 = load("sha1-list", "malwarebazaar_sha1.txt")
    assert len(sha1.hashes["sha1"]) == 4 and sha1.rejected == 1
    assert not sha1.hashes["sha256"] and not sha1.hashes["md5"]


def test_hash_list_accepts_sha256sum_output_and_upper_case():
    digest = hashlib.sha256(b"x").hexdigest()
    r = parse("sha256-list", f"{digest.upper()}  /tmp/x\n".encode())
    assert r.hashes["sha256"] == [bytes.fromhex(digest)] and r.rejected == 0


# -- csv --------------------------------------------------------------------------------
def test_urlhaus_csv_by_its_commented_header_hosts_and_addresses_of_urls():
    r = load("csv", "urlhaus_csv_online.csv", {"url": "url"})
    assert r.rejected == 2  # a javascript: URL and a short row
    assert r.url_hosts == {"kit-update.example-bad.ru": "https://kit-update.example-bad.ru/payload/kit.tar.gz"}
    assert {"123.5.180.2", "45.95.169.115"} <= v4(r)
    assert (4, int.from_bytes(bytes([45, 95, 169, 115]), "big")) in r.ip_urls
    assert len(r.v6) == 1
    assert load("csv", "urlhaus_csv_online.csv").url_hosts == r.url_hosts  # header names it: no mapping needed


def test_threatfox_csv_mixed_types_by_type_column():
    r = load("csv", "threatfox_recent.csv", {"indicator": "ioc_value", "type": "ioc_type"})
    assert "91.92.240.92" in v4(r) and "194.26.192.64" in v4(r)
    assert r.domains == {"c2-panel.badhost.top"}
    assert len(r.hashes["sha256"]) == 1 and len(r.hashes["md5"]) == 1
    assert len(r.v6) == 1  # [v6]:port
    assert r.rejected == 2  # sha3_384 (unsupported) and an address that is not one
    assert r.lines == 8  # the trailing "# Number of entries" comment is not a row
    auto = load("csv", "threatfox_recent.csv")
    assert auto.domains == r.domains and auto.rejected == r.rejected


def test_malwarebazaar_csv_all_three_hash_columns():
    r = load("csv", "malwarebazaar_recent.csv")
    assert len(r.hashes["sha256"]) == 3 and len(r.hashes["md5"]) == 3 and len(r.hashes["sha1"]) == 2
    assert r.rejected == 1


def test_csv_by_index_without_header_and_with_another_delimiter():
    body = b"1.2.3.4;evil.example;x\nnot-ip;evil2.example;y\n"
    r = parse("csv", body, {"ip": 0, "domain": 1, "delimiter": ";"})
    assert v4(r) == {"1.2.3.4"} and r.domains == {"evil.example"} and r.rejected == 1


def test_csv_without_header_or_mapping_is_a_format_error():
    with pytest.raises(FeedFormatError, match="column mapping"):
        parse("csv", b"1,2,3\n4,5,6\n")
    with pytest.raises(FeedFormatError, match="not in the header"):
        load("csv", "urlhaus_csv_online.csv", {"url": "link"})


@pytest.mark.parametrize("columns,problem", [
    ({"url": "url"}, ""), ({"indicator": "ioc_value"}, "both"), ({"bogus": 1}, "unknown"),
    ({"ip": -1}, "index"), ({"delimiter": ";;"}, "one character"), ([], "mapping"),
])
def test_column_mapping_checks(columns, problem):
    assert (problem in check_columns(columns)) if problem else check_columns(columns) == ""


# -- stix -------------------------------------------------------------------------------
def test_stix_bundle_loads_supported_patterns_only():
    r = load("stix", "stix_bundle.json")
    assert "185.220.101.4" in v4(r) and "91.240.118.0/24" in v4(r)
    assert len(r.v6) == 1
    assert r.domains == {"update.stix-bad.net"}
    assert r.url_hosts == {"files.stix-bad.org": "http://files.stix-bad.org/kit.sh"}
    assert bytes.fromhex(hashlib.sha256(b"stix-kit").hexdigest()) in r.hashes["sha256"]
    assert len(r.hashes["sha256"]) == 2 and len(r.hashes["md5"]) == 1 and len(r.hashes["sha1"]) == 1
    # AND with a port, a snort rule, an impossible address, process:name -> bad;
    # the revoked and the expired ones are skipped, not bad.
    assert r.rejected == 4
    assert "185.220.101.5" not in v4(r) and "185.220.101.7" not in v4(r) and "185.220.101.8" not in v4(r)


def test_stix_that_is_not_a_bundle_is_a_format_error():
    with pytest.raises(FeedFormatError, match="not JSON"):
        parse("stix", b"<html>")
    with pytest.raises(FeedFormatError, match="bundle"):
        parse("stix", json.dumps({"type": "report"}).encode())


def test_unknown_format_is_a_format_error():
    with pytest.raises(FeedFormatError, match="unknown feed format"):
        parse("yara", b"")


def test_lines_split_a_slice_at_a_time_are_the_same_lines():
    from enforcer.feeds.parsers.common import iter_lines
    body = b"a\nbb\r\nccc\n\nd\re\nlast-without-newline"
    for chunk in (1, 2, 3, 7, 1 << 18):
        assert list(iter_lines(body, chunk)) == body.decode().splitlines(), chunk
