"""What the console may import: of the enforcer, only the wire protocol and the data model.

The console and the CLI run on machines (and in users' shells) where the enforcer's heavy
dependencies need not be installed, and `stockade status` must start fast; so importing
any console module must load neither bcc, httpx, aiosqlite nor the Docker SDK, nor any
enforcer module beyond `enforcer.protocol` and `enforcer.models`. Checked in a fresh
interpreter, since this test process has imported half the project already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONSOLE = REPO / "console"

HEAVY = ("bcc", "httpx", "aiosqlite", "docker")
ENFORCER_ALLOWED = {"enforcer", "enforcer.protocol", "enforcer.models"}

# Imports the app, the CLI and then every module of the package, and reports what got loaded.
PROBE = """
import importlib, json, pkgutil, sys
import console, console.app, console.cli
names = sorted(m.name for m in pkgutil.walk_packages(console.__path__, "console."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"console": names, "loaded": sorted(sys.modules), "file": console.__file__}))
"""


def test_console_imports_only_the_protocol_and_the_data_model_of_the_enforcer() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # This checkout's console, and all of it (a walk that found nothing would prove nothing).
    assert Path(report["file"]).resolve().parent == CONSOLE
    assert {"console.app", "console.cli", "console.session", "console.screens.main"} <= set(report["console"])
    loaded = report["loaded"]
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    assert not heavy, f"importing the console loads {', '.join(heavy)}"
    enforcer = sorted(m for m in loaded if m.split(".")[0] == "enforcer" and m not in ENFORCER_ALLOWED)
    assert not enforcer, (f"the console imports {', '.join(enforcer)}; it may import only "
                          f"{', '.join(sorted(ENFORCER_ALLOWED))} (move what it needs there)")
