"""Read an app's declared topology from its compose file(s).

docker-compose labels each container with the files it came from
(`com.docker.compose.project.config_files`); we parse them for links, depends_on,
networks, published ports and expose, which seed the profiles. A file that is missing or
does not parse gives a topology with `error` set (one line) and no services: the app is
still watched, it just starts learning without a seed.

The paths come from labels, chosen by whoever started the container, and the folder they
name is often mounted into the container, which can then put anything there. So a file is
read only if it is a regular file (a FIFO, /dev/zero or a socket is refused without being
opened: opening some devices acts), not a symbolic link (it could point the root enforcer
at any file of the host), at most MAX_COMPOSE_BYTES, within READ_DEADLINE. The caller
runs all this off the event loop under a deadline of its own (a FUSE read can block).
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import stat
import time
from pathlib import Path
from typing import Any

import yaml

from ..models import ComposeTopology, PortBinding, ServiceDecl

MAX_COMPOSE_BYTES = 4 * 1024 * 1024
MAX_DOTENV_BYTES = 256 * 1024
READ_DEADLINE = 2.0  # seconds for all of a project's files

_VAR = re.compile(r"\$(?:\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class ComposeError(ValueError):
    """The compose file cannot be used; the message is one line."""


def load_topology(project: str, files: list[str], working_dir: str = "") -> ComposeTopology:
    """Parse and merge the compose files of a project (later files override earlier ones)."""
    topo = ComposeTopology(project=project, files=list(files))
    if not files:
        return topo
    merged: dict[str, Any] = {"services": {}, "networks": {}}
    deadline = time.monotonic() + READ_DEADLINE
    try:
        env = _dotenv(Path(working_dir or os.path.dirname(files[0])) / ".env", deadline)
        for name in files:
            doc = _read_yaml(name, env, deadline)
            for key in ("services", "networks"):
                section = doc.get(key) or {}
                if not isinstance(section, dict):
                    raise ComposeError(f"{name}: '{key}' must be a mapping")
                for k, v in section.items():
                    if key == "services" and isinstance(v, dict) and isinstance(merged[key].get(k), dict):
                        merged[key][k] = {**merged[key][k], **v}
                    else:
                        merged[key][str(k)] = v
        topo.networks = sorted(merged["networks"])
        for svc_name, svc in merged["services"].items():
            topo.services[str(svc_name)] = parse_service(str(svc_name), svc)
    except ComposeError as e:
        return ComposeTopology(project=project, files=list(files), error=str(e))
    return topo


def read_regular(path: str, limit: int, deadline: float, what: str = "compose file") -> str:
    """The text of a regular file of at most `limit` bytes, or a one-line ComposeError."""
    try:
        # O_PATH opens nothing: no device is touched and no FIFO waits for a writer.
        pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ComposeError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(pfd)
        if stat.S_ISLNK(st.st_mode):
            raise ComposeError(f"{what} {path} is a symbolic link; name the file it points to")
        if not stat.S_ISREG(st.st_mode):
            raise ComposeError(f"{what} {path} is not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise ComposeError(f"{what} {path}: {st.st_size} bytes is more than {limit}")
        # Reopened through the O_PATH descriptor: the very inode checked above, not the path.
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise ComposeError(f"cannot read {what} {path}: {e.strerror or e}") from None
    finally:
        os.close(pfd)
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise ComposeError(f"reading {what} {path} took longer than {READ_DEADLINE:g}s")
            try:
                chunk = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    raise ComposeError(f"{what} {path} would block") from None
                raise ComposeError(f"cannot read {what} {path}: {e.strerror or e}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # it grew while we read
                raise ComposeError(f"{what} {path} is more than {limit} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a file"


def _read_yaml(path: str, env: dict[str, str], deadline: float) -> dict[str, Any]:
    text = read_regular(path, MAX_COMPOSE_BYTES, deadline)
    try:
        doc = yaml.safe_load(_interpolate(text, env))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ComposeError(f"compose file {path}{where} does not parse: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ComposeError(f"compose file {path} is not a mapping at the top level")
    if "services" not in doc and "version" not in doc:
        # compose v1 format: services at the top level
        return {"services": doc}
    return doc


def parse_service(name: str, svc: Any) -> ServiceDecl:
    if svc is None:
        svc = {}
    if not isinstance(svc, dict):
        raise ComposeError(f"service {name!r} must be a mapping")
    decl = ServiceDecl(name=name, image=str(svc.get("image") or ""))
    for link in _as_list(svc.get("links"), "links", name):
        decl.links.append(str(link).split(":", 1)[0])
    deps = svc.get("depends_on") or []
    if isinstance(deps, dict):
        decl.depends_on = [str(d) for d in deps]
    else:
        decl.depends_on = [str(d) for d in _as_list(deps, "depends_on", name)]
    nets = svc.get("networks") or []
    decl.networks = [str(n) for n in (nets if isinstance(nets, (dict, list)) else [nets])]
    for p in _as_list(svc.get("ports"), "ports", name):
        decl.ports.extend(parse_port(p, name))
    for p in _as_list(svc.get("expose"), "expose", name):
        decl.expose.extend(parse_port(str(p), name, expose=True))
    decl.command = _as_argv(svc.get("command"))
    decl.entrypoint = _as_argv(svc.get("entrypoint"))
    decl.read_only = bool(svc.get("read_only", False))
    tmpfs = svc.get("tmpfs") or []
    decl.tmpfs = [str(t).split(":", 1)[0] for t in (tmpfs if isinstance(tmpfs, list) else [tmpfs])]
    for v in _as_list(svc.get("volumes"), "volumes", name):
        if isinstance(v, dict):
            target = v.get("target")
        else:
            parts = str(v).split(":")
            target = parts[1] if len(parts) >= 2 else parts[0]
        if target:
            decl.volumes.append(str(target))
    return decl


def parse_port(spec: Any, service: str, expose: bool = False) -> list[PortBinding]:
    """Compose short ("8080:80", "127.0.0.1:8080:80/udp", "3000-3002") or long syntax."""
    if isinstance(spec, dict):
        try:
            target = int(spec["target"])
        except (KeyError, TypeError, ValueError):
            raise ComposeError(f"service {service!r}: port {spec!r} has no valid target") from None
        published = spec.get("published")
        return [PortBinding(port=target, proto=str(spec.get("protocol", "tcp")),
                            host_ip=str(spec.get("host_ip", "")),
                            host_port=int(published) if published not in (None, "") else None)]
    text = str(spec).strip()
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
    parts = text.rsplit(":", 2) if text.count(":") <= 2 else [text]
    container_part = parts[-1]
    host_part = parts[-2] if len(parts) >= 2 else ""
    host_ip = parts[0] if len(parts) == 3 else ""
    try:
        lo, hi = _port_range(container_part)
        host_lo: int | None = None
        if host_part and not expose:
            host_lo = _port_range(host_part)[0]
    except ValueError:
        raise ComposeError(f"service {service!r}: port {spec!r} is not a valid port") from None
    out = []
    for i, port in enumerate(range(lo, hi + 1)):
        out.append(PortBinding(port=port, proto=proto, host_ip=host_ip,
                               host_port=None if host_lo is None else host_lo + i))
    return out


def _port_range(text: str) -> tuple[int, int]:
    lo_s, _, hi_s = text.partition("-")
    lo, hi = int(lo_s), int(hi_s or lo_s)
    if not (0 < lo <= hi <= 65535) or hi - lo > 1024:
        raise ValueError(text)
    return lo, hi


def _as_list(value: Any, what: str, service: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, (str, int)):
        return [value]
    raise ComposeError(f"service {service!r}: '{what}' must be a list")


def _as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError:
        return str(value).split()


def _dotenv(path: Path, deadline: float) -> dict[str, str]:
    env: dict[str, str] = {}
    if not os.path.lexists(path):
        return env  # no .env: the usual case
    for line in read_regular(str(path), MAX_DOTENV_BYTES, deadline, what="compose .env file").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip().strip("'\"")
    return env


def _interpolate(text: str, dotenv: dict[str, str]) -> str:
    """Compose variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, $$."""

    def value(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group(1) if m.group(1) is not None else m.group(2)
        for sep in (":-", "-", ":?", "?"):
            if sep in expr:
                name, _, default = expr.partition(sep)
                found = os.environ.get(name, dotenv.get(name))
                if sep.startswith(":") and not found:
                    return default if "-" in sep else ""
                return found if found is not None else (default if "-" in sep else "")
        return os.environ.get(expr, dotenv.get(expr, ""))

    return _VAR.sub(value, text)
