"""A DNS query written with write(2) to a UDP socket connected to port 53 (what a resolver
does after connect) is a DNS event: the write program looks that socket up in the DNS-socket map before
it asks whether the process is watched (bpf/network.c sys_enter_write), so every other
write costs one lookup. Real kernel, a real container, an in-process SensorHub."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from support.harness import docker, exec_in
from support.sensors import HubRunner, container_model, running_hub

pytestmark = [pytest.mark.docker, pytest.mark.bpf]


@pytest.fixture(scope="module")
def runner(busybox_image: str) -> Iterator[HubRunner]:
    with running_hub(dedup_ttl=60.0) as r:
        yield r


# socket(AF_INET, SOCK_DGRAM), connect to 127.0.0.1:PORT, write() a DNS query for NAME
# (id 0x1234, recursion desired, one A question).
WRITER = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    unsigned char q[300] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    int n = 12;
    for (char *p = strtok(argv[2], "."); p; p = strtok(0, ".")) {
        q[n++] = strlen(p);
        memcpy(q + n, p, strlen(p));
        n += strlen(p);
    }
    q[n++] = 0; q[n++] = 0; q[n++] = 1; q[n++] = 0; q[n++] = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
        return 1;
    return write(s, q, n) == n ? 0 : 2;
}
"""


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dnswrite")
    (d / "w.c").write_text(WRITER)
    subprocess.run(["gcc", "-O2", "-static", "-o", str(d / "dnswrite"), str(d / "w.c")], check=True)
    return d / "dnswrite"


def test_a_query_written_to_a_connected_dns_socket_is_seen(runner, dockerx, writer):
    name = dockerx.run("--network", "none")
    docker("cp", str(writer), f"{name}:/dnswrite")
    c = container_model(name)
    runner.call(runner.inventory.add, c)
    # Nothing answers on the container's own loopback: the query is written, which is enough.
    assert exec_in(name, "/dnswrite", "53", "stockade-write.example").returncode == 0
    ev = runner.log.wait_for(type="DnsEvent", container_id=c.id, name="stockade-write.example")
    assert ev["server_ip"] == "127.0.0.1" and ev["qtype"] == 1
    # The same query written to a UDP socket connected to another port is no DNS query.
    assert exec_in(name, "/dnswrite", "5353", "stockade-other.example").returncode == 0
    exec_in(name, "sh", "-c", "echo x > /tmp/dns-write-marker")
    runner.log.wait_for(type="FileEvent", container_id=c.id, path="/tmp/dns-write-marker")
    assert not runner.log.matching(type="DnsEvent", container_id=c.id, name="stockade-other.example")
