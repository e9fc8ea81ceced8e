"""Seeding a profile from the image config and the compose file; path generalisation."""

from __future__ import annotations

import os

from enforcer.models import ComposeTopology, Container, PortBinding, ServiceDecl
from enforcer.profiles.model import ANY, Profile
from enforcer.profiles.paths import generalise, is_noise, normalise, seed_prefix
from enforcer.profiles.seed import SeedInput, command_argv, programs_of, resolve_program, seed_entries


def _topology() -> ComposeTopology:
    topo = ComposeTopology(project="shop")
    topo.services = {
        "web": ServiceDecl(name="web", links=["api"], networks=["front", "back"],
                           ports=[PortBinding(port=80, host_port=8080)]),
        "api": ServiceDecl(name="api", depends_on=["db", "cache"], networks=["back"],
                           expose=[PortBinding(port=9000)], volumes=["/srv/uploads", "/etc/api"],
                           tmpfs=["/run/api"]),
        "db": ServiceDecl(name="db", networks=["back"], expose=[PortBinding(port=5432)]),
        "cache": ServiceDecl(name="cache", networks=["back"]),  # declares no port
        "batch": ServiceDecl(name="batch", networks=["jobs"], expose=[PortBinding(port=7000)]),
    }
    return topo


def _seed(service: str, image_config: dict | None = None, ports: list[PortBinding] | None = None) -> Profile:
    c = Container(id="c" * 64, name=f"shop_{service}_1", app="shop", service=service, image="img",
                  ports=ports or [], pid=os.getpid())  # running: its root is /proc/<pid>/root
    p = Profile(id=1, app="shop", service=service, image_digest="sha256:x")
    configs = {"db": {"ExposedPorts": {"5432/tcp": {}}}}
    for e in seed_entries(SeedInput(c, image_config or {}, _topology(), lambda s: configs.get(s, {}))):
        assert e.source == "seed"
        p.add(e)
    return p


def test_compose_links_depends_on_and_networks_become_peers_in_both_directions():
    api = _seed("api")
    # depends_on db: db's declared port; depends_on cache (declares none): any port.
    assert ("out", "tcp", "shop/db", 5432) in api.peers
    assert ("out", "tcp", "shop/cache", ANY) in api.peers and ("out", "udp", "shop/cache", ANY) in api.peers
    # web links api: api accepts web on its own declared port.
    assert ("in", "tcp", "shop/web", 9000) in api.peers
    # batch shares no network with api: neither way.
    assert not any(peer == "shop/batch" for _, _, peer, _ in api.peers)
    assert api.allows_peer("out", "tcp", "shop/db", 5432)
    assert not api.allows_peer("out", "tcp", "shop/db", 22)
    # db shares "back" and api declares 9000, but the file declares dependencies and db has
    # none on api: sharing a network is no allowance (lateral movement stays visible).
    assert not api.allows_peer("in", "tcp", "shop/db", 9000)
    assert not api.allows_peer("in", "tcp", "shop/batch", 9000)
    web = _seed("web")
    assert ("out", "tcp", "shop/api", 9000) in web.peers
    # A published port accepts anyone.
    assert web.allows_peer("in", "tcp", "10.9.8.7", 80)
    assert ("tcp", 80) in web.listeners


def test_declared_dependencies_are_the_only_seeded_links():
    db = _seed("db")
    # api depends on db: api may reach db. db shares "back" with api but never declared a
    # dependency on it: the file said who talks to whom, so db may not reach api's 9000.
    assert ("in", "tcp", "shop/api", 5432) in db.peers
    assert ("out", "tcp", "shop/api", 9000) not in db.peers
    assert not any(peer == "shop/cache" for _, _, peer, _ in db.peers)


def test_a_file_without_dependencies_seeds_shared_networks_on_declared_ports_only():
    topo = ComposeTopology(project="shop")
    topo.services = {
        "api": ServiceDecl(name="api", networks=["back"], expose=[PortBinding(port=9000)]),
        "db": ServiceDecl(name="db", networks=["back"], expose=[PortBinding(port=5432)]),
        "cache": ServiceDecl(name="cache", networks=["back"]),  # declares no port
        "batch": ServiceDecl(name="batch", networks=["jobs"], expose=[PortBinding(port=7000)]),
    }
    c = Container(id="c" * 64, name="shop_db_1", app="shop", service="db", image="img", pid=os.getpid())
    db = Profile(id=1, app="shop", service="db", image_digest="sha256:x")
    for e in seed_entries(SeedInput(c, {}, topo, lambda s: {})):
        db.add(e)
    assert ("out", "tcp", "shop/api", 9000) in db.peers and ("in", "tcp", "shop/api", 5432) in db.peers
    # cache declares no port: sharing a network allows nothing to it; batch shares none.
    assert not any(peer == "shop/cache" and d == "out" for d, _, peer, _ in db.peers)
    assert not any(peer == "shop/batch" for _, _, peer, _ in db.peers)


def test_listeners_and_writable_places_come_from_image_and_compose():
    cfg = {"ExposedPorts": {"9000/tcp": {}, "9001/udp": {}}, "Volumes": {"/data": {}}, "WorkingDir": "/app",
           "User": "app"}
    api = _seed("api", cfg)
    assert {("tcp", 9000), ("udp", 9001)} <= api.listeners
    assert {"/data/", "/app/", "/srv/uploads/", "/run/api/"} <= api.file_prefixes
    assert not any(p.startswith("/etc") for p in api.file_prefixes)  # a volume on /etc stays exact-only
    assert api.allows_write("/srv/uploads/2024/photo.jpg")
    assert not api.allows_write("/srv/other")


def test_entrypoint_and_command_follow_dockers_override_rules():
    image = {"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"]}
    assert command_argv(image, None) == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    assert command_argv(image, ServiceDecl(name="x", command=["nginx", "-T"])) == ["/docker-entrypoint.sh", "nginx", "-T"]
    # A new entrypoint resets the image's Cmd.
    assert command_argv(image, ServiceDecl(name="x", entrypoint=["/bin/sh"])) == ["/bin/sh"]


def test_a_shell_script_command_seeds_the_programs_it_calls():
    argv = ["sh", "-c", "while true; do wget -q -O /dev/null http://web/ && echo ok | nc db 3306; "
                        "X=1 exec sleep 1; done"]
    assert programs_of(argv) == ["sh", "wget", "nc", "sleep"]
    assert programs_of(["/usr/bin/env", "FOO=1", "python3", "app.py"]) == ["/usr/bin/env", "python3"]


def test_bare_names_resolve_inside_the_container_root_without_following_links(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    # An absolute link: followed on the host it would name the host's file; lexists sees the link.
    os.symlink("/bin/busybox-that-is-not-on-this-host", root / "bin" / "wget")
    dirs = ["/usr/bin", "/bin"]
    assert resolve_program("wget", dirs, str(root), "/") == ["/bin/wget"]
    # Unknown root (container not running): every PATH candidate.
    assert resolve_program("wget", dirs, "", "/") == ["/usr/bin/wget", "/bin/wget"]
    assert resolve_program("./run.sh", dirs, str(root), "/app") == ["/app/run.sh"]


def test_seeded_process_is_pinned_by_the_first_hash_then_held_to_it():
    p = _seed("api", {"Cmd": ["/usr/local/bin/api", "--port", "9000"]})
    assert p.process_verdict("/usr/local/bin/api", "aa" * 32) == "pin"
    from enforcer.profiles.model import process_entry

    p.add(process_entry("/usr/local/bin/api", "aa" * 32))
    assert p.process_verdict("/usr/local/bin/api", "aa" * 32) == "known"
    assert p.process_verdict("/usr/local/bin/api", "bb" * 32) == "changed"
    assert p.process_verdict("/usr/local/bin/other", "aa" * 32) == "unknown"
    assert p.process_verdict("/usr/local/bin/api", "") == "known"  # the sensor could not hash it


def test_written_paths_generalise_to_directory_prefixes_except_in_system_dirs():
    assert generalise("/var/lib/postgresql/data/base/16384/2619") == "/var/lib/postgresql/"
    assert generalise("/var/log/nginx/access.log") == "/var/log/nginx/"
    assert generalise("/app/out.txt") == "/app/"
    assert generalise("/tmp/tmp.XyZ12/a/b") == "/tmp/"
    assert generalise("/etc/hostname") == "/etc/hostname"
    assert generalise("/usr/lib/python3/__pycache__/x.pyc") == "/usr/lib/python3/__pycache__/x.pyc"
    assert generalise("/rootfile") == "/rootfile"
    assert generalise("/") == ""  # never a prefix of everything
    assert seed_prefix("/") is None and seed_prefix("/etc/nginx") is None and seed_prefix("/data/") == "/data/"


def test_pseudo_device_and_own_fd_writes_are_noise():
    assert normalise("/proc/4411/fd/1") == "/proc/self/fd/1"
    assert normalise("/proc/self/task/12/comm") == "/proc/thread-self/comm"
    assert normalise("/var//log/../log/x") == "/var/log/x"
    for path in ("/dev/null", "/dev/pts/0", "/proc/self/fd/2", "/dev/tty"):
        assert is_noise(normalise(path)), path
    for path in ("/dev/shm/payload", "/proc/self/oom_score_adj", "/etc/passwd"):
        assert not is_noise(normalise(path)), path


def test_a_busybox_shell_script_seeds_its_applets_as_self_execs(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    for applet in ("sh", "wget"):
        os.symlink("/bin/busybox", root / "bin" / applet)
    c = Container(id="d" * 64, name="x", app="x", service="x", image="img")
    image = {"Cmd": ["sh", "-c", "while true; do wget -q http://web/; done"], "Env": ["PATH=/usr/bin:/bin"]}
    entries = seed_entries(SeedInput(c, image, None, lambda s: {}, root=str(root)))
    assert [e.data["path"] for e in entries if e.kind == "process"] == ["/bin/sh", "/bin/wget", "/proc/self/exe:wget"]
    # Not a busybox shell: no self-exec seeds.
    (root / "bin" / "sh").unlink()
    (root / "bin" / "sh").write_text("#!/real/shell\n")
    entries = seed_entries(SeedInput(c, image, None, lambda s: {}, root=str(root)))
    assert [e.data["path"] for e in entries if e.kind == "process"] == ["/bin/sh", "/bin/wget"]


def test_self_exec_is_profiled_by_its_applet_name():
    from enforcer.profiles.model import exec_identity

    assert exec_identity("/proc/self/exe", ["wget", "-q"]) == "/proc/self/exe:wget"
    assert exec_identity("/proc/123/exe", ["/bin/nc"]) == "/proc/self/exe:nc"
    assert exec_identity("/proc/self/exe", []) == "/proc/self/exe"
    assert exec_identity("/bin/wget", ["wget"]) == "/bin/wget"
