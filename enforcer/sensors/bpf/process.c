/* Process sensor: exec (with argv and the protect-mode kill), fork, exit.
 *
 * An exec is decided at syscall entry (the path string as executed is only in user memory
 * there) and reported, or killed, at sched_process_exec, i.e. only once the kernel has
 * committed to the new image. Deciding at entry but acting after success matters: shells
 * search $PATH by trying execve on every directory, and a kill on the first failing
 * attempt would kill the shell. SIGKILL sent at sched_process_exec is delivered before
 * the new program runs its first instruction.
 */

struct exec_ev {
    struct ev_hdr h;
    u32 ppid;
    u32 argc;      /* arguments captured */
    u32 args_len;  /* bytes used in args */
    u32 pad;
    u64 path_hash;
    char path[PATH_LEN];
    char args[ARGS_LEN + ARG_MAX_READ];  /* slack so that every bounded read fits */
};

struct fork_ev {
    struct ev_hdr h;
    u32 child_pid;
    u32 pad;
};

struct exit_ev {
    struct ev_hdr h;
    s32 exit_code;  /* from exit_group/exit; -1 when unknown (killed by a signal) */
    u32 pad;
};

struct exec_allow_key {
    u32 profile_id;
    u32 pad;
    u64 path_hash;
};

BPF_RINGBUF_OUTPUT(process_events, 256);
BPF_PERCPU_ARRAY(exec_scratch, struct exec_ev, 1);
/* tid -> the exec decided at entry, waiting for sched_process_exec. */
BPF_TABLE("lru_hash", u32, struct exec_ev, pending_exec, 1024);
/* Profile allow-lists (written by user space): (profile, path hash) -> 1. */
BPF_HASH(exec_allow, struct exec_allow_key, u8, 65536);
/* child tgid -> parent tgid, from fork; tgid -> exit code. */
BPF_TABLE("lru_hash", u32, u32, parent_of, 65536);
BPF_TABLE("lru_hash", u32, s32, exit_codes, 16384);
/* tid -> clone flags of the clone in progress, to tell threads from processes at fork. */
BPF_TABLE("lru_hash", u32, u64, clone_flags, 4096);

#define CLONE_THREAD_ 0x00010000

static __always_inline int emit_process(void *rec, u32 size)
{
    return emitted(S_PROCESS, process_events.ringbuf_output(rec, size, BPF_RB_NO_WAKEUP));
}

/* A busybox shell runs every applet as /proc/self/exe with the applet's name in argv[0], so
 * the path alone cannot tell `wget` from `sh`. Such an exec is keyed as if its path were
 * "/proc/self/exe:" + basename(argv[0]): FNV-1a continued over ":NAME", the same value user
 * space computes for that whole string (profiles hold "/proc/self/exe:wget"). One pass, the
 * hash restarting after every '/', and a short read: the verifier walks every iteration.
 * e->args is scratch here; the argv loop below overwrites it. */
#define APPLET_LEN 48
static __always_inline u64 self_exec_applet_hash(struct exec_ev *e, const char *const *argv, u64 h)
{
    const char self_exe[] = "/proc/self/exe";
#pragma unroll
    for (u32 i = 0; i < sizeof(self_exe); i++) {
        if (e->path[i] != self_exe[i])
            return h;
    }
    const char *arg0 = 0;
    if (bpf_probe_read_user(&arg0, sizeof(arg0), &argv[0]) != 0 || !arg0)
        return h;
    if (bpf_probe_read_user_str(e->args, APPLET_LEN, arg0) <= 1)
        return h;
    u64 colon = (h ^ (u8)':') * 0x100000001b3ULL;
    u64 name = colon;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < APPLET_LEN; i++) {
        char c = e->args[i];
        if (c == 0)
            break;
        name = c == '/' ? colon : (name ^ (u8)c) * 0x100000001b3ULL;
    }
    return name == colon ? h : name;  /* argv[0] ending in '/' names no applet */
}

static __always_inline int exec_enter(const char *filename, const char *const *argv, u16 extra_flags)
{
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    u32 zero = 0;
    struct exec_ev *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    if (bpf_probe_read_user_str(e->path, sizeof(e->path), filename) <= 0)
        return 0;
    u64 h = fnv_str(e->path, PATH_LEN);
    h = self_exec_applet_hash(e, argv, h);
    u16 flags = extra_flags;
    u64 now = bpf_ktime_get_ns();
    if (pol->mode != MODE_LEARN) {
        struct exec_allow_key ak = {.profile_id = pol->profile_id, .path_hash = h};
        if (exec_allow.lookup(&ak))
            return 0;
        if (pol->mode == MODE_PROTECT)
            flags |= F_KILLED;
    }
    if (!(flags & F_KILLED)) {
        /* Peek only: the subject is marked as sent when the exec succeeds. */
        struct seen_key k;
        if (!is_novel(S_PROCESS, cg, pol, mix64(h, EV_EXEC), &k, now))
            return 0;
    }
    u64 pt = bpf_get_current_pid_tgid();
    u32 tid = (u32)pt;
    u32 tgid = pt >> 32;
    e->h.flags = flags;
    e->h.cgroup = cg;
    e->path_hash = h;
    u32 *pp = parent_of.lookup(&tgid);
    e->ppid = pp ? *pp : 0;
    u32 off = 0, argc = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_ARGS; i++) {
        const char *arg = 0;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) != 0 || !arg)
            break;
        if (off >= ARGS_LEN) {
            e->h.flags |= F_ARGV_TRUNC;
            break;
        }
        long n = bpf_probe_read_user_str(&e->args[off & (ARGS_LEN - 1)], ARG_MAX_READ, arg);
        if (n <= 0)
            break;
        if (n == ARG_MAX_READ)
            e->h.flags |= F_ARGV_TRUNC;
        off += n;
        argc++;
    }
    if (argc == MAX_ARGS) {
        const char *more = 0;
        bpf_probe_read_user(&more, sizeof(more), &argv[MAX_ARGS]);
        if (more)
            e->h.flags |= F_ARGV_TRUNC;
    }
    e->argc = argc;
    e->args_len = off > ARGS_LEN ? ARGS_LEN : off;
    pending_exec.update(&tid, e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return exec_enter(args->filename, args->argv, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return exec_enter(args->filename, args->argv, F_EXECVEAT);
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 old = args->old_pid;
    struct exec_ev *e = pending_exec.lookup(&old);
    if (!e)
        return 0;
    u64 cg = e->h.cgroup;
    u16 flags = e->h.flags;
    if (flags & F_KILLED) {
        bpf_send_signal(9);
        count(S_PROCESS, C_KILLED);
    }
    u64 now = bpf_ktime_get_ns();
    struct policy *pol = watched.lookup(&cg);
    if (pol) {
        struct seen_key k;
        /* A kill is its own subject, so that an earlier plain exec never hides it. */
        u64 subject = mix64(e->path_hash, (flags & F_KILLED) ? EV_EXEC + 100 : EV_EXEC);
        if (is_novel(S_PROCESS, cg, pol, subject, &k, now) &&
            under_cap(S_PROCESS, cg, CFG_RATE_EXEC, now)) {
            fill_hdr(&e->h, EV_EXEC, cg, now);
            e->h.flags = flags;
            if (emit_process(e, sizeof(*e)))
                mark_sent(&k, now);
        }
    }
    pending_exec.delete(&old);
    return 0;
}

static __always_inline int exec_exit(void)
{
    u64 cg = 0;
    if (!watched_policy(&cg))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    pending_exec.delete(&tid);  /* a failed attempt (PATH search) leaves nothing behind */
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
    return exec_exit();
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
    return exec_exit();
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u64 cg = 0;
    if (!watched_policy(&cg))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 f = args->clone_flags;
    clone_flags.update(&tid, &f);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u64 cg = 0;
    if (!watched_policy(&cg))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 f = 0;  /* struct clone_args (uapi) starts with the u64 flags */
    bpf_probe_read_user(&f, sizeof(f), args->uargs);
    clone_flags.update(&tid, &f);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    u64 pt = bpf_get_current_pid_tgid();
    u32 tid = (u32)pt;
    u64 *f = clone_flags.lookup(&tid);
    if (f) {
        u64 flags = *f;
        clone_flags.delete(&tid);
        if (flags & CLONE_THREAD_)
            return 0;
    }
    u32 child = args->child_pid;
    u32 parent = pt >> 32;
    parent_of.update(&child, &parent);
    u64 now = bpf_ktime_get_ns();
    if (!under_cap(S_PROCESS, cg, CFG_RATE_TREE, now))
        return 0;
    struct fork_ev ev = {};
    fill_hdr(&ev.h, EV_FORK, cg, now);
    ev.child_pid = child;
    emit_process(&ev, sizeof(ev));
    return 0;
}

static __always_inline int remember_exit_code(int code, int whole_group, u32 nr)
{
    u64 cg = 0;
    if (!watched_policy(&cg))
        return 0;
    /* exit and exit_group never return, so the syscall sensor (at sys_exit) never sees
     * them: put them in the container's syscall set here. */
    struct syscall_bits *seen = syscalls_seen.lookup(&cg);
    if (seen && !(seen->w[(nr >> 6) & 7] & (1ULL << (nr & 63))))
        __sync_fetch_and_or(&seen->w[(nr >> 6) & 7], 1ULL << (nr & 63));
    u64 pt = bpf_get_current_pid_tgid();
    if (!whole_group && (u32)pt != (pt >> 32))
        return 0;  /* a thread's exit() is not the process's */
    u32 tgid = pt >> 32;
    s32 c = code & 0xff;
    exit_codes.update(&tgid, &c);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    return remember_exit_code(args->error_code, 1, 231);
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit)
{
    return remember_exit_code(args->error_code, 0, 60);
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32;
    if ((u32)pt != tgid)
        return 0;  /* a thread; the process ends with its leader */
    s32 *code = exit_codes.lookup(&tgid);
    s32 exit_code = code ? *code : -1;
    exit_codes.delete(&tgid);
    parent_of.delete(&tgid);
    u64 now = bpf_ktime_get_ns();
    if (!under_cap(S_PROCESS, cg, CFG_RATE_TREE, now))
        return 0;
    struct exit_ev ev = {};
    fill_hdr(&ev.h, EV_EXIT, cg, now);
    ev.exit_code = exit_code;
    emit_process(&ev, sizeof(ev));
    return 0;
}
