"""Helpers of the enforcement tests: web containers on an internal network, a reachability
probe from inside a container, and the kernel's view of a test enforcer's table (read with
the `nft` tool, independently of the code under test)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

from enforcer.inventory.cgroups import freezer_v1_state_file
from support.harness import DockerResources, EnforcerProcess, container_info, exec_in, sh, wait_for

# Writes a page and serves it on 8080 (foreground) and 8081 (background).
WEB_COMMAND = ["sh", "-c", "mkdir -p /var/www; echo hello from $(hostname) > /var/www/index.html; httpd -p 8081 -h /var/www; "
               "exec httpd -f -p 8080 -h /var/www"]


def web(dockerx: DockerResources, network: str, *extra: str) -> str:
    return dockerx.run(*extra, network=network, command=WEB_COMMAND)


def ip_of(name: str) -> str:
    nets = container_info(name)["NetworkSettings"]["Networks"]
    return next(n["IPAddress"] for n in nets.values() if n.get("IPAddress"))


def reaches(src: str, dst_ip: str, port: int = 8080, timeout: int = 2) -> bool:
    """Can container `src` fetch the page from dst_ip:port? (busybox wget, short timeout)"""
    # (busybox 1.35's `wget -T` crashes with SIGSEGV: its own `timeout` applet bounds it instead.)
    proc = exec_in(src, "timeout", str(timeout), "wget", "-q", "-O", "-", f"http://{dst_ip}:{port}/",
                   timeout=timeout + 20)
    return proc.returncode == 0 and "hello" in proc.stdout


def wait_reaches(src: str, dst_ip: str, port: int = 8080, timeout: float = 20) -> None:
    wait_for(lambda: reaches(src, dst_ip, port), timeout=timeout, interval=0.3,
             what=f"{src} to reach {dst_ip}:{port}")


def nft_table(family: str, table: str) -> list[dict[str, Any]]:
    proc = sh("nft", "-j", "list", "table", family, table, check=False)
    if proc.returncode != 0:
        return []
    return json.loads(proc.stdout)["nftables"]


def nft_elements(family: str, table: str, set_name: str) -> list[Any]:
    for item in nft_table(family, table):
        s = item.get("set")
        if s and s["name"] == set_name:
            return list(s.get("elem", []))
    return []


def drop_counters(family: str, table: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in nft_table(family, table):
        r = item.get("rule")
        if r and r.get("comment"):
            for e in r["expr"]:
                if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                    out[r["comment"]] = e["counter"]["packets"]
    return out


def wait_reconciled(e: EnforcerProcess, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (s := e.call("status")["enforcement"])["reconciled"] and s, timeout=timeout,
                    what="enforcement to reconcile after start")


def wait_known(e: EnforcerProcess, *names: str, timeout: float = 20) -> None:
    def known() -> bool:
        running = {c["name"] for c in e.call("containers") if c["state"] == "running" and c["networks"]}
        return set(names) <= running
    wait_for(known, timeout=timeout, what=f"the enforcer to know {', '.join(names)}")


def v1_state(name: str) -> str:
    """The container's cgroup v1 freezer state, read from the kernel: FROZEN or THAWED."""
    info = container_info(name)
    path = freezer_v1_state_file(info["Id"], info["State"]["Pid"])
    assert path, "no v1 freezer on this host"
    with open(path) as f:
        return f.read().strip()


def sensors_loaded(e: EnforcerProcess) -> object:
    sensors = e.call("stats")["sensors"]
    errors = [s["error"] for s in sensors if s.get("error")]
    if errors:
        raise AssertionError(f"sensors failed to load: {errors[0]}")
    return bool(sensors) and all(s["loaded"] for s in sensors)


def start_with_sensors(workdir: Any, learn_seconds: float) -> EnforcerProcess:
    """A real enforcer with its eBPF sensors loaded (compiling them takes tens of seconds)."""
    e = EnforcerProcess(workdir, "--learn-seconds", str(learn_seconds)).start()
    try:
        wait_sensors_loaded(e)
    except BaseException:
        e.stop_and_clean()
        raise
    return e


def wait_sensors_loaded(e: EnforcerProcess) -> None:
    wait_for(lambda: sensors_loaded(e), timeout=150, interval=1, what="the sensors to load")


def wait_active(e: EnforcerProcess, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (c := e.call("container", target=name))["profile_state"] == "active" and c,
                    timeout=timeout, interval=0.5, what=f"{name}'s profile to become active")


def host_fetch(container: str, ip: str, port: int = 8080, timeout: int = 2) -> bool:
    """Fetch a page from inside `container`'s network namespace, by a host process: the
    packets are the container's (its address, its veth), but no exec happens in the
    container, so protect mode has nothing to kill."""
    pid = container_info(container)["State"]["Pid"]
    proc = sh("nsenter", "-t", str(pid), "-n", "timeout", str(timeout), "busybox", "wget", "-q", "-O", "-",
              f"http://{ip}:{port}/", check=False, timeout=timeout + 20)
    return proc.returncode == 0 and "hello" in proc.stdout


@contextlib.contextmanager
def sensing(workdir: Any, learn_seconds: float) -> Iterator[EnforcerProcess]:
    """`start_with_sensors` for a fixture: stopped, and its nftables table removed, afterwards."""
    with EnforcerProcess(workdir, "--learn-seconds", str(learn_seconds)).session() as e:
        wait_sensors_loaded(e)
        yield e
