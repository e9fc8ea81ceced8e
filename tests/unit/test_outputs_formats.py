"""The output encoders against one fixed incident: json (as `stockade alerts --json`), Falco's
JSON alert, an OCSF Detection Finding; the syslog line; URL and header checks."""

from __future__ import annotations

import json
import re

import pytest

from enforcer import __version__
from enforcer.outputs import formats, targets

ALERT = {
    "id": 42, "time": "2026-11-28T21:05:58.123Z", "host": "node-1", "app": "blog", "service": "wordpress",
    "container": "blog_wordpress_1", "container_id": "4e9c" + "0" * 60, "image": "local/wordpress:6.4",
    "kind": "process", "severity": "high", "summary": "unexpected process /usr/bin/wget",
    "detail": {"path": "/usr/bin/wget", "sha256": "ab" * 32, "pid": 4411, "ppid": 4402, "uid": 33,
               "argv": ["wget", "http://example.test/x"]},
    "action": "alerted", "count": 1, "first_seen": "2026-11-28T21:05:58.123Z",
    "last_seen": "2026-11-28T21:05:58.123Z", "subject": "/usr/bin/wget", "rule": "profile",
    "would": "killed", "tags": ["T1105"],
}


def test_json_is_the_incident_unchanged():
    assert formats.encode("json", ALERT) == ALERT
    assert formats.encode("json", ALERT) is not ALERT


def test_falco_alert():
    f = formats.encode("falco", ALERT)
    assert set(f) == {"uuid", "output", "priority", "rule", "time", "output_fields", "source", "tags", "hostname"}
    assert f["priority"] == "Error" and f["source"] == "stockade" and f["hostname"] == "node-1"
    assert f["time"] == "2026-11-28T21:05:58.123000000Z"
    assert f["rule"] == "stockade: process profile"
    assert f["tags"] == ["stockade", "process", "T1105"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", f["uuid"])
    assert f["output"].startswith("21:05:58.123000000: Error unexpected process /usr/bin/wget (container=blog_wordpress_1")
    o = f["output_fields"]
    assert o["container.id"] == "4e9c00000000" and o["container.name"] == "blog_wordpress_1"
    assert o["container.image.repository"] == "local/wordpress" and o["container.image.tag"] == "6.4"
    assert o["proc.name"] == "wget" and o["proc.exepath"] == "/usr/bin/wget"
    assert o["proc.cmdline"] == "wget http://example.test/x" and o["proc.pid"] == 4411 and o["proc.ppid"] == 4402
    assert o["user.uid"] == 33 and o["stockade.alert_id"] == 42 and o["stockade.would"] == "killed"
    # Severities map to Falco's priority names; the uuid names (host, id, count): a repeat
    # of one publication is recognisable, a grown count is a new event.
    assert [formats.encode("falco", {**ALERT, "severity": s})["priority"]
            for s in ("low", "medium", "high", "critical")] == ["Notice", "Warning", "Error", "Critical"]
    assert formats.encode("falco", ALERT)["uuid"] == f["uuid"]
    assert formats.encode("falco", {**ALERT, "count": 2})["uuid"] != f["uuid"]
    json.dumps(f)


def test_falco_network_fields():
    net = {**ALERT, "kind": "network", "detail": {"direction": "out", "proto": "tcp", "local_ip": "10.0.0.2",
                                                  "local_port": 40000, "remote_ip": "10.0.0.9", "remote_port": 4444,
                                                  "pid": 7, "comm": "nc"}}
    o = formats.encode("falco", net)["output_fields"]
    assert o["fd.rip"] == "10.0.0.9" and o["fd.rport"] == 4444 and o["evt.type"] == "connect"
    assert o["proc.name"] == "nc" and o["fd.name"] == "10.0.0.2:40000->10.0.0.9:4444"


def test_ocsf_detection_finding():
    o = formats.encode("ocsf", ALERT)
    assert (o["class_uid"], o["category_uid"], o["activity_id"], o["type_uid"]) == (2004, 2, 1, 200401)
    assert (o["severity_id"], o["severity"]) == (4, "High")
    assert o["time"] == 1795899958123
    assert o["finding_info"]["uid"] == "node-1/42"
    assert o["finding_info"]["attacks"] == [{"technique": {"uid": "T1105"}}]
    assert o["finding_info"]["title"] == "unexpected process /usr/bin/wget"
    assert "blog_wordpress_1" in o["finding_info"]["desc"]
    assert o["finding_info"]["first_seen_time"] == o["finding_info"]["last_seen_time"] == 1795899958123
    assert o["metadata"]["product"] == {"name": "Stockade", "vendor_name": "Stockade", "version": __version__}
    assert o["metadata"]["version"] == "1.1.0"
    assert o["resources"][0]["uid"] == ALERT["container_id"] and o["resources"][0]["name"] == "blog_wordpress_1"
    ev = o["evidences"][0]
    assert ev["container"]["name"] == "blog_wordpress_1" and ev["process"]["pid"] == 4411
    assert ev["process"]["file"]["hashes"][0]["value"] == "ab" * 32
    grown = formats.encode("ocsf", {**ALERT, "count": 5, "severity": "critical"})
    assert (grown["activity_id"], grown["type_uid"], grown["severity_id"], grown["count"]) == (2, 200402, 5, 5)
    json.dumps(o)


def test_syslog_rfc5424_line():
    t = targets.parse("syslog://127.0.0.1:5514")
    line = t.syslog_message(formats.encode("json", ALERT), ALERT).decode()
    m = re.fullmatch(r"<(\d+)>1 (\S+) node-1 stockade \d+ alert (\[stockade@32473 [^\]]*\]) (\{.*\})", line)
    assert m, line
    assert int(m.group(1)) == 16 * 8 + 3  # local0, err
    assert 'id="42"' in m.group(3) and 'severity="high"' in m.group(3)
    assert json.loads(m.group(4)) == ALERT
    assert targets.parse("syslog+tcp://127.0.0.1:1?facility=auth").facility == 4


@pytest.mark.parametrize("url, headers, message", [
    ("ftp://x/y", None, "unknown scheme"),
    ("http://", None, "needs a host"),
    ("http://127.0.0.1:99999/", None, "bad port"),
    ("syslog://127.0.0.1", None, "want syslog://host:port"),
    ("syslog://127.0.0.1:514?facility=nope", None, "facility"),
    ("file://relative/path", None, "file:///absolute/path"),
    ("file:///tmp/x.jsonl", {"A": "b"}, "http(s) outputs only"),
    ("http://127.0.0.1/", {"Bad Name": "v"}, "bad header"),
    ("http://127.0.0.1/", {"X-A": "v\r\nInjected: 1"}, "bad header"),
    ("not a url", None, "without spaces"),
])
def test_bad_urls_are_one_line_errors(url, headers, message):
    with pytest.raises(ValueError) as e:
        targets.parse(url, headers)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("url, deadline, message", [
    ("http://127.0.0.1/", 0, "deadline must be a number of seconds from 1 to 600"),
    ("http://127.0.0.1/", 601, "from 1 to 600"),
    ("http://127.0.0.1/", "30", "from 1 to 600"),
    ("http://127.0.0.1/", True, "from 1 to 600"),
    ("http://127.0.0.1/", float("nan"), "from 1 to 600"),
    ("file:///tmp/x.jsonl", 30, "--deadline is for http(s) outputs only"),
    ("syslog://127.0.0.1:514", 30, "--deadline is for http(s) outputs only"),
])
def test_bad_deadlines_are_one_line_errors(url, deadline, message):
    with pytest.raises(ValueError) as e:
        targets.parse(url, None, deadline)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_http_output_has_a_deadline_by_default_or_as_given():
    assert targets.parse("http://127.0.0.1/").deadline == targets.HTTP_DEADLINE == 20.0
    assert targets.parse("https://127.0.0.1/", None, 1).deadline == 1.0
    assert targets.parse("http://127.0.0.1/", None, 600).deadline == 600.0


def test_file_rotation(tmp_path):
    t = targets.parse(f"file://{tmp_path}/out/alerts.jsonl?max_bytes=4096&keep=2")
    for _ in range(40):
        t._append_lines([t.prepare("json", ALERT)])
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    for p in (tmp_path / "out").iterdir():
        assert p.stat().st_size <= 4096
        assert all(json.loads(x) == ALERT for x in p.read_text().splitlines())
