#!/usr/bin/env python3
"""Real screenshots of the console, SVG and PNG, into screenshots/ (`make screenshots`).

Deploys a small compose app of its own (internal network, labelled stockade.screenshots:
not stockade.test, whose clean-up at every test session start would remove it midway), starts
a real enforcer on a temporary socket, lets the profiles learn for a few seconds, makes
the app misbehave (a new program, a read of /etc/shadow, an unlinked connection), then
drives the console headless (Textual's run_test) through every view and saves each one.
With `--socket PATH` it photographs an enforcer that is already running instead (the demo).
With `--fleet` it starts two enforcers (no sensors) and photographs the fleet console on
both (fleet.svg), then with the second one stopped (fleet-lost.svg).

PNG: the SVG is rendered with cairosvg (PyPI, offline) using DejaVu Sans Mono, because
the Fira Code font that Textual's SVG names is not installed here.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from console.app import StockadeApp  # noqa: E402
from support.harness import (DockerResources, EnforcerProcess, container_info, docker, ensure_busybox_image,  # noqa: E402
                     exec_in, unique)

SIZE = (160, 45)
COMPOSE = """\
version: "2.4"
services:
  web:
    image: {image}
    command: ["httpd", "-f", "-p", "80", "-h", "/bin"]
    labels: {{stockade.screenshots: "1"}}
    networks: [net]
  api:
    image: {image}
    command: ["sh", "-c", "while true; do wget -q -O /dev/null http://web/ 2>/dev/null; sleep 1; done"]
    links: [web]
    depends_on: [web, db]
    labels: {{stockade.screenshots: "1"}}
    networks: [net]
  db:
    image: {image}
    command: ["sh", "-c", "while true; do nc -l -p 5432 -e cat; done"]
    labels: {{stockade.screenshots: "1"}}
    networks: [net]
networks:
  net:
    internal: true
    labels: {{stockade.screenshots: "1"}}
"""


def svg_to_png(svg: Path, png: Path) -> None:
    import cairosvg  # type: ignore[import-untyped]

    text = svg.read_text().replace("Fira Code", "DejaVu Sans Mono")
    cairosvg.svg2png(bytestring=text.encode(), write_to=str(png))


async def wait(predicate: Any, pilot: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.2)


class Shots:
    """save(name): the console's screen as it is now, into out/<name>.svg; the files in `saved`."""

    def __init__(self, app: StockadeApp, out: Path) -> None:
        self.app, self.out = app, out
        self.saved: list[Path] = []

    def __call__(self, name: str) -> None:
        self.app.repaint_now()
        path = self.out / f"{name}.svg"
        self.app.save_screenshot(filename=path.name, path=str(self.out))
        self.saved.append(path)


async def shoot(socket_path: str, out: Path, focus_app: str | None) -> list[Path]:
    app = StockadeApp(socket_path)
    save = Shots(app, out)

    async with app.run_test(size=SIZE) as pilot:
        await wait(lambda: app.state.connection.state == "connected" and app.state.containers, pilot, 30,
                   "the console to connect")
        await pilot.pause(2.5)  # one status poll, so the header has rates
        screen: Any = app.screen
        for key, name in [("1", "apps"), ("2", "containers"), ("3", "alerts"), ("4", "feeds"), ("5", "audit")]:
            await pilot.press(key)
            await pilot.pause(0.5)
            if name == "alerts":
                await pilot.press("v")  # severity >= medium: the learned-set syscall noise aside
            if name == "apps" and focus_app:
                table = screen.view.table
                target = next((k for k in table.visible_keys() if k[0] == "svc" and k[1] == focus_app), None)
                if target:
                    table.move_cursor_to(target)
            await pilot.pause(0.3)
            save(f"{name}")
            if name == "alerts":  # the same incidents folded into stories (g)
                await pilot.press("g")
                await pilot.pause(0.5)
                save("alerts-stories")
                await pilot.press("g")
        await pilot.press("2")
        if focus_app:
            await pilot.press("slash", *f"{focus_app}_api", "enter")
        await pilot.press("home", "enter")
        await pilot.pause(1.5)
        save("container-detail")
        await pilot.press("right", "right", "right", "right", "right")
        await pilot.pause(0.5)
        save("container-incidents")
        await pilot.press("right")
        await pilot.pause(0.5)
        save("container-process-tree")
        await pilot.press("escape", "f")
        await pilot.pause(0.5)
        save("confirm-freeze")
        await pilot.press("escape", "m", "enter", "end", "enter")  # the app, then protect
        await pilot.pause(1.0)
        save("confirm-protect-preview")
        await pilot.press("escape", "escape", "question_mark")
        await pilot.pause(0.5)
        save("help")
        await pilot.press("escape", "colon", "a", "l")
        await pilot.pause(0.5)
        save("command-line")
    return save.saved


async def shoot_fleet(enforcers: list[EnforcerProcess], out: Path, project: str) -> list[Path]:
    """The fleet console on two enforcers: both up, then the second one stopped."""
    app = StockadeApp(targets=[e.socket for e in enforcers], retry_seconds=1.0)
    save = Shots(app, out)

    async with app.run_test(size=SIZE) as pilot:
        await wait(lambda: all(h.up and h.state.containers for h in app.hosts), pilot, 30, "both enforcers")
        await pilot.pause(2.5)  # one status poll each
        await pilot.press("2", "slash", *project, "enter")
        await pilot.pause(0.5)
        save("fleet")
        enforcers[1].stop()
        await wait(lambda: not app.hosts[1].up, pilot, 30, "the second enforcer to be lost")
        await pilot.pause(3.2)
        save("fleet-lost")
    return save.saved


def wait_for_sensors(enforcer: EnforcerProcess, timeout: float = 90.0) -> None:
    """The sensors load in the background (bcc compiles C): deploy once they watch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sensors = enforcer.call("status").get("sensors") or []
        if sensors and all(x.get("loaded") or x.get("error") for x in sensors):
            state = ", ".join(f"{x['name']} {'on' if x.get('loaded') else 'off: ' + str(x.get('error'))[:60]}"
                              for x in sensors)
            print(f"screenshots: sensors {state}")
            return
        if not sensors and time.monotonic() > deadline - timeout + 5:
            print("screenshots: this enforcer reports no sensors (alerts will be few or none)")
            return
        time.sleep(1)
    print("screenshots: sensors still loading; going on")


def wait_for_alerts(enforcer: EnforcerProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(enforcer.call("alerts", limit=50)) >= 5:
                time.sleep(2)
                return
        except RuntimeError:
            return  # no alerts op in this enforcer: the alerts view says so
        time.sleep(1)
    print("screenshots: few alerts arrived; the alerts view will be sparse")


def deploy(resources: DockerResources, workdir: Path) -> str:
    image = ensure_busybox_image()
    project = unique("shot")
    resources.compose_up(project, COMPOSE.format(image=image), workdir / project)
    return project


LABEL = "stockade.screenshots"


def remove_leftovers() -> None:
    """What an interrupted earlier run left behind (only ours: by label)."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)
    nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if nets:
        docker("network", "rm", *nets, check=False)


def misbehave(project: str) -> None:
    """What a compromised container does, so that the alert views have something real to show."""
    web, api = f"{project}_web_1", f"{project}_api_1"
    exec_in(web, "sh", "-c", "cat /etc/shadow > /dev/null")
    exec_in(api, "sh", "-c", "echo x > /etc/owned")
    exec_in(api, "unshare", "-n", "true")
    net = next(iter(container_info(web)["NetworkSettings"]["Networks"]))
    # A container outside the app talking to its database: unlinked traffic.
    docker("run", "-d", "--name", f"{project}-intruder", "--label", f"{LABEL}=1", "--network", net,
           ensure_busybox_image(), "sh", "-c", "while true; do nc -w 1 db 5432 < /dev/null; sleep 2; done")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "screenshots"), help="folder for the SVG and PNG files")
    p.add_argument("--socket", help="photograph this running enforcer instead of starting one")
    p.add_argument("--learn-seconds", type=float, default=15.0)
    p.add_argument("--no-sensors", action="store_true", help="start the enforcer without eBPF sensors")
    p.add_argument("--fleet", action="store_true", help="only the fleet console's shots, on two enforcers")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.fleet:
        remove_leftovers()
        resources = DockerResources()
        workdir = Path(tempfile.mkdtemp(prefix="stockade-shots-"))
        enforcers = [EnforcerProcess(workdir / name, "--no-sensors", "--learn-seconds", str(args.learn_seconds))
                     for name in ("node-a", "node-b")]
        try:
            for e in enforcers:
                e.start()
            project = deploy(resources, workdir)
            time.sleep(5)
            saved = asyncio.run(shoot_fleet(enforcers, out, project))
        finally:
            for e in enforcers:
                e.stop_and_clean()
            resources.cleanup()
            remove_leftovers()
            shutil.rmtree(workdir, ignore_errors=True)
    elif args.socket:
        saved = asyncio.run(shoot(args.socket, out, None))
    else:
        remove_leftovers()
        resources = DockerResources()
        workdir = Path(tempfile.mkdtemp(prefix="stockade-shots-"))
        made: list[EnforcerProcess] = []
        try:
            extra = ["--learn-seconds", str(args.learn_seconds)] + (["--no-sensors"] if args.no_sensors else [])
            enforcer = EnforcerProcess(workdir / "enforcer", *extra)
            made.append(enforcer)
            try:
                enforcer.start()
            except RuntimeError as e:
                if args.no_sensors:
                    raise
                print(f"screenshots: the enforcer did not start with sensors ({str(e).splitlines()[0]}); "
                      "retrying with --no-sensors", file=sys.stderr)
                enforcer = EnforcerProcess(workdir / "enforcer2", *extra, "--no-sensors")
                made.append(enforcer)
                enforcer.start()
            wait_for_sensors(enforcer)
            project = deploy(resources, workdir)
            print(f"screenshots: app {project} deployed; learning for {args.learn_seconds:g} s")
            time.sleep(args.learn_seconds + 3)
            misbehave(project)
            wait_for_alerts(enforcer)
            saved = asyncio.run(shoot(enforcer.socket, out, project))
        finally:
            for e in made:  # stopped, and its nftables table (and pins) removed
                e.stop_and_clean()
            resources.cleanup()
            remove_leftovers()
            shutil.rmtree(workdir, ignore_errors=True)
    for svg in saved:
        svg_to_png(svg, svg.with_suffix(".png"))
        print(f"screenshots: {svg.relative_to(REPO) if svg.is_relative_to(REPO) else svg} (+ .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
