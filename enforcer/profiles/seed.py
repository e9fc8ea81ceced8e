"""The first version of a profile, before any event: from the image and the compose file.

- image config: Entrypoint/Cmd -> the processes that should run (a `sh -c` script is read
  for the programs it calls), ExposedPorts -> listeners, Volumes and WorkingDir -> written
  prefixes (User is shown with the profile, it is not an entry).
- compose: ports/expose -> listeners; links, depends_on and shared networks -> peers in
  both directions, with the ports the target declares (expose, ports, its image's
  ExposedPorts). A link or depends_on to a service that declares no port allows any port;
  merely sharing a network allows only declared ports. Published ports accept any peer.

Seeded processes are not pinned to a hash: the first exec the detector sees pins it. A
program whose binary is multi-call by content (busybox, toybox) is seeded as
"PATH:APPLET" when the command as written (what runc passes as argv[0]) names another
applet than the path's own name, and marked multi-call so that the kernel keys it by applet.
Bare program names are resolved through the image's PATH inside the running container
(`/proc/<pid>/root`, never following a link out of it); a container that is not running
yet gets its processes seeded when it starts.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..models import ComposeTopology, Container, ServiceDecl
from ..sensors.multicall import MultiCallScan
from ..sensors.paths import open_in_root
from .model import ANY, Entry, exec_identity, file_entry, listener_entry, peer_entry, process_entry
from .paths import seed_prefix

# The seeds whose use is watched while a profile learns (and that `profile prune` may remove).
USE_TRACKED = frozenset({"listener", "peer", "file"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Words of a shell script that are not programs.
_SHELL_WORDS = frozenset({
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "in", "function", "time", "!", "{", "}", "(", ")", "[[", "]]",
    "true", "false", ":", "echo", "printf", "read", "cd", "export", "set", "unset", "exit",
    "return", "shift", "trap", "wait", "eval", ".", "source", "local", "test", "[", "ulimit",
    "umask", "break", "continue", "let", "type", "command", "alias",
})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "do", "then", "else", "elif", "{", "(", "!",
                         "while", "until", "if"})
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})


@dataclass(slots=True)
class SeedInput:
    container: Container
    image_config: dict[str, Any]
    topology: ComposeTopology | None
    # service name -> image config of a running container of that service (for its ports)
    service_image_config: Callable[[str], dict[str, Any]]
    root: str = ""  # the container's root directory; default /proc/<pid>/root


def seed_entries(s: SeedInput) -> list[Entry]:
    out: list[Entry] = []
    decl = s.topology.services.get(s.container.service) if s.topology else None
    out += _process_seeds(s, decl)
    out += _listener_seeds(s, decl)
    out += _file_seeds(s, decl)
    out += _peer_seeds(s, decl)
    for e in out:
        # Declared, not seen: the detector marks it used when it is (book.note_use). Not a
        # program: the entrypoint's exec runs before the inventory knows the container, so
        # its use is usually unseen, and a pruned entrypoint would be killed in protect mode.
        e.used = e.kind not in USE_TRACKED
    return out


# -- processes ---------------------------------------------------------------------------
def command_argv(image_config: dict[str, Any], decl: ServiceDecl | None) -> list[str]:
    """What the container runs: compose entrypoint/command over the image's (Docker's rules)."""
    entrypoint = list(decl.entrypoint) if decl and decl.entrypoint else list(image_config.get("Entrypoint") or [])
    if decl and decl.command:
        cmd = list(decl.command)
    elif decl and decl.entrypoint:
        cmd = []  # a new entrypoint resets the image's Cmd
    else:
        cmd = list(image_config.get("Cmd") or [])
    return [str(a) for a in entrypoint + cmd]


def programs_of(argv: list[str]) -> list[str]:
    """The programs a command line starts: argv[0], and for `sh -c SCRIPT` the script's commands."""
    if not argv:
        return []
    programs = [argv[0]]
    if posixpath.basename(argv[0]) in _SHELLS and "-c" in argv[1:]:
        i = argv.index("-c", 1)
        if i + 1 < len(argv):
            programs += _script_programs(argv[i + 1])
    elif posixpath.basename(argv[0]) == "env":
        rest = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        programs += rest[:1]
    return programs


def _script_programs(script: str) -> list[str]:
    try:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return []
    out: list[str] = []
    at_command = True
    for tok in tokens:
        if tok in _SEPARATORS or set(tok) <= set(";&|()"):
            at_command = True
            continue
        if at_command:
            if "=" in tok and not tok.startswith("="):
                continue  # VAR=value before the command
            if tok == "exec":
                continue
            at_command = False
            if tok not in _SHELL_WORDS and not tok.startswith("$"):
                out.append(tok)
    return out


def _process_seeds(s: SeedInput, decl: ServiceDecl | None) -> list[Entry]:
    if not s.container.pid and not s.root:
        # Not running yet (created): its start seeds them, resolved in its own root.
        return []
    path_dirs = _path_dirs(s.image_config)
    root = s.root or f"/proc/{s.container.pid}/root"
    workdir = s.image_config.get("WorkingDir") or "/"
    argv = command_argv(s.image_config, decl)
    programs = programs_of(argv)
    out: list[Entry] = []
    first_multicall = False
    for i, program in enumerate(programs):
        for path in resolve_program(program, path_dirs, root, workdir):
            # A multi-call binary is keyed by the applet it is run as (argv[0] is the
            # program as written): "/bin/sh" run as sh allows sh there, not nc.
            multicall = _is_multicall(root, path)
            first_multicall = first_multicall or (i == 0 and multicall)
            out.append(process_entry(exec_identity(path, [program], True), "", source="seed", exe=path)
                       if multicall else process_entry(path, "", source="seed"))
    # A busybox shell runs the applets of its script as /proc/self/exe (argv[0] = applet).
    if len(programs) > 1 and out and (first_multicall or _is_busybox(root, out[0].data["path"])):
        out += [process_entry(f"/proc/self/exe:{p}", "", source="seed") for p in programs[1:] if "/" not in p]
    return list({e.key: e for e in out}.values())


def _is_busybox(root: str, path: str) -> bool:
    """Is `path` (inside the container) named busybox or a link to it? (When its content
    cannot be read, e.g. in a test's fake root.)"""
    if posixpath.basename(path) == "busybox":
        return True
    try:
        return posixpath.basename(os.readlink(root + path)).startswith("busybox")
    except OSError:
        return False


MAX_CLASSIFY_BYTES = 8 << 20  # seeding runs on the loop: read at most this much of a binary


def _is_multicall(root: str, path: str) -> bool:
    """Is the regular file at `path` (inside the container) a multi-call binary, by content?"""
    try:
        fd = open_in_root(root, path)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False  # a FIFO or a device is nobody's binary; never block on one
        scan = MultiCallScan()
        left = MAX_CLASSIFY_BYTES
        while left > 0 and not scan.found:
            chunk = os.read(fd, min(1 << 20, left))
            if not chunk:
                break
            scan.update(chunk)
            left -= len(chunk)
        return scan.found
    except OSError:
        return False
    finally:
        os.close(fd)


def _path_dirs(image_config: dict[str, Any]) -> list[str]:
    for item in image_config.get("Env") or []:
        if isinstance(item, str) and item.startswith("PATH="):
            return [d for d in item[5:].split(":") if d.startswith("/")]
    return DEFAULT_PATH.split(":")


def resolve_program(program: str, path_dirs: list[str], root: str, workdir: str) -> list[str]:
    """The path(s) execve will be given for `program`, as runc/sh resolve it."""
    if "/" in program:
        return [posixpath.normpath(posixpath.join(workdir, program))]
    candidates = [posixpath.join(d, program) for d in path_dirs]
    if root and os.path.isdir(root):
        for c in candidates:
            # lexists: never follow an absolute link, it would point into the host.
            if os.path.lexists(root + c):
                return [c]
    return candidates


# -- listeners, files ------------------------------------------------------------------
def _ports_of_image(image_config: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for spec in (image_config.get("ExposedPorts") or {}):
        port_s, _, proto = str(spec).partition("/")
        try:
            out.append((proto or "tcp", int(port_s)))
        except ValueError:
            continue
    return out


def _declared_ports(decl: ServiceDecl | None, image_config: dict[str, Any]) -> list[tuple[str, int]]:
    ports = set(_ports_of_image(image_config))
    if decl:
        ports |= {(p.proto, p.port) for p in decl.expose + decl.ports}
    return sorted(ports)


def _listener_seeds(s: SeedInput, decl: ServiceDecl | None) -> list[Entry]:
    ports = set(_declared_ports(decl, s.image_config))
    ports |= {(p.proto, p.port) for p in s.container.ports}
    return [listener_entry(proto, port, source="seed") for proto, port in sorted(ports)]


def _file_seeds(s: SeedInput, decl: ServiceDecl | None) -> list[Entry]:
    places: list[str] = list((s.image_config.get("Volumes") or {}).keys())
    places.append(str(s.image_config.get("WorkingDir") or ""))
    if decl:
        places += decl.volumes + decl.tmpfs
    prefixes = {p for p in (seed_prefix(x) for x in places if x) if p}
    return [file_entry(p, source="seed") for p in sorted(prefixes)]


# -- peers ------------------------------------------------------------------------------
def _networks(decl: ServiceDecl) -> set[str]:
    return set(decl.networks) or {"default"}


def allowed_links(topology: ComposeTopology) -> dict[str, dict[str, bool]]:
    """source service -> {target service: any_port}, as the compose file says them.

    A file that declares dependencies (links or depends_on on any service) has said which
    service talks to which: those are the allowances, and a shared network adds nothing
    (otherwise every sibling on the app's default network could reach every declared port,
    and lateral movement with an allowed tool would go unseen). A file that declares none
    relies on its networks: then services on a shared network are seeded, on their declared
    ports only. any_port is True for an explicit link/depends_on (a declared dependency may
    use any port when the target declares none), False for a shared network.
    """
    out: dict[str, dict[str, bool]] = {}
    services = topology.services
    declared = any(decl.links or decl.depends_on for decl in services.values())
    for name, decl in services.items():
        targets = out.setdefault(name, {})
        for t in decl.links + decl.depends_on:
            if t in services and t != name:
                targets[t] = True
        if declared:
            continue
        for t, other in services.items():
            if t != name and t not in targets and _networks(decl) & _networks(other):
                targets[t] = False
    return out


def _peer_seeds(s: SeedInput, decl: ServiceDecl | None) -> list[Entry]:
    c = s.container
    out: list[Entry] = []
    # Published ports: anyone may connect (the host, a load balancer, the world).
    published = {(p.proto, p.port) for p in c.ports if p.host_port}
    if decl:
        published |= {(p.proto, p.port) for p in decl.ports if p.host_port}
    for proto, port in sorted(published):
        out.append(peer_entry("in", proto, ANY, port, source="seed"))
    if not s.topology or not decl:
        return out
    links = allowed_links(s.topology)
    me = c.service

    def ports_for(service: str, any_port: bool) -> Iterable[tuple[str, int | str]]:
        target = s.topology.services.get(service) if s.topology else None
        ports: list[tuple[str, int | str]] = list(_declared_ports(target, s.service_image_config(service)))
        if not ports and any_port:
            ports = [("tcp", ANY), ("udp", ANY)]
        return ports

    for target, any_port in sorted(links.get(me, {}).items()):
        for proto, port in ports_for(target, any_port):
            out.append(peer_entry("out", proto, f"{c.app}/{target}", port, source="seed"))
    for source, targets in sorted(links.items()):
        if me in targets:
            for proto, port in ports_for(me, targets[me]):
                out.append(peer_entry("in", proto, f"{c.app}/{source}", port, source="seed"))
    return out
