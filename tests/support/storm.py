"""Connect storms from inside a container's network namespace (run by a host process under
`nsenter -n`, so nothing is exec'd in the container): many processes at once, each
connecting and counting the connects that succeeded and the bytes that came back.

    python3 storm.py HOST PORT ATTEMPTS PROCESSES TIMEOUT  ->  prints "successes bytes refused timeouts"
"""

from __future__ import annotations

import socket
import sys
from multiprocessing import Pool


def _worker(args: tuple[str, int, int, float]) -> tuple[int, int, int, int]:
    host, port, n, timeout = args
    ok = got = refused = timeouts = 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            ok += 1
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while chunk := s.recv(4096):
                got += len(chunk)
        except ConnectionRefusedError:
            refused += 1
        except TimeoutError:
            timeouts += 1
        except OSError:
            refused += 1  # unreachable / prohibited: refused by the network
        finally:
            s.close()
    return ok, got, refused, timeouts


def storm(host: str, port: int, attempts: int, processes: int, timeout: float) -> tuple[int, int, int, int]:
    per = [attempts // processes + (1 if i < attempts % processes else 0) for i in range(processes)]
    with Pool(processes) as pool:
        results = pool.map(_worker, [(host, port, n, timeout) for n in per])
    return tuple(sum(r[i] for r in results) for i in range(4))  # type: ignore[return-value]


if __name__ == "__main__":
    h, p, a, procs, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    print(*storm(h, p, a, procs, t))
