// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* ebpf-tracer kernel side: follows socket syscalls of selected processes and streams their
 * connection lifecycle and payload bytes to user space through one BPF ring buffer.
 *
 * Cost model: every probe first looks up the calling tgid (and cgroup) in the filter maps and
 * returns at once for unselected processes. Only selected processes pay for the fd → socket
 * check, and only sockets of type SOCK_STREAM produce events. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#include "vmlinux.h"
#pragma clang diagnostic pop
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115

/* Walk limits: one loop step either loads an iovec or copies into the staging chunk. 64 steps
 * carry a 144 KiB call (18 chunks) spread over up to ~40 iovecs. */
#define MAX_STEPS 64
#define MAX_IOV 32
#define DEFAULT_CAP (144 * 1024)

/* How the saved buffer argument of a data syscall is shaped. */
enum { IO_BUF = 0, IO_IOV = 1, IO_MSG = 2, IO_MMSG = 3, IO_ACCEPT = 4, IO_CONNECT = 5, IO_LISTEN = 6,
       IO_NOCOPY = 7 /* sendfile: the bytes come from a file, there is no user buffer to copy */ };

/* One per connection (keyed by its struct sock), shared by every fd that refers to it: dup'd
 * fds (inetd-style servers read fd 0 and write fd 1) and fds inherited across fork (a parent that
 * accepts and a child that serves) continue one byte stream instead of starting new ones. */
struct conn_info {
	__u64 id;
	__u64 pos[2];  /* next stream offset per DIR_* */
	__u64 tuple;   /* ports and remote address: tells a reused sock address from the same connection */
	__u8 role;
	__u8 ignored;  /* tracked only to stay quiet (mode excludes this role) */
	__u8 _pad[6];
};

/* Kernels before 6.13 count file references in f_count; later ones in f_ref (one less). */
struct file___pre613 {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

struct active_call {
	__u64 buf;     /* buffer, iovec array, msghdr or mmsghdr pointer (user space) */
	__u64 cnt;     /* buffer length or iovec count */
	__s32 fd;
	__u8 sys;
	__u8 kind;     /* IO_* */
	__u8 dir;      /* DIR_* */
	__u8 mode;     /* the process's MODE_* at entry */
};

/* Progress of one copy walk. It lives in the per-CPU scratch value rather than in registers:
 * the verifier treats values loaded from a map as unknown scalars, so every loop iteration
 * starts from the same abstract state and the walk verifies in a few thousand instructions
 * instead of exploding into one path per combination of ranges. */
struct walk {
	__u64 base;      /* user address of the next byte in the current segment */
	__u64 iov;       /* user address of the iovec array */
	__u64 iovcnt;
	__u64 seg_rem;   /* bytes left in the current segment */
	__u64 chunk_pos; /* stream position of data[0] of the chunk being filled */
	__u32 iov_idx;
	__u32 off;       /* bytes staged in the current chunk */
	__u32 done;      /* bytes copied for this call */
	__u32 want;      /* bytes to copy for this call: min(moved, cap) */
};

/* Staging area for one data chunk. The spill lets a single bounded copy of up to 2*DATA_CHUNK
 * bytes land at any offset below DATA_CHUNK, which is what the verifier can prove. */
struct data_scratch {
	struct data_event ev;
	__u8 spill[2 * DATA_CHUNK];
	struct walk w;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* user space resizes before load */
} events SEC(".maps");

/* Fallback for kernels without BPF ring buffers (before 5.8), or when forced: one perf buffer
 * per CPU. libbpf sizes it to the number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events_perf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* tgid */
	__type(value, __u8);  /* MODE_*, 0 = explicitly excluded */
} selected_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);   /* cgroup v2 id */
	__type(value, __u8);  /* MODE_* */
} selected_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct comm_key);
	__type(value, __u8);  /* MODE_* given to a process that execs this comm; 0 = exclude */
} exe_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);   /* TCP port */
	__type(value, __u8);  /* MODE_* given to a process when it starts listening on this port */
} selected_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* struct sock address */
	__type(value, struct conn_info);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* tgid << 32 | fd */
	__type(value, __u64); /* struct sock address: key of conns */
} fds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);   /* pid_tgid of the thread inside the syscall */
	__type(value, struct active_call);
} active SEC(".maps");

/* Connection ids: a per-CPU sequence times 1024 plus the CPU number, unique without atomic
 * fetch-and-add (BPF atomics that return a value need 5.12+). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} conn_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct process_event);
} proc_scratch SEC(".maps");

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n;
}

static __always_inline struct settings *settings(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&settings_map, &zero);
}

static __always_inline long read_user(void *dst, __u32 size, const void *src)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_probe_read_user))
		return bpf_probe_read_user(dst, size, src);
	return bpf_probe_read(dst, size, src);
}

/* The capture mode of the current process: an explicit pid entry (which may be 0 = excluded)
 * wins, then its cgroup, then capture-all. 0 means "not captured". */
static __always_inline __u8 selected_mode(__u32 tgid)
{
	__u8 *m = bpf_map_lookup_elem(&selected_pids, &tgid);
	if (m)
		return *m;
	__u64 cg = bpf_get_current_cgroup_id();
	m = bpf_map_lookup_elem(&selected_cgroups, &cg);
	if (m)
		return *m;
	struct settings *s = settings();
	return s ? s->capture_all_mode : 0;
}

/* Writes one record to user space: the ring buffer when the kernel has one (decided at load by
 * CO-RE, so older kernels never see the ring-buffer helpers) and perf is not forced, else this
 * CPU's perf buffer. Ring-buffer records wake the reader only once a quarter of the ring is
 * unread: the reader polls every few ms, and a wakeup per record cost ~8 µs on the traced
 * process. */
static __always_inline void output(void *ctx, void *data, __u64 size)
{
	struct settings *s = settings();
	long r;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ringbuf_output) && !(s && s->use_perf)) {
		__u64 flags = BPF_RB_NO_WAKEUP;
		if (s && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > s->wakeup_threshold)
			flags = BPF_RB_FORCE_WAKEUP;
		r = bpf_ringbuf_output(&events, data, size, flags);
	} else {
		r = bpf_perf_event_output(ctx, &events_perf, BPF_F_CURRENT_CPU, data, size);
	}
	count(r == 0 ? CNT_EVENTS : CNT_LOST, 1);
}

static __always_inline void fill_header(struct event_header *h, __u32 type, __u64 pid_tgid)
{
	h->type = type;
	h->tgid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = bpf_ktime_get_ns();
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

/* Identity of a connected socket beyond its address, which the kernel reuses after free. */
static __always_inline __u64 sock_tuple(struct sock *sk)
{
	__u64 t = (__u64)BPF_CORE_READ(sk, __sk_common.skc_num) << 48;
	t |= (__u64)BPF_CORE_READ(sk, __sk_common.skc_dport) << 32;
	t |= BPF_CORE_READ(sk, __sk_common.skc_daddr);
	return t;
}

/* The connection behind a tracked fd of the current process, or NULL. */
static __always_inline struct conn_info *conn_of_fd(__u64 fdkey)
{
	__u64 *skey = bpf_map_lookup_elem(&fds, &fdkey);
	return skey ? bpf_map_lookup_elem(&conns, skey) : NULL;
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
	__u64 fdkey = (pid_tgid & 0xffffffff00000000ULL) | (__u32)fd;
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
	if (bpf_map_update_elem(&conns, &skey, &ci, BPF_ANY) != 0 ||
	    bpf_map_update_elem(&fds, &fdkey, &skey, BPF_ANY) != 0) {
		count(CNT_CONN_FULL, 1);
		return NULL;
	}
	if (!ignored) {
		struct conn_event e = {};
		fill_header(&e.hdr, EV_CONN_OPEN, pid_tgid);
		e.conn_id = ci.id;
		e.fd = fd;
		e.role = role;
		e.syscall = sys;
		bpf_get_current_comm(e.comm, sizeof(e.comm));
		fill_addresses(&e, sock);
		output(ctx, &e, sizeof(e));
	}
	return bpf_map_lookup_elem(&conns, &skey);
}

static __always_inline int role_wanted(__u8 role, __u8 mode)
{
	if (role == ROLE_SERVER)
		return mode & MODE_INGRESS;
	if (role == ROLE_CLIENT)
		return mode & MODE_EGRESS;
	return 1; /* unknown role: user space classifies */
}

static __always_inline int enter_call(__u8 sys, __u8 kind, __u8 dir, int fd, __u64 buf, __u64 cnt)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u8 mode = selected_mode(pid_tgid >> 32);
	if (!mode)
		return 0;
	if (kind <= IO_MMSG || kind == IO_NOCOPY) {
		__u64 key = (pid_tgid & 0xffffffff00000000ULL) | (__u32)fd;
		struct conn_info *ci = conn_of_fd(key);
		if (ci) {
			if (ci->ignored)
				return 0;
		} else if (!stream_socket(fd)) {
			return 0;
		}
	}
	/* Probe stats count the calls that passed the filters: entries stashed, exits matched. */
	count(CNT_PROBE_ENTRY_BASE + sys, 1);
	struct active_call a = { .buf = buf, .cnt = cnt, .fd = fd, .sys = sys, .kind = kind, .dir = dir, .mode = mode };
	if (bpf_map_update_elem(&active, &pid_tgid, &a, BPF_ANY) != 0)
		count(CNT_ACTIVE_FULL, 1);
	return 0;
}

/* Resolves the iovec array and count a msghdr-shaped argument points at. */
static __always_inline void msg_iov(struct active_call *a, __u64 *iov, __u64 *iovcnt)
{
	struct user_msghdr mh = {};
	read_user(&mh, sizeof(mh), (void *)a->buf); /* mmsghdr starts with its msghdr */
	*iov = (__u64)mh.msg_iov;
	*iovcnt = mh.msg_iovlen;
}

/* One step of the copy walk: load the next iovec, or copy the next piece of the current
 * segment into the staging chunk and emit the chunk when it is full. Returns 0 when done. */
static __always_inline int walk_step(void *ctx, struct data_scratch *s)
{
	struct walk *w = &s->w;
	if (w->done >= w->want)
		return 0;
	if (w->seg_rem == 0) {
		if (w->iov_idx >= w->iovcnt || w->iov_idx >= MAX_IOV)
			return 0;
		struct iovec v = {};
		read_user(&v, sizeof(v), (void *)(w->iov + (__u64)w->iov_idx * sizeof(struct iovec)));
		w->iov_idx++;
		w->base = (__u64)v.iov_base;
		w->seg_rem = v.iov_len;
		return 1;
	}
	__u32 off = w->off;
	__u64 n = w->want - w->done;
	if (n > w->seg_rem)
		n = w->seg_rem;
	if (n > DATA_CHUNK - off)
		n = DATA_CHUNK - off;
	/* clang may fold these clamps; re-establish bounds the verifier can see. */
	asm volatile("" : "+r"(n));
	n &= 2 * DATA_CHUNK - 1;
	asm volatile("" : "+r"(off));
	off &= DATA_CHUNK - 1;
	if (n == 0)
		return 0;
	if (read_user(&s->ev.data[off], n, (void *)w->base) != 0)
		return 0; /* unreadable user memory: the rest is reported as skipped */
	w->off = off + n;
	w->done += n;
	w->base += n;
	w->seg_rem -= n;
	if (w->off >= DATA_CHUNK && w->done < w->want) {
		s->ev.pos = w->chunk_pos;
		s->ev.len = DATA_CHUNK;
		output(ctx, &s->ev, sizeof(s->ev));
		w->chunk_pos += DATA_CHUNK;
		w->off = 0;
	}
	return 1;
}

/* Copies up to the per-call cap of the `total` bytes the call moved and emits them as chunks.
 * The last chunk carries DATA_FLAG_LAST and the count of bytes not copied. */
static __always_inline void emit_data(void *ctx, struct active_call *a, struct conn_info *ci, __u64 pid_tgid, __u64 pos,
				      __u32 total)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	struct settings *st = settings();
	__u32 cap = st && st->max_capture_per_call ? st->max_capture_per_call : DEFAULT_CAP;

	struct data_event *ev = &s->ev;
	fill_header(&ev->hdr, EV_DATA, pid_tgid);
	ev->conn_id = ci->id;
	ev->call_bytes = total;
	ev->fd = a->fd;
	ev->dir = a->dir;
	ev->syscall = a->sys;
	ev->role = ci->role;
	ev->flags = 0;
	ev->skipped = 0;
	ev->_pad0 = 0;

	struct walk *w = &s->w;
	w->want = a->kind == IO_NOCOPY ? 0 : total < cap ? total : cap;
	w->done = 0;
	w->off = 0;
	w->iov_idx = 0;
	w->chunk_pos = pos;
	w->base = 0;
	w->seg_rem = 0;
	w->iov = 0;
	w->iovcnt = 0;
	if (a->kind == IO_BUF) {
		w->base = a->buf;
		w->seg_rem = total;
	} else if (a->kind == IO_IOV) {
		w->iov = a->buf;
		w->iovcnt = a->cnt;
	} else if (a->kind != IO_NOCOPY) {
		__u64 iov = 0, iovcnt = 0;
		msg_iov(a, &iov, &iovcnt);
		w->iov = iov;
		w->iovcnt = iovcnt;
	}
	for (int i = 0; i < MAX_STEPS; i++) {
		if (!walk_step(ctx, s))
			break;
	}
	__u32 off = w->off;
	__u32 done = w->done;
	if (off > DATA_CHUNK)
		off = DATA_CHUNK;
	ev->pos = w->chunk_pos;
	ev->len = off;
	ev->skipped = total - done;
	ev->flags = DATA_FLAG_LAST;
	if (total > done)
		count(CNT_TRUNCATED_BYTES, total - done);
	__u64 size = DATA_EVENT_HEADER + (__u64)off;
	asm volatile("" : "+r"(size));
	size &= 2 * DATA_CHUNK - 1;
	output(ctx, ev, size);
}

static __always_inline int exit_call(void *ctx, __u8 sys, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct active_call *ap = bpf_map_lookup_elem(&active, &pid_tgid);
	if (!ap)
		return 0;
	struct active_call a = *ap;
	bpf_map_delete_elem(&active, &pid_tgid);
	count(CNT_PROBE_EXIT_BASE + sys, 1);

	if (a.kind == IO_ACCEPT || a.kind == IO_CONNECT) {
		int fd = a.kind == IO_ACCEPT ? (int)ret : a.fd;
		if (a.kind == IO_ACCEPT ? ret < 0 : (ret != 0 && ret != -EINPROGRESS))
			return 0;
		struct socket *sock = stream_socket(fd);
		if (!sock)
			return 0;
		__u8 role = a.kind == IO_ACCEPT ? ROLE_SERVER : ROLE_CLIENT;
		track(ctx, pid_tgid, fd, sock, role, sys, !role_wanted(role, a.mode), 1);
		return 0;
	}
	if (ret <= 0)
		return 0;
	__u64 key = (pid_tgid & 0xffffffff00000000ULL) | (__u32)a.fd;
	struct conn_info *ci = conn_of_fd(key);
	if (!ci) {
		struct socket *sock = stream_socket(a.fd);
		if (!sock)
			return 0;
		ci = track(ctx, pid_tgid, a.fd, sock, ROLE_UNKNOWN, SYS_COUNT, 0, 0);
		if (!ci)
			return 0;
	}
	if (ci->ignored || !role_wanted(ci->role, a.mode))
		return 0;
	/* Read, then add without fetching the old value: fetching atomics need 5.12+. Two threads
	 * writing one socket at the same instant could then see the same position; their bytes
	 * interleave on the wire anyway, so such a stream is not parseable either way. */
	__u64 *posp = &ci->pos[a.dir & 1];
	__u64 pos = *posp;
	__sync_fetch_and_add(posp, (__u64)ret);
	emit_data(ctx, &a, ci, pid_tgid, pos, (__u32)ret);
	return 0;
}

static __always_inline int enter_close(void *ctx, int fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u8 mode = selected_mode(pid_tgid >> 32);
	if (!mode)
		return 0;
	__u64 key = (pid_tgid & 0xffffffff00000000ULL) | (__u32)fd;
	__u64 *skp = bpf_map_lookup_elem(&fds, &key);
	if (!skp)
		return 0;
	__u64 skey = *skp;
	bpf_map_delete_elem(&fds, &key);
	count(CNT_PROBE_ENTRY_BASE + SYS_CLOSE, 1);
	count(CNT_PROBE_EXIT_BASE + SYS_CLOSE, 1); /* close is traced at entry only */
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &skey);
	if (!ci)
		return 0;
	/* Another fd (dup, or a forked process) still holds the socket: the connection goes on. */
	struct file *f = file_of(fd);
	if (f && file_refs(f) > 1)
		return 0;
	if (!ci->ignored) {
		struct conn_event e = {};
		fill_header(&e.hdr, EV_CONN_CLOSE, pid_tgid);
		e.conn_id = ci->id;
		e.fd = fd;
		e.role = ci->role;
		e.syscall = SYS_CLOSE;
		e.recv = ci->pos[DIR_RECV];
		e.sent = ci->pos[DIR_SEND];
		output(ctx, &e, sizeof(e));
	}
	bpf_map_delete_elem(&conns, &skey);
	return 0;
}

/* ---- syscall tracepoints ------------------------------------------------------------------ */

#define ARG(i) (ctx->args[i])

#define DATA_PROBES(name, SYS, KIND, DIR)                                                          \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                                \
	int tp_enter_##name(struct trace_event_raw_sys_enter *ctx)                                 \
	{                                                                                          \
		return enter_call(SYS, KIND, DIR, (int)ARG(0), ARG(1), ARG(2));                    \
	}                                                                                          \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                                 \
	int tp_exit_##name(struct trace_event_raw_sys_exit *ctx)                                   \
	{                                                                                          \
		return exit_call(ctx, SYS, ctx->ret);                                              \
	}

DATA_PROBES(read, SYS_READ, IO_BUF, DIR_RECV)
DATA_PROBES(write, SYS_WRITE, IO_BUF, DIR_SEND)
DATA_PROBES(readv, SYS_READV, IO_IOV, DIR_RECV)
DATA_PROBES(writev, SYS_WRITEV, IO_IOV, DIR_SEND)
DATA_PROBES(sendto, SYS_SENDTO, IO_BUF, DIR_SEND)
DATA_PROBES(recvfrom, SYS_RECVFROM, IO_BUF, DIR_RECV)
DATA_PROBES(sendmsg, SYS_SENDMSG, IO_MSG, DIR_SEND)
DATA_PROBES(recvmsg, SYS_RECVMSG, IO_MSG, DIR_RECV)
/* mmsg: only the first message's bytes are copied; the rest of the call is reported skipped. */
DATA_PROBES(sendmmsg, SYS_SENDMMSG, IO_MMSG, DIR_SEND)
DATA_PROBES(recvmmsg, SYS_RECVMMSG, IO_MMSG, DIR_RECV)
DATA_PROBES(accept, SYS_ACCEPT, IO_ACCEPT, DIR_RECV)
DATA_PROBES(accept4, SYS_ACCEPT4, IO_ACCEPT, DIR_RECV)
DATA_PROBES(connect, SYS_CONNECT, IO_CONNECT, DIR_SEND)
/* sendfile(out_fd, in_fd, offset, count): nothing is copied, but the stream position advances and
 * user space gets a zero-length data event whose `skipped` is the byte count, so a file body sent
 * this way (nginx's default `sendfile on`) becomes a known, uncaptured part of the response. */
DATA_PROBES(sendfile64, SYS_SENDFILE, IO_NOCOPY, DIR_SEND)

/* listen() of any process, only while port rules exist: user space selects the listener. */
static __always_inline int enter_listen(int fd)
{
	struct settings *s = settings();
	if (!s || !s->notify_listen)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct active_call a = { .fd = fd, .sys = SYS_LISTEN, .kind = IO_LISTEN };
	bpf_map_update_elem(&active, &pid_tgid, &a, BPF_ANY);
	return 0;
}

static __always_inline int exit_listen(void *ctx, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct active_call *ap = bpf_map_lookup_elem(&active, &pid_tgid);
	if (!ap || ap->kind != IO_LISTEN)
		return 0;
	int fd = ap->fd;
	bpf_map_delete_elem(&active, &pid_tgid);
	if (ret != 0)
		return 0;
	struct socket *sock = stream_socket(fd);
	if (!sock)
		return 0;
	struct conn_event e = {};
	fill_header(&e.hdr, EV_LISTEN, pid_tgid);
	e.fd = fd;
	e.syscall = SYS_LISTEN;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	fill_addresses(&e, sock);
	/* Select the listener before listen() returns, so its first accepted connection is
	 * captured; an existing entry (another rule, or 0 = excluded) is kept. */
	__u16 lport = e.local_port;
	__u8 *pm = bpf_map_lookup_elem(&selected_ports, &lport);
	if (pm && *pm) {
		__u32 tgid = pid_tgid >> 32;
		bpf_map_update_elem(&selected_pids, &tgid, pm, BPF_NOEXIST);
	}
	output(ctx, &e, sizeof(e));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_listen")
int tp_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	return enter_listen((int)ARG(0));
}

SEC("tracepoint/syscalls/sys_exit_listen")
int tp_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	return exit_listen(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_close")
int tp_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	return enter_close(ctx, (int)ARG(0));
}

/* ---- syscall kprobes (kernels without syscall tracepoints, or enable_tracepoints: false) -------
 * libbpf resolves "ksyscall/NAME" to the kernel's syscall entry (e.g. __x64_sys_NAME) and
 * BPF_KSYSCALL reads the user arguments through the syscall wrapper's pt_regs. User space loads
 * either these or the tracepoint programs, never both. */

#define KSYSCALL_PROBES(name, SYS, KIND, DIR)                                                      \
	SEC("ksyscall/" #name)                                                                     \
	int BPF_KSYSCALL(kp_enter_##name, long a0, long a1, long a2)                               \
	{                                                                                          \
		return enter_call(SYS, KIND, DIR, (int)a0, (__u64)a1, (__u64)a2);                  \
	}                                                                                          \
	SEC("kretsyscall/" #name)                                                                  \
	int BPF_KRETPROBE(kp_exit_##name, long ret)                                                \
	{                                                                                          \
		return exit_call(ctx, SYS, ret);                                                   \
	}

KSYSCALL_PROBES(read, SYS_READ, IO_BUF, DIR_RECV)
KSYSCALL_PROBES(write, SYS_WRITE, IO_BUF, DIR_SEND)
KSYSCALL_PROBES(readv, SYS_READV, IO_IOV, DIR_RECV)
KSYSCALL_PROBES(writev, SYS_WRITEV, IO_IOV, DIR_SEND)
KSYSCALL_PROBES(sendto, SYS_SENDTO, IO_BUF, DIR_SEND)
KSYSCALL_PROBES(recvfrom, SYS_RECVFROM, IO_BUF, DIR_RECV)
KSYSCALL_PROBES(sendmsg, SYS_SENDMSG, IO_MSG, DIR_SEND)
KSYSCALL_PROBES(recvmsg, SYS_RECVMSG, IO_MSG, DIR_RECV)
KSYSCALL_PROBES(sendmmsg, SYS_SENDMMSG, IO_MMSG, DIR_SEND)
KSYSCALL_PROBES(recvmmsg, SYS_RECVMMSG, IO_MMSG, DIR_RECV)
KSYSCALL_PROBES(accept, SYS_ACCEPT, IO_ACCEPT, DIR_RECV)
KSYSCALL_PROBES(accept4, SYS_ACCEPT4, IO_ACCEPT, DIR_RECV)
KSYSCALL_PROBES(connect, SYS_CONNECT, IO_CONNECT, DIR_SEND)
KSYSCALL_PROBES(sendfile64, SYS_SENDFILE, IO_NOCOPY, DIR_SEND)

SEC("ksyscall/close")
int BPF_KSYSCALL(kp_enter_close, long fd)
{
	return enter_close(ctx, (int)fd);
}

SEC("ksyscall/listen")
int BPF_KSYSCALL(kp_enter_listen, long fd)
{
	return enter_listen((int)fd);
}

SEC("kretsyscall/listen")
int BPF_KRETPROBE(kp_exit_listen, long ret)
{
	return exit_listen(ctx, ret);
}

/* ---- process lifecycle ----------------------------------------------------------------------- */

static __always_inline struct process_event *proc_event(__u32 type, __u64 pid_tgid, __u8 mode)
{
	__u32 zero = 0;
	struct process_event *e = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!e)
		return NULL;
	fill_header(&e->hdr, type, pid_tgid);
	e->mode = mode;
	e->ppid = 0;
	e->path_len = 0;
	e->args_len = 0;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

SEC("tracepoint/sched/sched_process_exec")
int tp_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct comm_key k = {};
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	__u8 mode = 0, selected = 0;
	__u8 *m = bpf_map_lookup_elem(&exe_names, &k);
	if (!m) {
		/* comm is the name execve was called with; when that is a symlink (python3 ->
		 * python3.11) the file's own name is what /proc/PID/exe shows and what a rule may use */
		struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
		const unsigned char *fname = BPF_CORE_READ(cur, mm, exe_file, f_path.dentry, d_name.name);
		struct comm_key fk = {};
		if (fname && bpf_probe_read_kernel_str(fk.comm, sizeof(fk.comm), fname) > 0)
			m = bpf_map_lookup_elem(&exe_names, &fk);
	}
	if (m) {
		mode = *m;
		bpf_map_update_elem(&selected_pids, &tgid, &mode, BPF_ANY);
		selected = 1;
	} else {
		m = bpf_map_lookup_elem(&selected_pids, &tgid);
		if (m) {
			mode = *m;
			selected = 1;
		}
	}
	struct settings *s = settings();
	if (!mode && !(s && s->notify_all_exec))
		return 0;
	(void)selected;
	struct process_event *e = proc_event(EV_PROC_EXEC, pid_tgid, mode);
	if (!e)
		return 0;
	__u32 off = ctx->__data_loc_filename & 0xffff;
	long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)ctx + off);
	e->path_len = n > 0 ? (__u32)n - 1 : 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 start = BPF_CORE_READ(task, mm, arg_start);
	__u64 end = BPF_CORE_READ(task, mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	if (len > ARGS_LEN)
		len = ARGS_LEN;
	asm volatile("" : "+r"(len));
	len &= 2 * ARGS_LEN - 1;
	if (len > ARGS_LEN)
		len = ARGS_LEN;
	if (len && read_user(e->args, len, (void *)start) == 0)
		e->args_len = len;
	output(ctx, e, sizeof(*e));
	return 0;
}

SEC("raw_tracepoint/sched_process_fork")
int rtp_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	if ((__u32)BPF_CORE_READ(child, pid) != child_tgid)
		return 0; /* a new thread: the tgid's selection already covers it */
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u8 *m = bpf_map_lookup_elem(&selected_pids, &parent_tgid);
	if (!m)
		return 0;
	__u8 mode = *m;
	bpf_map_update_elem(&selected_pids, &child_tgid, &mode, BPF_ANY);
	if (!mode)
		return 0;
	struct process_event *e = proc_event(EV_PROC_FORK, ((__u64)child_tgid << 32) | child_tgid, mode);
	if (!e)
		return 0;
	e->ppid = parent_tgid;
	output(ctx, e, sizeof(*e) - PATH_LEN - ARGS_LEN);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int tp_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if ((__u32)pid_tgid != tgid)
		return 0;
	__u8 *m = bpf_map_lookup_elem(&selected_pids, &tgid);
	if (!m)
		return 0;
	__u8 mode = *m;
	bpf_map_delete_elem(&selected_pids, &tgid);
	if (!mode)
		return 0;
	struct process_event *e = proc_event(EV_PROC_EXIT, pid_tgid, mode);
	if (e)
		output(ctx, e, sizeof(*e) - PATH_LEN - ARGS_LEN);
	return 0;
}

/* TLS uprobes (docs/tls.md): off until the data-layer ABI and the attach plan are in (see bpf/lib/tls.h). */
#ifdef TLS_UPROBES
#include "lib/tls.h"
#endif
