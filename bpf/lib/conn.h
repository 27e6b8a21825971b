/* Connections: the fd → socket → conn_info lookups, the socket identity, and the open/close
 * records. A connection is keyed by its struct sock, so every fd on one socket shares it. */
#ifndef EBPF_TRACER_CONN_H
#define EBPF_TRACER_CONN_H

#include "output.h"

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Kernels before 6.13 count file references in f_count; later ones in f_ref (one less). */
struct file___pre613 {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* Key of the `fds` map: the fd of one process (threads share their fd table). */
static __always_inline __u64 fd_key(__u64 pid_tgid, int fd)
{
	return (pid_tgid & 0xffffffff00000000ULL) | (__u32)fd;
}

/* The open file behind `fd` in the current task, or NULL. */
static __always_inline struct file *file_of(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if (fd < 0 || (unsigned int)fd >= max)
		return NULL;
	struct file **fdarr = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_core_read(&f, sizeof(f), &fdarr[fd]);
	return f;
}

/* References to the open file (fds in any process, plus in-flight users); 0 when unknown. */
static __always_inline long file_refs(struct file *f)
{
	struct file___pre613 *old = (void *)f;
	if (bpf_core_field_exists(old->f_count))
		return BPF_CORE_READ(old, f_count.counter);
	if (bpf_core_field_exists(f->f_ref))
		return BPF_CORE_READ(f, f_ref.refcnt.counter) + 1;
	return 0;
}

/* The socket behind `fd` in the current task, if it is a stream socket; else NULL. */
static __always_inline struct socket *stream_socket(int fd)
{
	struct file *f = file_of(fd);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	return sock;
}

static __always_inline void fill_addresses(struct conn_event *e, struct socket *sock)
{
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->family = family;
	if (family == AF_INET) {
		__u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		/* IPv4-mapped IPv6: ::ffff:a.b.c.d */
		e->local_addr[10] = 0xff;
		e->local_addr[11] = 0xff;
		e->remote_addr[10] = 0xff;
		e->remote_addr[11] = 0xff;
		__builtin_memcpy(&e->local_addr[12], &l, 4);
		__builtin_memcpy(&e->remote_addr[12], &r, 4);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->remote_addr, sk, __sk_common.skc_v6_daddr);
	}
	if (family == AF_INET || family == AF_INET6) {
		e->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
		e->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	}
}

/* Identity of a connected socket beyond its address, which the kernel reuses after free: local
 * and remote port, and the remote address (IPv4, or the four words of IPv6 folded by xor). */
static __always_inline __u64 sock_tuple(struct sock *sk)
{
	__u64 t = (__u64)BPF_CORE_READ(sk, __sk_common.skc_num) << 48;
	t |= (__u64)BPF_CORE_READ(sk, __sk_common.skc_dport) << 32;
	__u32 addr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6) {
		__u32 w[4] = {};
		BPF_CORE_READ_INTO(&w, sk, __sk_common.skc_v6_daddr);
		addr = w[0] ^ w[1] ^ w[2] ^ w[3];
	}
	return t | addr;
}

/* The connection behind a tracked fd of the current process, or NULL. */
static __always_inline struct conn_info *conn_of_fd(__u64 fdkey)
{
	__u64 *skey = bpf_map_lookup_elem(&fds, &fdkey);
	return skey ? bpf_map_lookup_elem(&conns, skey) : NULL;
}

/* CONN_F_* in force: the kernel's own (conn_info.flags) and what user space asked (conn_ctl).
 * Every data event comes here: a loop variant (`lp`) looks conn_ctl up only once user space has
 * written it. The plain programs always look it up: that branch doubles what the verifier goes
 * through in their copy paths (the TLS returns: 19,799 → 38,252 instructions). */
static __always_inline __u32 conn_flags(struct conn_info *ci, const int lp)
{
	struct settings *s = lp ? settings() : NULL;
	if (lp && (!s || !s->has_conn_ctl))
		return ci->flags;
	__u64 id = ci->id;
	__u32 *ctl = bpf_map_lookup_elem(&conn_ctl, &id);
	return ci->flags | (ctl ? *ctl : 0);
}

static __always_inline int role_wanted(__u8 role, __u8 mode)
{
	if (role == ROLE_SERVER)
		return mode & MODE_INGRESS;
	if (role == ROLE_CLIENT)
		return mode & MODE_EGRESS;
	return 1; /* unknown role: user space classifies */
}

/* An empty connection record in this CPU's scratch, header filled; NULL never in practice. */
static __always_inline struct conn_event *conn_event(__u32 type, __u64 pid_tgid, int fd, __u8 sys)
{
	__u32 zero = 0;
	struct conn_event *e = bpf_map_lookup_elem(&conn_scratch, &zero);
	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	fill_header(&e->hdr, type, pid_tgid);
	e->fd = fd;
	e->syscall = sys;
	return e;
}

/* Starts tracking `fd`. A `fresh` socket (just accepted or connected) is a new connection; any
 * other first-seen fd joins the connection of its socket when one is tracked (dup, fork), else
 * starts one. New connections are announced with EV_CONN_OPEN unless `ignored`. */
static __always_inline struct conn_info *track(void *ctx, __u64 pid_tgid, int fd, struct socket *sock, __u8 role,
					       __u8 sys, __u8 ignored, int fresh)
{
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	__u64 skey = (__u64)sk;
	__u64 fdkey = fd_key(pid_tgid, fd);
	__u64 tuple = sock_tuple(sk);
	if (!fresh) {
		struct conn_info *known = bpf_map_lookup_elem(&conns, &skey);
		if (known && known->tuple == tuple) {
			bpf_map_update_elem(&fds, &fdkey, &skey, BPF_ANY);
			return known;
		}
	}
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&conn_seq, &zero);
	if (!seq)
		return NULL;
	struct conn_info ci = {};
	*seq += 1;
	ci.id = *seq * 1024 + (bpf_get_smp_processor_id() & 1023);
	ci.role = role;
	ci.ignored = ignored;
	ci.tuple = tuple;
	ci.tgid = pid_tgid >> 32;
	if (bpf_map_update_elem(&conns, &skey, &ci, BPF_ANY) != 0 ||
	    bpf_map_update_elem(&fds, &fdkey, &skey, BPF_ANY) != 0) {
		count(CNT_CONN_FULL, 1);
		return NULL;
	}
	struct conn_event *e = ignored ? NULL : conn_event(EV_CONN_OPEN, pid_tgid, fd, sys);
	if (e) {
		e->conn_id = ci.id;
		e->role = role;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		fill_addresses(e, sock);
		output(ctx, e, sizeof(*e));
	}
	return bpf_map_lookup_elem(&conns, &skey);
}

/* Ends the connection stored under `skey`: EV_CONN_CLOSE with the final positions of both
 * layers (unless it was ignored), then forgets it and what user space asked for it. `sys` is
 * SYS_CLOSE for close(2), SYS_COUNT when the socket itself went away. */
static __always_inline void end_conn(void *ctx, __u64 skey, struct conn_info *ci, __u64 pid_tgid, int fd, __u8 sys)
{
	__u64 id = ci->id;
	struct conn_event *e = ci->ignored ? NULL : conn_event(EV_CONN_CLOSE, pid_tgid, fd, sys);
	if (e) {
		e->conn_id = id;
		e->role = ci->role;
		e->flags = conn_flags(ci, 0);
		e->recv = ci->pos[LAYER_SOCKET][DIR_RECV];
		e->sent = ci->pos[LAYER_SOCKET][DIR_SEND];
		e->tls_recv = ci->pos[LAYER_TLS][DIR_RECV];
		e->tls_sent = ci->pos[LAYER_TLS][DIR_SEND];
		output(ctx, e, sizeof(*e));
	}
	bpf_map_delete_elem(&conn_ctl, &id);
	bpf_map_delete_elem(&conns, &skey);
}

#endif
