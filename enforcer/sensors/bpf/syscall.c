/* Syscall sensor: the set of syscalls each container uses, as a bitmap kept here (no event
 * per syscall), an event the first time a container uses one (or, outside learn mode,
 * the first time it uses one its profile does not allow), and an event for every call of
 * a dangerous syscall, also when it fails.
 *
 * Hooked at the sys_exit raw tracepoint, not sys_enter: a syscall denied by seccomp (Docker's
 * default profile refuses `unshare -U` with EPERM) never reaches sys_enter, but it does
 * reach sys_exit with its number and return value. This program runs for every syscall
 * on the host, so its first two instructions are the whole cost for everyone else: the
 * cgroup id and one hash lookup. A raw tracepoint, because the classic one first copies
 * its arguments into a perf record, for every syscall of every process (measured here:
 * 157 ns against 123 ns per host syscall).
 *
 * Some calls are judged by their arguments, not their number: clone/clone3 with namespace
 * flags (a new user namespace is not a new thread), socket() of the packet family or a
 * raw inet socket (sniffing and spoofing on the bridge). Each such call also counts as a
 * "qualified" syscall numbered from 512 (QN_* below, sensors/layout.py QUALIFIED): learned,
 * allowed and reported like any other, always dangerous.
 *
 * Protect mode stops a dangerous call at sys_enter: a call whose number (or qualified
 * number) the profile's allow-list lacks gets SIGKILL before the kernel runs it; the
 * process never returns to user space (a clone is aborted: the kernel checks for a fatal
 * signal before the child exists). The sys_exit record then says `killed`. A call that
 * seccomp denies never reaches sys_enter: it failed anyway and is reported at sys_exit.
 */


/* x86_64 struct pt_regs as user space sees it (uapi asm/ptrace.h). */
struct user_regs_x86_64 {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
    unsigned long orig_ax, ip, cs, flags, sp, ss;
};

struct syscall_ev {
    struct ev_hdr h;
    s64 nr;      /* the syscall number, or a qualified number (>= NR_SYSCALLS) */
    s64 ret;
    u64 arg0;    /* clone flags / socket family: what made it qualified */
    u64 arg1;    /* socket type */
};

BPF_RINGBUF_OUTPUT(syscall_events, 64);
/* profile id -> syscalls allowed. */
PINNED_TABLE("hash", u32, struct syscall_bits, syscall_allow, 4096);
/* Threads killed at sys_enter, so that their sys_exit record says so (protect mode only). */
BPF_TABLE("lru_hash", u32, u64, syscall_kills, 4096);

/* x86_64 numbers (uapi unistd_64.h) and flags (uapi sched.h, socket.h). */
#define NR_SOCKET_ 41
#define NR_CLONE_ 56
#define NR_CLONE3_ 435
#define AF_PACKET_ 17
#define SOCK_RAW_ 3
#define SOCK_TYPE_MASK_ 0xf
/* Qualified numbers: NR_SYSCALLS + bit. Bits 0-7: clone/clone3 with one namespace flag. */
#define QN_SOCKET_PACKET 8
#define QN_SOCKET_RAW 9
#define QN_COUNT 10

static __always_inline u64 reg(struct user_regs_x86_64 *regs, int which)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), which == 0 ? (void *)&regs->di : (void *)&regs->si);
    return v;
}

/* Qualified bits of one call, and its deciding arguments. The order of the namespace bits
 * is layout.py's CLONE_NAMESPACES. */
static __always_inline u64 qualifiers(u64 nr, struct user_regs_x86_64 *regs, u64 *a0, u64 *a1)
{
    if (nr == NR_CLONE_ || nr == NR_CLONE3_) {
        u64 flags = reg(regs, 0);
        if (nr == NR_CLONE3_) {
            /* struct clone_args (uapi sched.h) begins with u64 flags; arg 1 is its pointer. */
            u64 p = flags;
            flags = 0;
            bpf_probe_read_user(&flags, sizeof(flags), (void *)p);
        }
        *a0 = flags;
        u64 q = 0;
        q |= (flags & 0x00020000ULL) ? 1 << 0 : 0;  /* CLONE_NEWNS */
        q |= (flags & 0x02000000ULL) ? 1 << 1 : 0;  /* CLONE_NEWCGROUP */
        q |= (flags & 0x04000000ULL) ? 1 << 2 : 0;  /* CLONE_NEWUTS */
        q |= (flags & 0x08000000ULL) ? 1 << 3 : 0;  /* CLONE_NEWIPC */
        q |= (flags & 0x10000000ULL) ? 1 << 4 : 0;  /* CLONE_NEWUSER */
        q |= (flags & 0x20000000ULL) ? 1 << 5 : 0;  /* CLONE_NEWPID */
        q |= (flags & 0x40000000ULL) ? 1 << 6 : 0;  /* CLONE_NEWNET */
        /* CLONE_NEWTIME (0x80) exists for clone3 only: in clone() it is the exit signal. */
        if (nr == NR_CLONE3_)
            q |= (flags & 0x80ULL) ? 1 << 7 : 0;
        return q;
    }
    if (nr == NR_SOCKET_) {
        u64 family = reg(regs, 0), type = reg(regs, 1);
        *a0 = family;
        *a1 = type;
        if (family == AF_PACKET_)
            return 1 << QN_SOCKET_PACKET;
        if ((family == AF_INET_ || family == AF_INET6_) && (type & SOCK_TYPE_MASK_) == SOCK_RAW_)
            return 1 << QN_SOCKET_RAW;
    }
    return 0;
}

static __always_inline int emit_syscall(void *rec, u32 size)
{
    return emitted(S_SYSCALL, syscall_events.ringbuf_output(rec, size, BPF_RB_NO_WAKEUP));
}

static __always_inline int is_dangerous(u64 nr)
{
    switch (nr) {
    DANGEROUS_CASES
        return 1;
    default:
        return 0;
    }
}

static __always_inline int has_bit(struct syscall_bits *b, u64 nr)
{
    if (!b || nr >= NR_SYSCALL_BITS)
        return 0;
    return (b->w[(nr >> 6) & (NR_SYSCALL_BITS / 64 - 1)] >> (nr & 63)) & 1;
}

/* The runtime entering the container for `docker exec` (runc renames its init
 * "runc:[2:INIT]") always joins a session keyring: the one dangerous call not stopped,
 * as in the detector (rules.RUNTIME_SYSCALLS). A renamed attacker gains a keyctl. */
static __always_inline int runtime_keyctl(u64 nr)
{
    if (nr != 250)
        return 0;
    char comm[COMM_LEN] = {};
    bpf_get_current_comm(comm, sizeof(comm));
    return comm[0] == 'r' && comm[1] == 'u' && comm[2] == 'n' && comm[3] == 'c' && comm[4] == ':' && comm[5] == '[';
}

/* Only a dangerous call, or one that may be qualified by its arguments, can be stopped
 * here: every other call (nearly all of them) leaves before any map lookup. The number comes
 * first and the cgroup second because this program runs at the entry of every syscall on the
 * host (measured, bench/bench_overhead.py: the cgroup walk first cost 111-132 ns per host
 * syscall here). Skipping the walk loses nothing: sys_exit walks at every syscall and keeps
 * the nested-cgroup alias (common.h), and a dangerous call still walks below. */
static __always_inline int may_qualify(u64 nr)
{
    return nr == NR_CLONE_ || nr == NR_CLONE3_ || nr == NR_SOCKET_;
}

RAW_TRACEPOINT_PROBE(sys_enter)
{
    /* args: (struct pt_regs *regs, long id) */
    u64 nr = ctx->args[1];
    if (nr >= NR_SYSCALLS)
        return 0;
    int danger = is_dangerous(nr);
    if (!danger && !may_qualify(nr))
        return 0;
    u64 cg = 0;
    struct policy *pol = watched_policy_walk(&cg);
    if (!pol || pol->mode != MODE_PROTECT)
        return 0;
    struct user_regs_x86_64 *regs = (struct user_regs_x86_64 *)ctx->args[0];
    u64 a0 = 0, a1 = 0;
    u64 q = qualifiers(nr, regs, &a0, &a1);
    if (!q && !danger)
        return 0;
    u32 profile = pol->profile_id;
    struct syscall_bits *allowed = syscall_allow.lookup(&profile);
    int deny = danger && !has_bit(allowed, nr);
#pragma unroll
    for (int i = 0; i < QN_COUNT; i++) {
        if ((q >> i) & 1 && !has_bit(allowed, NR_SYSCALLS + i))
            deny = 1;
    }
    if (!deny || runtime_keyctl(nr))
        return 0;
    bpf_send_signal(9);
    count(S_SYSCALL, C_KILLED);
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 one = 1;
    syscall_kills.update(&tid, &one);
    return 0;
}

/* ---- the last seen words, per CPU ----
 * Nearly every call a container makes is one it has made before: its bit is set in
 * syscalls_seen and, unless the call is dangerous, sys_exit has nothing to do. To spare that
 * hash lookup at every syscall, each CPU keeps a copy of the bitmap word of the last
 * (watched cgroup, generation) that passed, one slot per word of plain syscall numbers
 * (measured, bench/bench_overhead.py: an open/write loop makes 3 calls per op in 2 words).
 *
 * A copy may claim fewer bits than the map (another CPU set one since): that only costs
 * the lookup. It must never claim a bit the map lacks, which would hide a first use:
 * - keyed by the watched cgroup the policy resolved to AND its generation: another
 *   container (an attacker's) misses, and user space bumps the generation whenever it
 *   forgets what was seen (relearn, a mode change, a reused cgroup inode);
 * - user space writes the new generation a moment before it zeroes the bitmap: a copy
 *   taken in between is refused after SEEN_CACHE_JIFFIES (then the map is read again and
 *   the first use is reported, late but not lost);
 * - a check word over the other fields: a program preempted between its stores (a
 *   preemptible kernel) and overwritten meanwhile leaves a torn slot, which never checks.
 * Dangerous and qualified calls never take this path: they are reported or judged every time. */
#define SEEN_WORDS (NR_SYSCALLS / 64)
#define SEEN_CACHE_JIFFIES 250  /* at most 1 s at HZ 250, 0.25 s at HZ 1000 */
struct seen_cache {
    u64 cg;
    u64 gen;
    u64 bits;
    u64 stamp;  /* jiffies when copied */
    u64 check;
};
BPF_PERCPU_ARRAY(seen_cache, struct seen_cache, SEEN_WORDS);

static __always_inline u64 seen_check(u64 cg, u64 gen, u64 bits, u64 stamp)
{
    return mix64(mix64(mix64(mix64(cg, gen), bits), stamp), 0x5eec0de);
}

/* 1 when this CPU's copy says (cg, generation) has already made plain call nr. */
static __always_inline int seen_cached(u64 cg, struct policy *pol, u64 nr)
{
    u32 word = (nr >> 6) & (SEEN_WORDS - 1);
    struct seen_cache *c = seen_cache.lookup(&word);
    if (!c)
        return 0;
    u64 gen = pol->gen, bits = c->bits, stamp = c->stamp;
    if (c->cg != cg || c->gen != gen || !((bits >> (nr & 63)) & 1))
        return 0;
    if (c->check != seen_check(cg, gen, bits, stamp))
        return 0;
    return bpf_jiffies64() - stamp < SEEN_CACHE_JIFFIES;
}

static __always_inline void seen_remember(u64 cg, struct policy *pol, u64 nr, u64 bits)
{
    u32 word = (nr >> 6) & (SEEN_WORDS - 1);
    struct seen_cache *c = seen_cache.lookup(&word);
    if (!c)
        return;
    u64 gen = pol->gen, stamp = bpf_jiffies64();
    c->cg = cg;
    c->gen = gen;
    c->bits = bits;
    c->stamp = stamp;
    c->check = seen_check(cg, gen, bits, stamp);
}

/* Report one (possibly qualified) number of a call; 0 when nothing was sent. */
static __always_inline int report(u64 cg, struct policy *pol, u64 nr, long ret, int danger, u16 killed,
                                  u64 a0, u64 a1)
{
    if (nr >= NR_SYSCALL_BITS)
        return 0;
    u32 word = (nr >> 6) & (NR_SYSCALL_BITS / 64 - 1);
    u64 bit = 1ULL << (nr & 63);
    int first = 0;
    struct syscall_bits *seen = syscalls_seen.lookup(&cg);
    if (seen && !(seen->w[word] & bit)) {
        u64 old = __sync_fetch_and_or(&seen->w[word], bit);
        first = !(old & bit);  /* only the CPU that set the bit reports it */
    }
    if (seen && !danger && nr < NR_SYSCALLS)
        seen_remember(cg, pol, nr, seen->w[word] | bit);
    if (!first && !danger)
        return 0;
    if (first && pol->mode != MODE_LEARN) {
        u32 pid = pol->profile_id;
        struct syscall_bits *allowed = syscall_allow.lookup(&pid);
        if (allowed && (allowed->w[word] & bit))
            first = 0;  /* allowed by the profile: no novelty to report */
        if (!first && !danger)
            return 0;
    }
    u64 now = bpf_ktime_get_ns();
    struct seen_key k = {};
    if (danger) {
        /* A dangerous call: once per TTL per (syscall, failed or not, killed or not). */
        u64 subject = mix64(mix64(mix64(EV_SYSCALL, nr), ret < 0), killed);
        if (!is_novel(S_SYSCALL, cg, pol, subject, &k, now) && !first && !killed)
            return 0;
    }
    if (!under_cap(S_SYSCALL, cg, CFG_RATE_SYSCALL, now))
        return 0;
    struct syscall_ev ev = {};
    fill_hdr(&ev.h, EV_SYSCALL, cg, now);
    ev.h.flags = (danger ? F_DANGEROUS : 0) | (first ? F_FIRST : 0) | (killed ? F_KILLED : 0);
    ev.nr = nr;
    ev.ret = ret;
    ev.arg0 = a0;
    ev.arg1 = a1;
    if (emit_syscall(&ev, sizeof(ev)) && danger)
        mark_sent(&k, now);
    return 1;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    u64 cg = 0;
    struct policy *pol = watched_policy_walk(&cg);
    if (!pol)
        return 0;
    /* args: (struct pt_regs *regs, long ret). pt_regs is the saved register frame, whose
     * layout is user ABI (uapi asm/ptrace.h, unchanged since long before 6.1): the syscall
     * number is orig_ax. */
    struct user_regs_x86_64 *regs = (struct user_regs_x86_64 *)ctx->args[0];
    u64 nr = 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    long ret = (long)ctx->args[1];
    if (nr >= NR_SYSCALLS)
        return 0;
    int danger = is_dangerous(nr);
    /* A call that is neither dangerous nor qualifiable, already seen: nothing to do (and
     * never killed at sys_enter, so no kill record to take). */
    if (!danger && !may_qualify(nr) && seen_cached(cg, pol, nr))
        return 0;
    u16 killed = 0;
    if (pol->mode == MODE_PROTECT) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        if (syscall_kills.lookup(&tid)) {
            killed = 1;
            syscall_kills.delete(&tid);
        }
    }
    u64 a0 = 0, a1 = 0;
    /* Read again here (not kept from sys_enter): a call seccomp denied never got there. */
    u64 q = qualifiers(nr, regs, &a0, &a1);
    report(cg, pol, nr, ret, danger, killed, a0, a1);
#pragma clang loop unroll(disable)
    for (int i = 0; i < QN_COUNT; i++) {
        if ((q >> i) & 1)
            report(cg, pol, NR_SYSCALLS + i, ret, 1, killed, a0, a1);
    }
    return 0;
}
