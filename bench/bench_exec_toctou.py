"""How often a thread flipping the exec path beats a check made at sys_enter_execve, on this
kernel: the hole that deciding at sched_process_exec (bpf/process.c) closes.

A small BPF program (not Stockade's) records, for the red team's race helper
(tests/support/exec_attacks.c, `race N` in a throwaway busybox container without a
network), the path sys_enter_execve read from user memory and the path the kernel then
executed (sched_process_exec's filename). "a->b" counts execs a sys_enter check would have
allowed (it read /x/a) while the kernel ran /x/b.

    sudo .venv/bin/python bench/bench_exec_toctou.py [N]
"""

from __future__ import annotations

import ctypes as ct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.harness import ensure_busybox_image  # noqa: E402
from support.exec_race import build_attacks  # noqa: E402

PROGRAM = r'''
struct seen { char p[8]; };
BPF_HASH(entry, u32, struct seen, 65536);
BPF_ARRAY(counts, u64, 4);  /* read -> executed: 0 a->a, 1 a->b, 2 b->a, 3 b->b */
TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    char comm[16];
    bpf_get_current_comm(comm, sizeof(comm));
    if (comm[0] != 'r' || comm[1] != 'a' || comm[2] != 'c' || comm[3] != 'e')
        return 0;
    struct seen s = {};
    bpf_probe_read_user_str(s.p, sizeof(s.p), args->filename);
    u32 tid = bpf_get_current_pid_tgid();
    entry.update(&tid, &s);
    return 0;
}
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 old = args->old_pid;
    struct seen *s = entry.lookup(&old);
    if (!s)
        return 0;
    char fn[8] = {};
    unsigned short loc = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(fn, sizeof(fn), (char *)args + loc);
    if (s->p[0] == '/' && s->p[1] == 'x' && fn[0] == '/' && fn[1] == 'x') {
        u32 i = (s->p[3] == 'b' ? 2 : 0) + (fn[3] == 'b' ? 1 : 0);
        u64 *c = counts.lookup(&i);
        if (c)
            __sync_fetch_and_add(c, 1);
    }
    entry.delete(&old);
    return 0;
}
'''


def main() -> None:
    from bcc import BPF  # noqa: PLC0415 - Debian's python3-bpfcc

    n = sys.argv[1] if len(sys.argv) > 1 else "2000"
    image = ensure_busybox_image()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_attacks(Path(tmp))
        b = BPF(text=PROGRAM)
        out = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{folder}:/x:ro", image,
                              "/x/race", "race", n], capture_output=True, text=True, check=False)
    counts = [b["counts"][ct.c_int(i)].value for i in range(4)]
    print(f"helper: {out.stdout.strip()}")
    print(f"sys_enter read -> kernel executed, of {n} raced execs: a->a {counts[0]}, "
          f"a->b {counts[1]} (a sys_enter check allows, /x/b runs), b->a {counts[2]}, b->b {counts[3]}")


if __name__ == "__main__":
    main()
