"""The demo's story told through the real console, in tmux, as a person would drive it:
keys sent with `tmux send-keys`, the screen read with `tmux capture-pane`.

    python demo/walkthrough.py [--screenshots DIR]

against the demo that runs (`make demo`; it reads $STOCKADE_DEMO_STATE/demo.env). Each step
waits for what a person would wait for on the screen, and with --screenshots saves the
screen as SVG and PNG (the README's walkthrough pictures). tests/e2e/test_demo_console.py runs
the same story on a private copy of the demo and checks every step.

The steps: the containers learning; the apps and their allowed connections; the attack
(demo/attack.py) and its alerts, with a threat alert's detail; the weak app switched to
protect with the `m` key; the attack again (tools killed, connection blocked); the container
frozen with `f`; its forensics bundle written with `x`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
sys.path.insert(0, str(DEMO))

from attack import Demo, DemoError  # noqa: E402


# Text that only the view of each number key shows (column headings, the alert filters line).
VIEW_MARKERS = {"1": "CONNECTS TO", "2": "PROFILE", "3": "filters: t kind"}


class WalkthroughError(Exception):
    """A step did not show what it should; the message says what and shows the screen."""


class TmuxConsole:
    """`stockade` running in a detached tmux session of a fixed size."""

    def __init__(self, socket_path: str, width: int = 170, height: int = 46) -> None:
        self.session = "stockade-walk-" + uuid.uuid4().hex[:8]
        self.socket_path = socket_path
        self.width, self.height = width, height

    def start(self) -> "TmuxConsole":
        if not shutil.which("tmux"):
            raise WalkthroughError("tmux is not installed (make setup installs it)")
        exe = REPO / ".venv" / "bin" / "stockade"
        # TERM and size fixed, so the screen (and a screenshot) is the same on every machine.
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(self.width), "-y", str(self.height),
                        "-e", "TERM=xterm-256color", "-e", "COLORTERM=",
                        # The window takes its size just after the session starts: a console
                        # that started first could miss that resize and stay 80 x 24.
                        f"sleep 0.5; exec {shlex.quote(str(exe))} --socket {shlex.quote(self.socket_path)}"], check=True)
        subprocess.run(["tmux", "set-option", "-t", self.session, "remain-on-exit", "on"], check=False)
        return self

    def stop(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)

    def keys(self, *keys: str, pause: float = 0.35) -> None:
        """Press keys one at a time, as a person does (tmux key names: Enter, Escape, Down...)."""
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.session, key], check=True)
            time.sleep(pause)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, "-l", text], check=True)
        time.sleep(0.4)

    def screen(self, ansi: bool = False) -> str:
        args = ["tmux", "capture-pane", "-p", "-t", self.session] + (["-e"] if ansi else [])
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    def wait_for(self, *texts: str, timeout: float = 20.0, absent: bool = False) -> str:
        """Wait until every text is on the screen (or, with absent, none is); returns the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            present = [t in screen for t in texts]
            if (not absent and all(present)) or (absent and not any(present)):
                return screen
            time.sleep(0.25)
        missing = [t for t in texts if (t in screen) == absent]
        raise WalkthroughError(f"{'still' if absent else 'never'} on the screen after {timeout:g} s: "
                               f"{missing}\n---- screen ----\n{screen}")

    def save(self, out: Path, name: str, title: str) -> Path:
        """The screen as SVG and PNG, colours included (rich renders tmux's ANSI output)."""
        from rich.console import Console
        from rich.text import Text

        console = Console(record=True, width=self.width, force_terminal=True, color_system="256", file=open(os.devnull, "w"))
        for line in self.screen(ansi=True).rstrip("\n").split("\n"):
            console.print(Text.from_ansi(line, no_wrap=True, end=""), overflow="crop", no_wrap=True)
        out.mkdir(parents=True, exist_ok=True)
        svg = out / f"{name}.svg"
        console.save_svg(str(svg), title=title)
        text = svg.read_text().replace("Fira Code", "DejaVu Sans Mono")
        svg.write_text(text)
        try:
            import cairosvg  # type: ignore[import-untyped]

            cairosvg.svg2png(bytestring=text.encode(), write_to=str(svg.with_suffix(".png")))
        except ImportError:
            pass
        return svg


@dataclass
class Story:
    demo: Demo
    console: TmuxConsole
    shots: Path | None = None
    say: Callable[[str], None] = print
    screens: dict[str, str] = field(default_factory=dict)  # step -> the screen it ended on
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> attack.py's report
    saved: list[Path] = field(default_factory=list)

    def shot(self, name: str, title: str) -> None:
        self.screens[name] = self.console.screen()
        if self.shots is not None:
            self.saved.append(self.console.save(self.shots, name, title))

    def attack(self, label: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, str(DEMO / "attack.py"), "--json", "--no-wait",
                               "--state", self.demo["STATE"]], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise WalkthroughError(f"the attack failed: {proc.stderr.strip()}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        self.attacks[label] = report
        return report

    def view(self, key: str) -> None:
        """Switch view with its number key, and wait until the screen shows that view."""
        marker = VIEW_MARKERS[key]
        for _ in range(3):
            self.console.keys(key)
            try:
                self.console.wait_for(marker, timeout=5)
                return
            except WalkthroughError:
                continue  # a key lost while the console was busy: press it again, as a person would
        self.console.wait_for(marker, timeout=1)

    def filter_view(self, view_key: str, text: str) -> None:
        """Switch to a view and show only the rows that contain text (/ filters, Esc clears).
        Done when the view tabs show the filter ("/text (N of M)")."""
        c = self.console
        self.view(view_key)
        for _ in range(3):
            if re.search(r" /.* \(\d+ of \d+\)", c.screen().split("\n")[1]):
                c.keys("Escape")  # clears the view's old filter (Esc with no filter goes back a view)
            c.keys("/", pause=0.8)  # the filter line opens, holding the table's current filter
            c.keys("End", "C-u")  # which a retry must not append to
            c.type(text)
            c.keys("Enter")
            try:
                c.wait_for(f"/{text} (", timeout=5)
                return
            except WalkthroughError:
                self.view(view_key)  # a key lost while the console was busy: start over
        c.wait_for(f"/{text} (", timeout=1)

    def filter_containers(self, text: str) -> None:
        self.filter_view("2", text)

    # -- the steps ------------------------------------------------------------------------------
    def run(self) -> "Story":
        c, demo = self.console, self.demo
        pinger_ctr = f"{demo.app('pinger')}_app_1"
        pinger = demo.app("pinger")
        c.wait_for("connected", timeout=30)

        self.say("1. the demo's containers, learning their profiles")
        # The demo's containers only (tests and other apps may run on this host too).
        self.filter_containers(demo["PREFIX"] or "stockade-demo")
        c.wait_for(pinger_ctr, f"{demo.app('blog')}_db_1")
        self.shot("demo-1-containers", "make demo: the apps under watch, learning")

        self.say("2. the apps, with the connections their compose files allow")
        self.filter_view("1", demo.app("blog"))
        c.wait_for("→ db:3306", "Allowed connections")
        self.shot("demo-2-apps", "Apps: the blog's topology from its compose file")

        self.say("3. waiting for the profiles to finish learning")
        self.wait_learned()
        self.say("4. the attack (make attack), seen in the alerts view")
        self.attack("alert")
        # The weak app's incidents, and the blog's about it ("... from pinger/app").
        self.filter_view("3", pinger)
        c.wait_for("unexpected process /usr/bin/wget", "peer address", "written file",
                   "unexpected inbound tcp/3306 from", "dangerous syscall unshare", timeout=30)
        self.shot("demo-3-alerts", "make attack: every step is an alert")
        self.filter_view("3", "demo-bad-ips")
        c.wait_for("feed: demo-bad-ips", timeout=10)
        self.shot("demo-4-threat", "A threat-feed hit: the kit's address is on the demo feed")

        self.say("5. the weak app switched to protect with the m key")
        self.filter_containers(pinger_ctr)
        c.wait_for(pinger_ctr)
        c.keys("m")
        c.wait_for("Change mode: of what?")
        c.keys("Enter")  # the whole app
        c.wait_for(f"Change mode of {pinger}", "now: alert")
        c.keys("Down", "Enter")  # alert -> protect
        c.wait_for("Set protect")
        self.shot("demo-5-protect", "m: switch the weak app to protect (the dialog says exactly what happens)")
        c.keys("Right", "Enter")
        c.wait_for(f"app {pinger} is now in protect mode")

        self.say("6. the attack again: the tools are killed, the connection is blocked")
        self.attack("protect")
        self.filter_view("3", pinger)
        c.wait_for("killed", "blocked", timeout=30)
        self.shot("demo-6-stopped", "make attack in protect mode: killed before they ran, and blocked")

        self.say("7. the container frozen with the f key")
        self.filter_containers(pinger_ctr)
        c.keys("f")
        c.wait_for("Freeze container")
        c.keys("Right", "Enter")
        c.wait_for(f"{pinger_ctr}: FROZEN", "FROZEN", timeout=15)
        self.shot("demo-7-frozen", "f: the weak app's container frozen for analysis")

        self.say("8. its forensics bundle written with the x key")
        c.keys("x")
        c.wait_for("Forensics bundle", "Write bundle")
        c.keys("Right", "Enter")
        c.wait_for("bundle written", timeout=120)
        self.shot("demo-8-forensics", "x: the forensics bundle written")
        return self

    def wait_learned(self, timeout: float = 900) -> None:
        from attack import demo_containers

        deadline = time.monotonic() + timeout
        while any(ctr.get("profile_state") == "learning" for ctr in demo_containers(self.demo)):
            if time.monotonic() > deadline:
                raise WalkthroughError("the profiles are still learning")
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--screenshots", help="save each step's screen as SVG and PNG into this folder")
    p.add_argument("--state", help="the demo's state folder (default $STOCKADE_DEMO_STATE or /var/lib/stockade/demo)")
    args = p.parse_args(argv)
    try:
        demo = Demo.load(args.state)
    except DemoError as e:
        print(f"walkthrough: {e}", file=sys.stderr)
        return 1
    console = TmuxConsole(demo.socket).start()
    try:
        story = Story(demo, console, Path(args.screenshots) if args.screenshots else None).run()
    except WalkthroughError as e:
        print(f"walkthrough: {e}", file=sys.stderr)
        return 1
    finally:
        console.stop()
    for path in story.saved:
        print(f"walkthrough: saved {path} (+ .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
