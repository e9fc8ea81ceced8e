/* Process sensor: exec (with argv and the protect-mode kill), fork, exit.
 *
 * An exec is decided, reported and (protect) killed at sched_process_exec, from what the
 * kernel itself holds there, never from the caller's memory: the filename is the kernel's
 * copy (bprm->filename, copied before the file was opened) and argv is read from the new
 * image's stack, which only the kernel has written so far. A second thread rewriting the
 * path or argv[0] in the old address space (a TOCTOU on sys_enter) changes nothing here.
 * The tracepoint fires once the new image is committed and before it runs its first
 * instruction, so SIGKILL sent here kills it before it runs anything; a failed attempt
 * (a shell's $PATH search) never reaches it. Nothing is carried over from syscall entry,
 * so no table can fill up and drop a decision under an exec storm.
 */

struct exec_ev {
    struct ev_hdr h;
    u32 ppid;
    u32 argc;      /* arguments captured */
    u32 args_len;  /* bytes used in args */
    u32 pad;
    u64 path_hash; /* the key the allow-list was asked with (path, or path:applet) */
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

/* The user registers saved at kernel entry (x86_64 struct pt_regs: the ptrace ABI layout,
 * unchanged between the 6.1 headers and this kernel). Only `sp` is read. */
struct user_regs {
    u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

BPF_RINGBUF_OUTPUT(process_events, 256);
BPF_PERCPU_ARRAY(exec_scratch, struct exec_ev, 1);
/* Profile allow-lists (written by user space): (profile, exec key) -> 1. Pinned: the
 * kill-on-exec decision reads it, so it must outlive the enforcer. */
PINNED_TABLE("hash", struct exec_allow_key, u8, exec_allow, 65536);
/* Multi-call binaries (busybox, toybox...: the applet comes from argv[0]), as user space
 * classified them by content: (profile, path hash) -> 1. Their execs are keyed by
 * path + ":" + applet, as /proc/self/exe always is. As large as exec_allow: a marked path
 * always comes with a profile entry, so this map fills no sooner than the allow-lists do
 * (a path missing here would let every applet through; missing there, it is killed).
 * Pinned with exec_allow: the decision reads both. */
PINNED_TABLE("hash", struct exec_allow_key, u8, exec_multicall, 65536);
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

/* The applet key: FNV-1a of the path continued over ":" + basename(argv[0]), the value
 * user space computes for the whole string "PATH:APPLET" (profiles/model.py exec_identity).
 * A program run under its own name (/bin/sh as sh) keeps the plain path as its key, so the
 * usual case reads as it always did; any other applet gets its own key. One pass, the
 * hashes restarting after every '/', over at most APPLET_LEN - 1 bytes: the verifier walks
 * every iteration. */
#define APPLET_LEN 48
#define FNV_BASIS 0xcbf29ce484222325ULL
static __always_inline u64 basename_hash(const char *s)
{
    u64 b = FNV_BASIS;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < PATH_LEN; i++) {
        char c = s[i];
        if (c == 0)
            break;
        b = c == '/' ? FNV_BASIS : (b ^ (u8)c) * 0x100000001b3ULL;
    }
    return b;
}

static __always_inline u64 applet_hash(struct exec_ev *e, const char *arg0, u64 h)
{
    u64 colon = (h ^ (u8)':') * 0x100000001b3ULL;
    long n = arg0 ? bpf_probe_read_user_str(e->args, APPLET_LEN, arg0) : 0;
    /* No applet both sides can name (argv[0] empty, unreadable, or too long to read whole:
     * its basename may lie past what was read): "PATH:", which no profile allows unless
     * it was learned so. Never the plain path, which would allow the own-name applet. */
    if (n <= 1 || n >= APPLET_LEN)
        return colon;
    u64 name = colon, base = FNV_BASIS;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < APPLET_LEN; i++) {
        char c = e->args[i];
        if (c == 0)
            break;
        name = c == '/' ? colon : (name ^ (u8)c) * 0x100000001b3ULL;
        base = c == '/' ? FNV_BASIS : (base ^ (u8)c) * 0x100000001b3ULL;
    }
    if (name == colon)  /* argv[0] ending in '/': no applet either */
        return colon;
    return base == basename_hash(e->path) ? h : name;
}

static __always_inline int is_self_exe(struct exec_ev *e)
{
    const char self_exe[] = "/proc/self/exe";
#pragma unroll
    for (u32 i = 0; i < sizeof(self_exe); i++) {
        if (e->path[i] != self_exe[i])
            return 0;
    }
    return 1;
}

static __always_inline int is_dev_fd(struct exec_ev *e)
{
    /* execveat(fd, "", AT_EMPTY_PATH) and execveat(dirfd, "rel") become "/dev/fd/N[/rel]" */
    const char dev_fd[] = "/dev/fd/";
#pragma unroll
    for (u32 i = 0; i < sizeof(dev_fd) - 1; i++) {
        if (e->path[i] != dev_fd[i])
            return 0;
    }
    return 1;
}

#ifdef OFF_TASK_FILES
/* (container, allowed path) -> the file user space found at that path in the container's
 * root when the path entered the allow-list (sensors/exec_identity.py). An exec of the path
 * that runs another file (moved or linked there under a name the rename check cannot tie
 * to the allowed one, a bind mount) is not the file that was allowed. No entry: the path
 * alone decides (the container's first moments, a path that did not exist). */
struct exec_ident_key {
    u64 cgroup;
    u64 path_hash;
};
PINNED_TABLE("hash", struct exec_ident_key, struct inode_key, exec_identity, 65536);
#endif

/* Nonzero when an exec of an allowed path must be judged as not allowed: its binary was
 * opened for writing by a watched container (the mark's time), or it is not the file found
 * at that path when it was allowed (its identity, mixed), or the container lost a mark or
 * the binary cannot be identified (1: fail closed). 0: the allow-list decides alone. */
static __always_inline u64 held_mark(u64 cg, u64 path_hash, u16 *why)
{
#ifdef OFF_TASK_FILES
    *why = F_REWRITTEN;
    if (rewrite_full.lookup(&cg))
        return 1;
    struct inode_key ik = {};
    if (!file_identity(exe_file(), &ik))
        return 1;
    u64 *m = written_inodes.lookup(&ik);
    if (m)
        return *m | 1;
    struct exec_ident_key xk = {.cgroup = cg, .path_hash = path_hash};
    struct inode_key *want = exec_identity.lookup(&xk);
    if (want && (want->ino != ik.ino || want->dev != ik.dev)) {
        *why = F_OTHER_FILE;
        return mix64(ik.ino, ik.dev) | 1;
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    u32 zero = 0;
    struct exec_ev *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    /* The kernel's copy of the filename (a __data_loc string in the record). */
    u16 loc = args->data_loc_filename & 0xFFFF;
    if (bpf_probe_read_kernel_str(e->path, sizeof(e->path), (char *)args + loc) <= 0)
        e->path[0] = 0;
    /* argc, then argv[] sit at the new stack pointer; the strings above it. */
    struct user_regs *regs = (struct user_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    u64 sp = 0;
    bpf_probe_read_kernel(&sp, sizeof(sp), &regs->sp);
    u64 nargs = 0;
    const char *const *argv = (const char *const *)(sp + 8);
    const char *arg0 = 0;
    if (!sp || bpf_probe_read_user(&nargs, sizeof(nargs), (void *)sp) != 0)
        nargs = 0;
    if (nargs)
        bpf_probe_read_user(&arg0, sizeof(arg0), &argv[0]);

    u64 h = fnv_str(e->path, PATH_LEN);
    u64 ah = applet_hash(e, arg0, h);
    u64 key = h;
    struct exec_allow_key ak = {.profile_id = pol->profile_id, .path_hash = h};
    if (is_self_exe(e) || exec_multicall.lookup(&ak))
        key = ah;
    u16 flags = is_dev_fd(e) ? F_EXECVEAT : 0;
    u64 mark = 0;
    if (pol->mode != MODE_LEARN) {
        ak.path_hash = key;
        if (exec_allow.lookup(&ak)) {
            u16 why = 0;
            mark = held_mark(cg, h, &why);
            if (!mark)
                return 0;
            /* An allowed path whose binary a container wrote, or that is another file than
             * the one allowed there: judged as if not allowed. */
            flags |= why;
            count(S_PROCESS, C_REWRITTEN);
        }
        if (pol->mode == MODE_PROTECT) {
            bpf_send_signal(9);
            count(S_PROCESS, C_KILLED);
            flags |= F_KILLED;
        }
    }
    /* Novelty by the finest identity (path and applet), so that learning sees every applet
     * a multi-call binary is run as, even before user space has classified it. A kill is
     * its own subject, so that an earlier plain exec never hides it. */
    u64 now = bpf_ktime_get_ns();
    struct seen_key k;
    u64 subject = mix64(mix64(ah, (flags & F_KILLED) ? EV_EXEC + 100 : EV_EXEC), mark);
    if (!is_novel(S_PROCESS, cg, pol, subject, &k, now) || !under_cap(S_PROCESS, cg, CFG_RATE_EXEC, now))
        return 0;
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32;
    fill_hdr(&e->h, EV_EXEC, cg, now);
    e->h.flags = flags;
    e->path_hash = key;
    u32 *pp = parent_of.lookup(&tgid);
    e->ppid = pp ? *pp : 0;
    u32 off = 0, argc = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_ARGS; i++) {
        if (i >= nargs)
            break;
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
    if (nargs > argc)
        e->h.flags |= F_ARGV_TRUNC;
    e->argc = argc;
    e->args_len = off > ARGS_LEN ? ARGS_LEN : off;
    if (emit_process(e, sizeof(*e)))
        mark_sent(&k, now);
    return 0;
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
