"""The pin folder's bookkeeping (sensors/pins.py) on a plain folder: which maps folder and
generations a restart sees, what retiring and uninstalling remove, and where an instance
pins (config). The kernel side (real bpffs, links that outlive the process) is
tests/integration/test_protect_persistence.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from console.commands.inventory import _pins_line
from enforcer.config import ConfigError, Settings
from enforcer.sensors.pins import PinDir


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def test_an_instance_pins_under_its_table_name_unless_told_otherwise():
    assert Settings(nft_table="sttest_1_a").pin_root() == "/sys/fs/bpf/stockade/sttest_1_a"
    assert Settings(bpf_pin_dir="/sys/fs/bpf/other").pin_root() == "/sys/fs/bpf/other"
    assert Settings(bpf_pin_dir="off").pin_root() == ""


def test_a_folder_outside_bpffs_is_refused_with_the_reason(tmp_path):
    why = PinDir(str(tmp_path / "x")).usable()
    assert why and ("bpffs" in why or "not under" in why)


def test_a_restart_adopts_the_newest_maps_and_sees_the_old_generation(tmp_path):
    root = tmp_path / "inst"
    for name in ("watched", "exec_allow"):
        _touch(root / "maps-100" / name)
    _touch(root / "maps-2000" / "watched")  # a later layout: the one in use
    _touch(root / "links" / "1000-42" / "tracepoint__sched__sched_process_exec")
    pins = PinDir(str(root))
    pins.prepare()
    assert pins.maps_dir == str(root / "maps-2000")
    assert pins.adopted["maps"] == ["watched"] and pins.adopted["maps_dir"] == str(root / "maps-2000")
    assert [(g["generation"], g["programs"], g["pid"]) for g in pins.adopted["links"]] == [("1000-42", 1, 42)]


def test_retiring_keeps_only_this_generation_and_its_maps_then_uninstall_removes_all(tmp_path):
    root = tmp_path / "inst"
    _touch(root / "maps-100" / "watched")
    _touch(root / "links" / "1000-42" / "a")
    pins = PinDir(str(root))
    pins.prepare()
    pins.fresh_maps()  # another layout
    _touch(Path(pins.maps_dir) / "watched")
    new = Path(pins.links_dir) / "2000-43"
    _touch(new / "a")
    pins.generation = "2000-43"
    assert pins.retire_others() == ["1000-42"]
    assert sorted(os.listdir(root)) == ["links", os.path.basename(pins.maps_dir)]
    assert os.listdir(root / "links") == ["2000-43"]
    removed = pins.remove()
    assert len(removed) == 2 and not root.exists()


def test_status_line_says_what_is_pinned_or_why_not():
    now = time.time()
    line = _pins_line({"enabled": True, "dir": "/sys/fs/bpf/stockade/s", "maps": ["watched", "exec_allow"],
                       "maps_since": now - 7200, "links": [{"programs": 39, "since": now - 60, "pid": 9}],
                       "adopted": {"links": [{"pid": 8}]}})
    assert "2 maps" in line and "39 programs" in line and "adopted from pid 8" in line
    assert "kill-on-exec ends" in _pins_line({"enabled": False, "reason": "bpffs is not mounted"})


def test_a_table_name_that_is_not_a_plain_name_is_refused(monkeypatch, tmp_path):
    # The name is also the pin folder's: "" would make the folder /sys/fs/bpf/stockade/ itself,
    # whose uninstall would unpin every instance.
    monkeypatch.setenv("STOCKADE_CONFIG", str(tmp_path / "none.toml"))
    for bad in ("", "../x", "a/b", "1abc", "a b", "x" * 65):
        monkeypatch.setenv("STOCKADE_NFT_TABLE", bad)
        with pytest.raises(ConfigError, match="nft_table"):
            Settings.load(config_file=None)
    monkeypatch.setenv("STOCKADE_NFT_TABLE", "sttest_1796455503_b4317c")
    assert Settings.load().pin_root() == "/sys/fs/bpf/stockade/sttest_1796455503_b4317c"
