"""What enforcement exports from learned profiles: a container's seccomp profile and an
app's hardening override. Reads the profile book and writes the seccomp files the
override names (setting `seccomp_dir`)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import yaml

from ..inventory import Inventory
from ..models import Container, iso_time
from ..ports import DockerCalls
from ..profiles.book import ProfileBook
from ..profiles.model import Profile
from ..server import OpError
from .harden import ServiceFacts, render_override
from .seccomp import build_seccomp

log = logging.getLogger(__name__)


def _syscall_name(nr: int) -> str:
    from ..profiles.book import syscall_name

    return syscall_name(nr)


def profile_syscalls(profile: Profile) -> set[str]:
    names: set[str] = set()
    for e in profile.entries.get("syscall", {}).values():
        name = e.data.get("name") or (_syscall_name(int(e.data["nr"])) if e.data.get("nr", -1) >= 0 else "")
        if name:
            names.add(name.split(":", 1)[0])  # "clone:newuser" is the syscall clone to seccomp
    return names


def used_syscalls(book: ProfileBook, c: Container) -> set[str]:
    """What the kernel saw this container use (covers events lost before they were learned)."""
    if not c.cgroup_id:
        return set()
    try:
        numbers = book.hooks.used_syscalls(c.cgroup_id)
    except Exception:  # noqa: BLE001 - no sensors: the profile alone
        return set()
    return {n.split(":", 1)[0] for n in (_syscall_name(nr) for nr in numbers) if n}


def container_profile(book: ProfileBook, c: Container) -> Profile:
    att = book.for_container(c.id)
    if att is None:
        raise OpError(f"container {c.name} has no profile ({c.state})", "conflict")
    return att.profile


def seccomp_for_container(book: ProfileBook, c: Container) -> dict[str, Any]:
    profile = container_profile(book, c)
    names = profile_syscalls(profile) | used_syscalls(book, c)
    if not names:
        raise OpError(f"no syscalls learned for {c.name} yet (are the sensors loaded? see stockade status)",
                      "unavailable")
    return build_seccomp(names, source=f"profile {profile.id} of {c.app}/{c.service} ({profile.state})")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "_"


def write_seccomp_file(directory: str, app: str, service: str, profile: dict[str, Any]) -> str:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, f"{_safe(app)}.{_safe(service)}.json")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".seccomp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def compose_version(files: list[str]) -> str | None:
    """The `version` of the app's compose file: an override must carry the same one."""
    for path in files:
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("version") is not None:
            return str(data["version"])
    return None


def rootfs_writes(diff: list[dict[str, Any]]) -> list[str]:
    """Paths `docker diff` reports, without the directories listed only because something
    inside them changed: what the container wrote to its root file system since it started
    (including the first milliseconds, which the sensors never see)."""
    paths = sorted({str(d.get("Path", "")) for d in diff if str(d.get("Path", "")).startswith("/")})
    return [p for i, p in enumerate(paths)
            if not (i + 1 < len(paths) and paths[i + 1].startswith(p.rstrip("/") + "/"))]


async def _diffs(docker: DockerCalls, containers: list[Container]) -> list[str]:
    out: list[str] = []
    for c in containers:
        if c.state not in ("running", "paused"):
            continue
        try:
            diff = await docker.call(lambda api, cid=c.id: api.diff(cid)) or []
        except Exception as e:  # noqa: BLE001 - the learned writes still count
            log.warning("harden: docker diff of %s failed: %s", c.name, e)
            continue
        out += rootfs_writes(diff)
    return out


async def harden_app(book: ProfileBook, inv: Inventory, docker: DockerCalls, seccomp_dir: str,
                     app_name: str) -> dict[str, Any]:
    apps = inv.apps()
    app = apps.get(app_name)
    if app is None:
        raise OpError(f"no app {app_name[:128]!r} on this host", "not_found")
    topo = inv.topologies.get(app_name)
    facts: list[ServiceFacts] = []
    files: dict[str, str] = {}
    for service, ids in sorted(app.services.items()):
        containers = [inv.containers[i] for i in ids if i in inv.containers]
        profile = None
        names: set[str] = set()
        for c in containers:
            att = book.for_container(c.id)
            if att is not None:
                profile = att.profile
                names |= used_syscalls(book, c)
        if profile is None:
            candidates = [p for p in book.profiles.values() if p.app == app_name and p.service == service]
            profile = max(candidates, key=lambda p: p.created, default=None)
        decl = topo.services.get(service) if topo else None
        seccomp = build_seccomp(names | (profile_syscalls(profile) if profile else set()),
                                source=f"{app_name}/{service}" + (f" profile {profile.id}" if profile else ""))
        try:
            path = write_seccomp_file(seccomp_dir, app_name, service, seccomp)
        except OSError as e:
            raise OpError(f"cannot write the seccomp profile in {seccomp_dir}: {e.strerror}",
                          "failed") from None
        files[service] = path
        image_user = ""
        if containers:
            image_user = str(inv.image_config(containers[0].image_id).get("User") or "")
        facts.append(ServiceFacts(
            name=service, seccomp_path=path,
            syscalls=names | (profile_syscalls(profile) if profile else set()),
            written=sorted(set(profile.entries["file"] if profile else []) | set(await _diffs(docker, containers))),
            listeners=sorted(profile.listeners) if profile else [],
            volumes=list(decl.volumes) if decl else [], tmpfs=list(decl.tmpfs) if decl else [],
            user=image_user, profile_id=profile.id if profile else 0,
            profile_state=profile.state if profile else "",
        ))
    version = compose_version(topo.files) if topo else None
    text = render_override(app_name, facts, version, iso_time())
    return {"yaml": text, "seccomp_files": files, "compose_files": list(topo.files) if topo else []}
