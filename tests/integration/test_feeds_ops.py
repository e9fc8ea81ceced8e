"""The feed ops and `stockade feeds` through a real enforcer process (no sensors), with
feeds served from 127.0.0.1. Nothing here reaches outside this machine: catalogue feeds
stay disabled, and the one a test enables points at the local server."""

from __future__ import annotations

import json

import pytest

from support.harness import EnforcerProcess, wait_for

pytestmark = pytest.mark.nftables  # every test starts a real enforcer: its own nftables table


def feeds_by_name(enforcer: EnforcerProcess) -> dict[str, dict]:
    return {f["name"]: f for f in enforcer.call("feeds")}


def test_add_sync_list_check_and_remove_through_the_cli(make_enforcer, feed_server):
    enforcer = make_enforcer("--no-sensors")
    url = feed_server.serve("/feodo.txt", fixture="feodo_ipblocklist.txt", etag='"v1"')
    added = enforcer.cli("feeds", "add", "feodo", url, "--format", "ip-list", "--interval", "600")
    assert "added feed feodo" in added.stdout and "updated" in added.stdout

    feed = feeds_by_name(enforcer)["feodo"]
    assert (feed["enabled"], feed["local"], feed["format"], feed["interval"]) == (True, False, "ip-list", 600)
    assert (feed["status"], feed["entries"], feed["rejected"], feed["dropped"]) == ("ok", 5, 1, 1)
    assert feed["loaded"] and feed["last_sync"] and feed["error"] == ""
    assert set(feed) >= {"name", "url", "format", "enabled", "local", "interval", "last_sync", "status",
                         "entries", "rejected", "dropped", "error", "hits"}

    listing = enforcer.cli("feeds", "list").stdout
    assert listing.splitlines()[0].split()[:3] == ["NAME", "ON", "FORMAT"]
    assert any(line.startswith("feodo ") and " ok " in line for line in listing.splitlines())

    check = enforcer.cli_json("feeds", "check", "162.243.103.246")
    assert check["hit"] == {"feed": "feodo", "indicator": "162.243.103.246", "type": "ip",
                            "matched": "162.243.103.246", "description": ""}
    assert enforcer.cli_json("feeds", "check", "192.168.1.50")["hit"] is None  # dropped: private
    assert "not on any loaded feed" in enforcer.cli("feeds", "check", "8.8.8.8").stdout

    synced = enforcer.cli_json("feeds", "sync")
    assert [(r["name"], r["status"]) for r in synced] == [("feodo", "not_modified")]
    assert feed_server.hits("/feodo.txt")[-1]["if-none-match"] == '"v1"'

    assert enforcer.cli_json("feeds", "remove", "feodo") == {"removed": "feodo"}
    assert enforcer.cli_json("feeds", "check", "162.243.103.246")["hit"] is None
    again = enforcer.cli("feeds", "remove", "feodo", check=False)
    assert again.returncode == 1 and again.stderr.strip() == "stockade: no feed named 'feodo'"

    audit = enforcer.call("audit", limit=20)
    assert {("feeds.add", "feodo"), ("feeds.remove", "feodo")} <= {(a["action"], a["target"]) for a in audit}
    status = enforcer.call("status")
    assert status["feeds"]["loaded"] == 0 and status["feeds"]["enabled"] == 0


def test_private_addresses_need_local_and_the_dropped_count_is_shown(make_enforcer, feed_server):
    enforcer = make_enforcer("--no-sensors")
    url = feed_server.serve("/lab.txt", fixture="local_lab.txt")
    refused = enforcer.cli("feeds", "add", "lab", url, "--format", "ip-list", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "stockade: feed lab: its first sync failed: no usable entries: all 4 are private or reserved ranges "
        "(mark the feed local if it lists your own network)"]
    assert feeds_by_name(enforcer)["lab"]["status"] == "failed"
    enforcer.cli("feeds", "remove", "lab")

    enforcer.cli("feeds", "add", "lab", url, "--format", "ip-list", "--local")
    feed = feeds_by_name(enforcer)["lab"]
    assert feed["local"] and feed["entries"] == 4 and feed["dropped"] == 0
    assert enforcer.cli_json("feeds", "check", "10.66.7.7")["hit"]["indicator"] == "10.66.0.0/16"

    url = feed_server.serve("/firehol.netset", fixture="firehol_level1.netset")
    enforcer.cli("feeds", "add", "firehol", url, "--format", "ip-list")
    firehol = feeds_by_name(enforcer)["firehol"]
    assert (firehol["entries"], firehol["dropped"], firehol["rejected"]) == (13, 8, 3)
    line = next(row for row in enforcer.cli("feeds", "list").stdout.splitlines() if row.startswith("firehol"))
    assert line.split()[5:9] == ["ok", "13", "3", "8"]  # STATUS ENTRIES BAD DROPPED (LOCAL is blank)


def test_csv_and_stix_and_hash_feeds_through_the_cli(make_enforcer, feed_server):
    enforcer = make_enforcer("--no-sensors")
    tf = feed_server.serve("/tf.csv", fixture="threatfox_recent.csv", content_type="text/csv")
    enforcer.cli("feeds", "add", "tf-local", tf, "--format", "csv", "--column", "indicator=ioc_value",
                 "--column", "type=ioc_type")
    assert feeds_by_name(enforcer)["tf-local"]["columns"] == {"indicator": "ioc_value", "type": "ioc_type"}
    assert enforcer.cli_json("feeds", "check", "x.c2-panel.badhost.top")["hit"]["indicator"] == "c2-panel.badhost.top"
    stix = feed_server.serve("/b.json", fixture="stix_bundle.json", content_type="application/stix+json")
    enforcer.cli("feeds", "add", "cert", stix, "--format", "stix")
    assert enforcer.cli_json("feeds", "check", "91.240.118.77")["hit"]["type"] == "cidr"
    mb = feed_server.serve("/md5.txt", fixture="malwarebazaar_md5.txt")
    enforcer.cli("feeds", "add", "mb-md5", mb, "--format", "md5-list")
    hit = enforcer.cli_json("feeds", "check", "44D88612FEA8A8F36DE82E1278ABB02F")["hit"]  # EICAR's MD5
    assert hit["feed"] == "mb-md5" and hit["type"] == "md5"


def test_catalogue_ships_disabled_with_polite_intervals_and_is_never_fetched(make_enforcer):
    enforcer = make_enforcer("--no-sensors")
    feeds = feeds_by_name(enforcer)
    assert {"feodotracker", "urlhaus", "threatfox", "malwarebazaar", "spamhaus-drop", "et-compromised",
            "firehol-level1"} <= set(feeds)
    assert not any(f["enabled"] for f in feeds.values())
    assert all(f["status"] == "never" and f["last_attempt"] is None for f in feeds.values())
    assert feeds["spamhaus-drop"]["interval"] >= 3600 and feeds["spamhaus-drop-v6"]["interval"] >= 3600
    assert feeds["urlhaus"]["columns"] == {"url": "url"} and feeds["urlhaus"]["source"] == "catalogue"
    assert enforcer.cli_json("feeds", "sync") == []
    refused = enforcer.cli("feeds", "sync", "spamhaus-drop", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "stockade: feed spamhaus-drop is disabled; enable it first"
    # Spamhaus asks for no more than one download an hour, whoever sets the interval.
    with pytest.raises(RuntimeError, match="interval must be"):
        enforcer.call("feeds.set", name="spamhaus-drop", interval=5)
    assert enforcer.call("feeds.set", name="spamhaus-drop", interval=60)["interval"] == 3600
    with pytest.raises(RuntimeError, match="threatfox is a catalogue feed: turn it on with `stockade feeds enable"):
        enforcer.call("feeds.add", name="threatfox", url="http://127.0.0.1:9/x", format="csv")


def test_config_enables_a_catalogue_feed_and_adds_its_own(make_enforcer, feed_server, tmp_path):
    drop = feed_server.serve("/drop_v4.json", fixture="spamhaus_drop_v4.json", content_type="application/json")
    names = feed_server.serve("/names.txt", fixture="domains.txt")
    config = tmp_path / "stockade.toml"
    config.write_text(
        f'abusech_auth_key = "k-123"\n\n'
        f'[feeds.spamhaus-drop]\nenabled = true\nurl = "{drop}"\ninterval = 60\n\n'
        f'[feeds.mynames]\nurl = "{names}"\nformat = "domain-list"\ninterval = 30\n')
    enforcer = make_enforcer("--no-sensors", "--config", str(config))
    wait_for(lambda: all(feeds_by_name(enforcer)[n]["loaded"] for n in ("spamhaus-drop", "mynames")),
             timeout=20, what="the configured feeds to sync on schedule")
    feeds = feeds_by_name(enforcer)
    assert feeds["spamhaus-drop"]["interval"] == 3600 and feeds["spamhaus-drop"]["entries"] == 10
    assert feeds["mynames"]["source"] == "config" and feeds["mynames"]["interval"] == 30
    assert feeds["urlhaus"]["auth_key"] is True and not feeds["urlhaus"]["enabled"]
    assert "k-123" not in json.dumps(feeds)
    assert enforcer.cli_json("feeds", "check", "1.10.17.1")["hit"]["feed"] == "spamhaus-drop"
    assert "k-123" not in enforcer.log()
    # Nothing but the two local feeds was asked for.
    assert {p for p, _ in feed_server.requests} == {"/drop_v4.json", "/names.txt"}


def test_bad_config_table_is_one_line_at_start(make_enforcer, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[feeds.mine]\nurl = "ftp://x/y"\nformat = "ip-list"\n')
    enforcer = make_enforcer("--no-sensors", "--config", str(config), start=False)
    with pytest.raises(RuntimeError) as failed:
        enforcer.start(timeout=30)
    last = enforcer.log().strip().splitlines()[-1]
    assert "exited 1" in str(failed.value)
    assert last == "stockade-enforcer: [feeds.mine]: the URL must be http:// or https:// with a host"


def test_a_restart_keeps_the_last_good_set_after_a_failed_sync(make_enforcer, feed_server):
    enforcer = make_enforcer("--no-sensors")
    url = feed_server.serve("/mb.txt", fixture="malwarebazaar_sha256.txt")
    enforcer.cli("feeds", "add", "mb", url, "--format", "sha256-list")
    feed_server.serve("/mb.txt", b"<html>sorry</html>", content_type="text/html")
    failed = enforcer.cli("feeds", "sync", "mb", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == "stockade: feed mb: sync failed: unexpected content type text/html (not feed text)"
    eicar = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
    assert enforcer.cli_json("feeds", "check", eicar)["hit"]["feed"] == "mb"
    enforcer.restart()
    wait_for(lambda: feeds_by_name(enforcer)["mb"]["loaded"], timeout=20, what="the stored feed to load")
    assert enforcer.cli_json("feeds", "check", eicar)["hit"]["feed"] == "mb"
    feed = feeds_by_name(enforcer)["mb"]
    assert feed["status"] == "failed" and "text/html" in feed["error"] and feed["entries"] == 7


def test_bad_requests_are_one_line_errors(make_enforcer, feed_server):
    enforcer = make_enforcer("--no-sensors")
    url = feed_server.serve("/f.txt", "5.5.5.5\n")
    cases = [
        ({"name": "Bad Name", "url": url, "format": "ip-list"}, "a feed name is"),
        ({"name": "f", "url": "file:///etc/passwd", "format": "ip-list"}, "http:// or https://"),
        ({"name": "f", "url": url, "format": "yara"}, "unknown format"),
        ({"name": "f", "url": url, "format": "ip-list", "columns": {"ip": 0}}, "only for csv"),
        ({"name": "f", "url": url, "format": "csv", "columns": {"nope": 0}}, "unknown column mapping key"),
        ({"name": "f", "url": url, "format": "ip-list", "interval": 1}, "interval must be"),
        ({"name": "f", "url": url, "format": "ip-list", "local": "yes"}, "local must be true or false"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            enforcer.call("feeds.add", **args)
    enforcer.call("feeds.add", name="f", url=url, format="ip-list")
    with pytest.raises(RuntimeError, match=r"exists; remove it first \(conflict\)"):
        enforcer.call("feeds.add", name="f", url=url, format="ip-list")
    with pytest.raises(RuntimeError, match=r"\(not_found\)"):
        enforcer.call("feeds.sync", name="nope")
    with pytest.raises(RuntimeError, match="limit must be"):
        enforcer.call("feeds.hits", limit=0)
    assert enforcer.call("feeds.hits") == []
    bad = enforcer.cli("feeds", "add", "g", url, "--format", "csv", "--column", "oops", check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == "stockade: --column wants TYPE=COLUMN, not 'oops'"
