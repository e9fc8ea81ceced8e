/* Shared by every Stockade sensor: event header, watch/policy maps, novelty (dedup) and
 * flood guards, loss counters, string hashing.
 *
 * The sensors are compiled as ONE program text (this header, then each sensor's .c file),
 * so the maps below are shared by all of them.
 *
 * Rules for everything in this folder (see PLATFORM.md): tracepoints only; no kernel
 * struct is ever read by an offset from the headers (they are older than the kernel);
 * only tracepoint arguments (their layout comes from the format files at run time), BPF
 * helpers, uapi structures and user memory. One exception, the rewrite guard at the end
 * of this file, reads a few fields at offsets taken from the running kernel's own BTF. The first thing every program does is the cgroup lookup,
 * so that host processes and unwatched containers pay one hash lookup and nothing else.
 */

#define PATH_LEN 256      /* bytes of a path kept (with its NUL) */
#define COMM_LEN 16
#define ARGS_LEN 1024     /* bytes of argv kept (NUL-separated) */
#define ARG_MAX_READ 256  /* at most this much of one argument */
#define MAX_ARGS 20
#define DNS_LEN 256       /* bytes of a DNS query payload kept */

/* Must match sensors/layout.py. */
enum sensor_id { S_PROCESS = 0, S_NETWORK = 1, S_DNS = 2, S_FILE = 3, S_SYSCALL = 4, S_COUNT = 5 };
enum counter_id { C_EMITTED = 0, C_LOST = 1, C_SUPPRESSED = 2, C_DEDUPED = 3, C_KILLED = 4,
                  C_MARKED = 5,      /* file: inodes marked written (the rewrite guard) */
                  C_MARK_LOST = 6,   /* file: a mark that could not be stored (its container fails closed) */
                  C_REWRITTEN = 7,   /* process: execs of an allowed path held because its binary was written */
                  C_SLOTS = 8 };
enum ev_type {
    EV_EXEC = 1, EV_FORK = 2, EV_EXIT = 3, EV_NET = 4, EV_DNS = 5,
    EV_FILE = 6, EV_FILE_CLOSED = 7, EV_SYSCALL = 8,
};
enum mode_id { MODE_LEARN = 0, MODE_ALERT = 1, MODE_PROTECT = 2 };
/* config[] slots: dedup TTL, then per-container events-per-second caps (0 = no cap). */
enum config_id {
    CFG_TTL_NS = 0, CFG_RATE_EXEC = 1, CFG_RATE_TREE = 2, CFG_RATE_NET = 3,
    CFG_RATE_DNS = 4, CFG_RATE_FILE = 5, CFG_RATE_SYSCALL = 6, CFG_WATCH_LEVELS = 7, CFG_SLOTS = 8,
};
/* ev_hdr.flags */
#define F_KILLED 0x1
#define F_ARGV_TRUNC 0x2
#define F_SENSITIVE 0x4
#define F_CANDIDATE 0x8   /* sensitive by basename only: user space confirms after resolving */
#define F_DANGEROUS 0x10
#define F_FIRST 0x20
#define F_EXECVEAT 0x40
#define F_REWRITTEN 0x80  /* exec: the path is allowed, but its binary was written in a container */
#define F_OTHER_FILE 0x100  /* exec: the path is allowed, but names another file than the one allowed there */

/* Pinned maps: what the kill decision reads (the policy, the allow-lists, the exec decided
 * at entry) and the other policy the sensors read. Pinned in bpffs when
 * program.py defines STOCKADE_PIN_MAPS (the instance's maps folder), so that they outlive
 * the enforcer and a restarted one opens the same maps (bcc creates and pins them the first
 * time). Every other map belongs to one loaded generation of the programs. */
#ifdef STOCKADE_PIN_MAPS
#define PINNED_TABLE(_type, _key, _leaf, _name, _max) \
    BPF_TABLE_PINNED(_type, _key, _leaf, _name, _max, STOCKADE_PIN_MAPS "/" #_name)
#define PINNED_FTABLE(_type, _key, _leaf, _name, _max, _flags) \
    BPF_TABLE_PINNED(_type, _key, _leaf, _name, _max, STOCKADE_PIN_MAPS "/" #_name, _flags)
#else
#define PINNED_TABLE(_type, _key, _leaf, _name, _max) BPF_TABLE(_type, _key, _leaf, _name, _max)
#define PINNED_FTABLE(_type, _key, _leaf, _name, _max, _flags) BPF_F_TABLE(_type, _key, _leaf, _name, _max, _flags)
#endif

struct ev_hdr {
    u64 ts;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
    u64 cgroup;  /* the container's cgroup v2 id (for inbound: resolved by local address) */
    u32 pid;     /* tgid, host pid namespace */
    u32 tid;
    u32 uid;
    u16 type;
    u16 flags;
    char comm[COMM_LEN];
};

/* A watched cgroup: which profile's allow-lists apply and in which mode. `gen` is bumped
 * to forget the novelty state of a container (relearn, or a reused cgroup inode). */
struct policy {
    u32 profile_id;
    u32 mode;
    u32 gen;
    u32 pad;
};
PINNED_TABLE("hash", u64, struct policy, watched, 8192);

PINNED_TABLE("array", int, u64, config, CFG_SLOTS);

/* cgroup -> syscalls used (user space creates the entry when it watches the cgroup). */
#define NR_SYSCALLS 512
/* Bits 512.. are "qualified" syscalls: one call judged by its arguments (clone with
 * CLONE_NEWUSER, a packet socket...), numbered in syscall.c and sensors/layout.py. */
#define NR_QUALIFIED 512  /* the bitmap stays a power of two: its word index is masked */
#define NR_SYSCALL_BITS (NR_SYSCALLS + NR_QUALIFIED)
struct syscall_bits {
    u64 w[NR_SYSCALL_BITS / 64];
};
PINNED_TABLE("hash", u64, struct syscall_bits, syscalls_seen, 8192);
BPF_PERCPU_ARRAY(counters, u64, S_COUNT * C_SLOTS);

/* Novelty: (cgroup, subject) -> last time it was sent. Repeats within the TTL stay in the
 * kernel; after it the subject is sent again, so a repeated anomaly is still seen at a
 * bounded rate. LRU: a busy host forgets the oldest subjects, never fails an insert. */
struct seen_key {
    u64 cgroup;
    u64 subject;
};
BPF_TABLE("lru_hash", struct seen_key, u64, novelty, 65536);

/* Flood guard: events per container and sensor slot within the current second. */
struct rate_key {
    u64 cgroup;
    u64 slot;
};
struct rate_val {
    u64 second;
    u64 count;
};
BPF_TABLE("lru_hash", struct rate_key, struct rate_val, rates, 16384);

/* Container addresses (IPv4 as ::ffff:a.b.c.d) -> cgroup id, for inbound attribution. */
struct ip_key {
    u8 addr[16];
};
PINNED_TABLE("hash", struct ip_key, u64, local_ips, 4096);

static __always_inline void count(u32 sensor, u32 which)
{
    u32 idx = sensor * C_SLOTS + which;
    u64 *c = counters.lookup(&idx);
    if (c)
        *c += 1;
}

static __always_inline u64 cfg(u32 slot)
{
    u64 *v = config.lookup(&slot);
    return v ? *v : 0;
}

static __always_inline u64 mix64(u64 h, u64 v)
{
    h ^= v;
    h *= 0x100000001b3ULL;
    h ^= h >> 29;
    return h;
}

/* FNV-1a 64 of a NUL-terminated string in a buffer; mirrored by sensors/paths.py. */
static __always_inline u64 fnv_str(const char *s, u32 max)
{
    u64 h = 0xcbf29ce484222325ULL;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < PATH_LEN; i++) {
        if (i >= max)
            break;
        char c = s[i];
        if (c == 0)
            break;
        h ^= (u8)c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static __always_inline void make_key(struct seen_key *key, u64 cg, struct policy *pol, u64 subject)
{
    key->cgroup = cg;
    key->subject = mix64(subject, pol->gen);
}

/* 1 when (cgroup, subject) was not sent within the TTL; key is filled for mark_sent(). */
static __always_inline int is_novel(u32 sensor, u64 cg, struct policy *pol, u64 subject,
                                    struct seen_key *key, u64 now)
{
    make_key(key, cg, pol, subject);
    u64 *last = novelty.lookup(key);
    if (last && now - *last < cfg(CFG_TTL_NS)) {
        count(sensor, C_DEDUPED);
        return 0;
    }
    return 1;
}

static __always_inline void mark_sent(struct seen_key *key, u64 now)
{
    novelty.update(key, &now);
}

/* 1 when the container is still under its cap for this slot in the current second. */
static __always_inline int under_cap(u32 sensor, u64 cg, u32 slot, u64 now)
{
    u64 cap = cfg(slot);
    if (cap == 0)
        return 1;
    struct rate_key k = {.cgroup = cg, .slot = slot};
    u64 second = now / 1000000000ULL;
    struct rate_val *v = rates.lookup(&k);
    if (!v) {
        struct rate_val nv = {.second = second, .count = 1};
        rates.update(&k, &nv);
        return 1;
    }
    if (v->second != second) {
        v->second = second;
        v->count = 1;
        return 1;
    }
    if (v->count >= cap) {
        count(sensor, C_SUPPRESSED);
        return 0;
    }
    __sync_fetch_and_add(&v->count, 1);
    return 1;
}

static __always_inline void fill_hdr(struct ev_hdr *h, u16 type, u64 cg, u64 now)
{
    u64 pt = bpf_get_current_pid_tgid();
    h->ts = now;
    h->cgroup = cg;
    h->pid = pt >> 32;
    h->tid = (u32)pt;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->type = type;
    bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Ring buffers are drained on a timer by user space: no wake-up per event. Each sensor
 * defines emit_<sensor>() with RINGBUF_EMITTER (bcc does not allow map calls in macros
 * used at the call site, but a macro that defines a function is fine). */
static __always_inline int emitted(u32 sensor, int ret)
{
    count(sensor, ret == 0 ? C_EMITTED : C_LOST);
    return ret == 0;
}

/* Reading a sockaddr from user memory: family, port (host order) and a 16-byte address
 * (IPv4 mapped to ::ffff:a.b.c.d). Returns 0 unless it is AF_INET or AF_INET6. */
#define AF_INET_ 2
#define AF_INET6_ 10
struct inet_addr {
    u16 family;
    u16 port;
    u8 addr[16];
};

static __always_inline void v4_mapped(u8 *dst, const u8 *v4)
{
    __builtin_memset(dst, 0, 10);
    dst[10] = 0xff;
    dst[11] = 0xff;
    dst[12] = v4[0];
    dst[13] = v4[1];
    dst[14] = v4[2];
    dst[15] = v4[3];
}

static __always_inline int read_sockaddr(const void *uaddr, struct inet_addr *out)
{
    u8 raw[28] = {};
    if (!uaddr || bpf_probe_read_user(raw, sizeof(raw), uaddr) != 0) {
        /* A sockaddr_in is only 16 bytes and may end a mapping: try the short read. */
        if (!uaddr || bpf_probe_read_user(raw, 16, uaddr) != 0)
            return 0;
    }
    u16 family = raw[0] | (raw[1] << 8);
    out->family = family;
    out->port = (raw[2] << 8) | raw[3];
    if (family == AF_INET_) {
        v4_mapped(out->addr, &raw[4]);
        return 1;
    }
    if (family == AF_INET6_) {
        __builtin_memcpy(out->addr, &raw[8], 16);
        return 1;
    }
    return 0;
}

static __always_inline u64 hash_addr(u64 h, const u8 *a)
{
    u64 w0 = 0, w1 = 0;
    __builtin_memcpy(&w0, a, 8);
    __builtin_memcpy(&w1, a + 8, 8);
    return mix64(mix64(h, w0), w1);
}

/* ---- watched cgroups and their descendants ----
 * A process that can write its cgroupfs (or a nested runtime) can move into a child cgroup
 * of its container, whose id is not in `watched`: descendants of a watched cgroup are
 * watched too, attributed to (and judged by the policy of) the watched ancestor.
 *
 * The raw sys_exit program (syscall.c), which every syscall passes, walks the ancestors of
 * an unwatched cgroup (watched_policy_walk) and remembers a hit in `watched_alias` (sys_enter
 * walks too, but only for the calls it may stop); every other program only reads that alias
 * (one more lookup). A moved
 * process cannot do anything before its cgroup.procs write returns through sys_exit, and a
 * process moved by another one passes sys_exit of whatever syscall it sleeps in: the alias
 * exists before its next exec, connect or open. (Walking in every program was tried: the
 * extra paths pushed the file programs past the verifier's complexity limit. The file
 * programs now read the alias in their small entry programs, before the tail call.) User space
 * deletes the alias of a cgroup id it starts to watch (a reused inode).
 *
 * config[CFG_WATCH_LEVELS] holds the levels of the v2 hierarchy (root = 0) at which watched
 * cgroups sit, one per byte, up to WATCH_LEVELS of them (0: none), and in its high 32 bits
 * the watch epoch. Only those ancestors are looked up, and an unwatched cgroup is walked
 * once per epoch (ALIAS_NONE): a host process pays one alias lookup per program. */
#define WATCH_LEVELS 4

/* nested cgroup id -> its watched ancestor. LRU: an evicted alias is walked again at the
 * process's next syscall. */
BPF_TABLE("lru_hash", u64, u64, watched_alias, 16384);

/* Alias first, then one watched lookup: both ways meet in a single state for the verifier
 * (the file programs are near its complexity limit; two lookup sites pushed them over).
 * An alias that says "no watched ancestor" (ALIAS_NONE, see watched_policy_walk; sys_exit leaves one for every
 * unwatched cgroup it meets, host processes' included) ends here: such a value is never a
 * cgroup id, so the watched lookup could only miss. Whatever its epoch: an outdated one
 * missed the same way, and sys_exit walks again at that process's next syscall. This spares
 * host processes one hash lookup in every program but the raw ones. */
#define ALIAS_NONE (1ULL << 63)

static __always_inline struct policy *watched_policy(u64 *cgp)
{
    u64 id = bpf_get_current_cgroup_id();
    u64 *alias = watched_alias.lookup(&id);
    u64 key = alias ? *alias : id;
    if (key & ALIAS_NONE)
        return 0;
    *cgp = key;
    return watched.lookup(&key);
}

static __always_inline u64 watched_ancestor(u64 id, u64 level)
{
    if (level == 0)
        return 0;
    u64 anc = bpf_get_current_ancestor_cgroup_id((int)level);
    if (anc == 0 || anc == id)
        return 0;  /* above the task, or the task's own cgroup (already missed) */
    return watched.lookup(&anc) ? anc : 0;
}

/* An alias value with this bit: "walked in watch epoch <low bits>, no watched ancestor",
 * so that a host process walks once per epoch, not at every syscall (measured: the walk
 * at every syscall cost a host process +267 ns per syscall with one level, +443 with four).
 * User space bumps the epoch (config[CFG_WATCH_LEVELS] >> 32) whenever it watches a new
 * cgroup, which may be an ancestor of a cgroup already remembered as unwatched. Such a
 * value is never a cgroup id, so watched_policy's lookup with it simply misses. */
static __always_inline struct policy *watched_policy_walk(u64 *cgp)
{
    u64 id = bpf_get_current_cgroup_id();
    *cgp = id;
    struct policy *pol = watched.lookup(&id);
    if (pol)
        return pol;
    u64 levels = cfg(CFG_WATCH_LEVELS);
    u64 none = ALIAS_NONE | (levels >> 32);
    u64 *alias = watched_alias.lookup(&id);
    if (alias) {
        u64 a = *alias;
        if (a == none)
            return 0;
        if (!(a & ALIAS_NONE)) {
            *cgp = a;
            pol = watched.lookup(&a);
            if (pol)
                return pol;
            *cgp = id;  /* the ancestor is no longer watched: walk again */
        }
    }
    if (!(levels & 0xffffffffULL))
        return 0;
    u64 hit = watched_ancestor(id, levels & 0xff);
    if (!hit)
        hit = watched_ancestor(id, (levels >> 8) & 0xff);
    if (!hit)
        hit = watched_ancestor(id, (levels >> 16) & 0xff);
    if (!hit)
        hit = watched_ancestor(id, (levels >> 24) & 0xff);
    if (!hit) {
        watched_alias.update(&id, &none);
        return 0;
    }
    watched_alias.update(&id, &hit);
    *cgp = hit;
    return watched.lookup(&hit);
}

/* The rewrite guard: which files a watched container has opened for writing, by the file's
 * identity (device, inode number), so that an exec of an allowed path whose binary was
 * rewritten is never let through unseen, whatever name the writer used for it (a relative
 * path, /proc/self/root/..., a hard link). Marked when the open returns, before the
 * writer can write a byte; read at exec from the new image's own file (mm->exe_file).
 *
 * The offsets are the running kernel's, read from its BTF by sensors/btf.py (OFF_*); this
 * is the one place the sensors read kernel structs. Without them (no BTF) the guard is
 * compiled out and the enforcer says so. */
#ifdef OFF_TASK_FILES
#define FMODE_WRITE_ 0x2
struct inode_key {
    u64 ino;
    u32 dev;  /* the kernel's dev_t: major << 20 | minor */
    u32 pad;
};
/* (dev, ino) -> when it was last opened for writing. Not an LRU: a mark must never be
 * forgotten to make room. Pinned: the kill decision reads it. User space drops a
 * container's marks when its root goes away. Not preallocated: ~100 bytes a mark in use.
 * Each container may add MARKS_PER_CONTAINER marks; past that (or with the map full) it
 * goes to rewrite_full, so one container cannot fill the map for the others (it takes
 * sixteen at their quota). */
#define WRITTEN_INODES_MAX 524288
#define MARKS_PER_CONTAINER 32768  /* detect/rules.py REWRITE_MARKS_PER_CONTAINER */
PINNED_FTABLE("hash", struct inode_key, u64, written_inodes, WRITTEN_INODES_MAX, BPF_F_NO_PREALLOC);
/* cgroup -> marks it added. */
PINNED_TABLE("hash", u64, u64, marks_per_cgroup, 8192);
/* cgroup -> 1: a mark of this container's could not be stored, so none of its execs of an
 * allowed path is let through by the kernel alone any more (fail closed, counted, said). */
PINNED_TABLE("hash", u64, u8, rewrite_full, 8192);

static __always_inline u64 read_ptr(u64 addr)
{
    u64 v = 0;
    if (!addr || bpf_probe_read_kernel(&v, sizeof(v), (void *)addr) != 0)
        return 0;
    return v;
}

/* 1 and *k filled when `file` (a struct file *) could be identified. */
static __always_inline int file_identity(u64 file, struct inode_key *k)
{
    u64 inode = read_ptr(file ? file + OFF_FILE_INODE : 0);
    u64 sb = read_ptr(inode ? inode + OFF_INODE_SB : 0);
    if (!sb)
        return 0;
    if (bpf_probe_read_kernel(&k->ino, sizeof(k->ino), (void *)(inode + OFF_INODE_INO)) != 0)
        return 0;
    if (bpf_probe_read_kernel(&k->dev, sizeof(k->dev), (void *)(sb + OFF_SB_DEV)) != 0)
        return 0;
    k->pad = 0;
    return 1;
}

/* The current task's open file at `fd` (0 if none). */
static __always_inline u64 fd_file(u32 fd)
{
    u64 files = read_ptr(bpf_get_current_task() + OFF_TASK_FILES);
    u64 fdt = read_ptr(files ? files + OFF_FILES_FDT : 0);
    if (!fdt)
        return 0;
    u32 max = 0;
    if (bpf_probe_read_kernel(&max, sizeof(max), (void *)(fdt + OFF_FDT_MAX_FDS)) != 0 || fd >= max)
        return 0;
    u64 arr = read_ptr(fdt + OFF_FDT_FD);
    return read_ptr(arr ? arr + (u64)fd * 8 : 0);
}

/* The current task's executable file (after an exec: the new image's). */
static __always_inline u64 exe_file(void)
{
    u64 mm = read_ptr(bpf_get_current_task() + OFF_TASK_MM);
    return read_ptr(mm ? mm + OFF_MM_EXE_FILE : 0);
}
#endif
