/* Network sensor: outbound connects, inbound accepts and listeners (TCP through
 * sock:inet_sock_set_state), UDP "connections" (connect/sendto/sendmsg/sendmmsg with an
 * address), and DNS queries (the first bytes of what is sent to port 53).
 *
 * Attribution: SYN_SENT and LISTEN happen in the calling process, so its cgroup is right.
 * SYN_RECV -> ESTABLISHED runs in softirq, where `current` is whatever task was
 * interrupted (often the client!), so an inbound connection is attributed by its LOCAL
 * address through local_ips, never by the current cgroup. Loopback is the exception: it
 * never leaves the network namespace, and the task that sent the ACK is a neighbour in
 * the same container.
 */

enum net_dir { DIR_OUT = 1, DIR_IN = 2, DIR_LISTEN = 3 };
#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_SYN_RECV_ 3
#define TCP_LISTEN_ 10
#define EINPROGRESS_ 115

struct net_ev {
    struct ev_hdr h;
    u8 direction;
    u8 proto;
    u8 family;  /* 4 | 6 */
    u8 pad;
    u16 lport;
    u16 rport;
    u8 laddr[16];
    u8 raddr[16];
};

struct dns_ev {
    struct ev_hdr h;
    u8 family;
    u8 pad;
    u16 port;
    u32 len;  /* bytes of payload captured */
    u8 server[16];
    u8 payload[DNS_LEN];
};

/* connect() in progress on this thread: its address, and whether TCP took it. */
struct connect_state {
    struct inet_addr dst;
    u32 fd;
    u32 tcp;
};

BPF_RINGBUF_OUTPUT(network_events, 128);
BPF_RINGBUF_OUTPUT(dns_events, 64);
BPF_TABLE("lru_hash", u32, struct connect_state, connecting, 4096);
/* (tgid << 32 | fd) of sockets connected to port 53 -> the server. */
BPF_TABLE("lru_hash", u64, struct inet_addr, dns_fds, 8192);
BPF_PERCPU_ARRAY(dns_scratch, struct dns_ev, 1);

static __always_inline int emit_dns_rec(void *rec, u32 size)
{
    return emitted(S_DNS, dns_events.ringbuf_output(rec, size, BPF_RB_NO_WAKEUP));
}

static __always_inline int emit_network(void *rec, u32 size)
{
    return emitted(S_NETWORK, network_events.ringbuf_output(rec, size, BPF_RB_NO_WAKEUP));
}

static __always_inline u8 family_of(u16 af)
{
    return af == AF_INET6_ ? 6 : 4;
}

static __always_inline int is_loopback(const u8 *a)
{
    /* ::1 or ::ffff:127.x.y.z, compared as two little-endian words. */
    u64 w0 = 0, w1 = 0;
    __builtin_memcpy(&w0, a, 8);
    __builtin_memcpy(&w1, a + 8, 8);
    if (w0 != 0)
        return 0;
    if (w1 == (1ULL << 56))
        return 1;
    return (w1 & 0xffffffffULL) == 0xffff0000ULL && ((w1 >> 32) & 0xff) == 127;
}

static __always_inline void emit_net(u64 cg, struct policy *pol, u8 dir, u8 proto, u8 family,
                                     const u8 *laddr, u16 lport, const u8 *raddr, u16 rport,
                                     int in_softirq)
{
    u64 now = bpf_ktime_get_ns();
    /* The subject leaves out what changes on every connection (the ephemeral port). */
    u64 subject = mix64(mix64(EV_NET, dir), proto);
    if (dir == DIR_OUT)
        subject = mix64(hash_addr(subject, raddr), rport);
    else if (dir == DIR_IN)
        subject = mix64(hash_addr(subject, raddr), lport);
    else
        subject = mix64(subject, lport);
    struct seen_key k;
    if (!is_novel(S_NETWORK, cg, pol, subject, &k, now))
        return;
    if (!under_cap(S_NETWORK, cg, CFG_RATE_NET, now))
        return;
    struct net_ev ev = {};
    if (in_softirq) {
        /* Whoever runs now is not the receiving process: report no process at all. */
        ev.h.ts = now;
        ev.h.cgroup = cg;
        ev.h.type = EV_NET;
    } else {
        fill_hdr(&ev.h, EV_NET, cg, now);
    }
    ev.direction = dir;
    ev.proto = proto;
    ev.family = family;
    ev.lport = lport;
    ev.rport = rport;
    if (laddr)
        __builtin_memcpy(ev.laddr, laddr, 16);
    __builtin_memcpy(ev.raddr, raddr, 16);
    if (emit_network(&ev, sizeof(ev)))
        mark_sent(&k, now);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != PROTO_TCP)
        return 0;
    int oldstate = args->oldstate, newstate = args->newstate;
    int inbound = oldstate == TCP_SYN_RECV_ && newstate == TCP_ESTABLISHED_;
    if (newstate != TCP_SYN_SENT_ && newstate != TCP_LISTEN_ && !inbound)
        return 0;
    u8 laddr[16], raddr[16];
    u16 af = args->family;
    if (af == AF_INET_) {
        u8 s4[4], d4[4];
        __builtin_memcpy(s4, args->saddr, 4);
        __builtin_memcpy(d4, args->daddr, 4);
        v4_mapped(laddr, s4);
        v4_mapped(raddr, d4);
    } else if (af == AF_INET6_) {
        __builtin_memcpy(laddr, args->saddr_v6, 16);
        __builtin_memcpy(raddr, args->daddr_v6, 16);
    } else {
        return 0;
    }
    u64 cg = 0;
    struct policy *pol;
    if (inbound && !is_loopback(laddr)) {
        struct ip_key ik = {};
        __builtin_memcpy(ik.addr, laddr, 16);
        u64 *owner = local_ips.lookup(&ik);
        if (!owner)
            return 0;
        cg = *owner;
        pol = watched.lookup(&cg);
    } else {
        pol = watched_policy(&cg);
    }
    if (!pol)
        return 0;
    if (newstate == TCP_SYN_SENT_) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        struct connect_state *st = connecting.lookup(&tid);
        if (st)
            st->tcp = 1;
        emit_net(cg, pol, DIR_OUT, PROTO_TCP, family_of(af), laddr, args->sport, raddr, args->dport, 0);
    } else if (newstate == TCP_LISTEN_) {
        emit_net(cg, pol, DIR_LISTEN, PROTO_TCP, family_of(af), laddr, args->sport, raddr, 0, 0);
    } else {
        emit_net(cg, pol, DIR_IN, PROTO_TCP, family_of(af), laddr, args->sport, raddr, args->dport,
                 !is_loopback(laddr));
    }
    return 0;
}

/* Copy the first bytes of a query to port 53 and send it, once per (container, query). */
static __always_inline void emit_dns(u64 cg, struct policy *pol, const struct inet_addr *server,
                                     const void *buf, u64 len)
{
    if (!buf || len < 17)
        return;
    u32 zero = 0;
    struct dns_ev *e = dns_scratch.lookup(&zero);
    if (!e)
        return;
    /* At most DNS_LEN - 1 bytes: a mask the verifier can follow. */
    u32 n = len >= DNS_LEN ? DNS_LEN - 1 : (u32)len;
    if (bpf_probe_read_user(e->payload, n & (DNS_LEN - 1), buf) != 0)
        return;
    /* The question (after the 12-byte header, whose first two bytes are a random id). */
    u64 subject = mix64(EV_DNS, 0);
#pragma clang loop unroll(disable)
    for (u32 i = 12; i < DNS_LEN; i++) {
        if (i >= n)
            break;
        subject ^= e->payload[i];
        subject *= 0x100000001b3ULL;
    }
    u64 now = bpf_ktime_get_ns();
    struct seen_key k;
    if (!is_novel(S_DNS, cg, pol, subject, &k, now))
        return;
    if (!under_cap(S_DNS, cg, CFG_RATE_DNS, now))
        return;
    fill_hdr(&e->h, EV_DNS, cg, now);
    e->h.flags = 0;
    e->family = server->family == AF_INET6_ ? 6 : 4;
    e->port = server->port;
    e->len = n;
    __builtin_memcpy(e->server, server->addr, 16);
    if (emit_dns_rec(e, sizeof(*e)))
        mark_sent(&k, now);
}

static __always_inline void emit_udp_out(u64 cg, struct policy *pol, const struct inet_addr *dst)
{
    u8 none[16] = {};
    emit_net(cg, pol, DIR_OUT, PROTO_UDP, family_of(dst->family), none, 0, dst->addr, dst->port, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u64 cg = 0;
    if (!watched_policy(&cg))
        return 0;
    struct connect_state st = {};
    if (!read_sockaddr(args->uservaddr, &st.dst))
        return 0;
    st.fd = args->fd;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    connecting.update(&tid, &st);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    u64 pt = bpf_get_current_pid_tgid();
    u32 tid = (u32)pt;
    struct connect_state *st = connecting.lookup(&tid);
    if (!st)
        return 0;
    long ret = args->ret;
    /* TCP went through SYN_SENT inside this call; anything else that succeeded is a
     * datagram socket setting its peer. */
    if (!st->tcp && ret == 0)
        emit_udp_out(cg, pol, &st->dst);
    if (st->dst.port == 53 && (ret == 0 || ret == -EINPROGRESS_)) {
        u64 key = (pt & 0xffffffff00000000ULL) | st->fd;
        dns_fds.update(&key, &st->dst);
    }
    connecting.delete(&tid);
    return 0;
}

static __always_inline int on_send(u32 fd, const void *buf, u64 len, const void *uaddr)
{
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    struct inet_addr dst = {};
    if (uaddr) {
        if (!read_sockaddr(uaddr, &dst))
            return 0;
        emit_udp_out(cg, pol, &dst);
        if (dst.port == 53)
            emit_dns(cg, pol, &dst, buf, len);
        return 0;
    }
    u64 key = (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | fd;
    struct inet_addr *server = dns_fds.lookup(&key);
    if (server) {
        dst = *server;
        emit_dns(cg, pol, &dst, buf, len);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    return on_send(args->fd, args->buff, args->len, args->addr);
}

/* struct user_msghdr (uapi): msg_name@0, msg_namelen@8, msg_iov@16, msg_iovlen@24;
 * struct iovec: base@0, len@8. A struct mmsghdr starts with a user_msghdr. */
static __always_inline int on_sendmsg(u32 fd, const void *msg)
{
    u64 cg = 0;
    if (!watched_policy(&cg))
        return 0;
    u64 hdr[4] = {};
    if (!msg || bpf_probe_read_user(hdr, sizeof(hdr), msg) != 0)
        return 0;
    u64 iov[2] = {};
    if (hdr[2] && hdr[3])
        bpf_probe_read_user(iov, sizeof(iov), (const void *)hdr[2]);
    return on_send(fd, (const void *)iov[0], iov[1], (const void *)hdr[0]);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    return on_sendmsg(args->fd, args->msg);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
    return on_sendmsg(args->fd, args->mmsg);
}

/* Every write of every process passes here, and nearly none is to a DNS socket: the
 * DNS-socket map is looked up first (one lookup, where the watched cgroup first cost a
 * watched process two more). An entry exists only for a socket a watched process connected
 * to port 53 (sys_exit_connect); whether it is still watched is asked after, as before. */
TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    u64 key = (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | args->fd;
    struct inet_addr *server = dns_fds.lookup(&key);
    if (!server)
        return 0;
    u64 cg = 0;
    struct policy *pol = watched_policy(&cg);
    if (!pol)
        return 0;
    struct inet_addr dst = *server;
    emit_dns(cg, pol, &dst, args->buf, args->count);
    return 0;
}
