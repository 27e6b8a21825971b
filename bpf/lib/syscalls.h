/* Syscall entry/exit pairing: the entry probe stashes the arguments of a selected process's call
 * per thread (`active`), the exit probe takes them back and acts on the result. */
#ifndef EBPF_TRACER_SYSCALLS_H
#define EBPF_TRACER_SYSCALLS_H

#include "copy.h"
#include "tls.h"

#define EINPROGRESS 115
#define MSG_PEEK 2
#define TCP_CLOSE 7
/* sendmmsg/recvmmsg move at most UIO_MAXIOV messages per call (the kernel caps vlen), so the
 * msg_len sum below always covers the whole call; CNT_MMSG_OVERFLOW counts it if not. */
#define MAX_MMSG 1024

/* Stashes the thread's call in its `active` slot (written in place when it has one). */
static __always_inline void stash_call(__u64 pid_tgid, const struct active_call *a)
{
	struct active_call *slot = bpf_map_lookup_elem(&active, &pid_tgid);
	if (slot)
		*slot = *a;
	else if (bpf_map_update_elem(&active, &pid_tgid, a, BPF_ANY) != 0)
		count(CNT_ACTIVE_FULL, 1);
}

/* Takes the thread's stashed call back into *a and frees the slot; 0 when none is in flight. */
static __always_inline int take_call(__u64 pid_tgid, struct active_call *a)
{
	struct active_call *slot = bpf_map_lookup_elem(&active, &pid_tgid);
	if (!slot || slot->sys == ACTIVE_FREE)
		return 0;
	*a = *slot;
	slot->sys = ACTIVE_FREE;
	return 1;
}

static __always_inline int enter_call(__u8 sys, __u8 kind, __u8 dir, int fd, __u64 buf, __u64 cnt, __u64 flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u8 mode = selected_mode(pid_tgid >> 32);
	if (!mode)
		return 0;
	__u64 sk = 0;
	if (kind <= IO_MMSG || kind == IO_NOCOPY) {
		__u64 fdkey = fd_key(pid_tgid, fd);
		__u64 *skp = bpf_map_lookup_elem(&fds, &fdkey);
		struct conn_info *ci = skp ? bpf_map_lookup_elem(&conns, skp) : NULL;
		if (ci) {
			if (ci->ignored)
				return 0;
			sk = *skp;
		} else if (!stream_socket(fd)) {
			return 0;
		}
	}
	/* A peek returns bytes the next read returns again: the stream moves at that read. */
	if (flags & MSG_PEEK) {
		count(CNT_PEEK_SKIPPED, 1);
		return 0;
	}
	/* Probe stats count the calls that passed the filters: entries stashed, exits matched. */
	count(CNT_PROBE_ENTRY_BASE + sys, 1);
	struct active_call a = { .buf = buf, .cnt = cnt, .sk = sk, .fd = fd, .sys = sys, .kind = kind, .dir = dir, .mode = mode };
	stash_call(pid_tgid, &a);
	return 0;
}

struct mmsg_sum {
	__u64 msgvec;
	__u64 msgs;
	__u64 sum;
};

static long mmsg_sum_cb(__u32 i, void *data)
{
	struct mmsg_sum *m = data;
	if (i >= m->msgs)
		return 1;
	__u32 len = 0;
	READ_FIELD(&len, m->msgvec + (__u64)i * sizeof(struct mmsghdr), struct mmsghdr, msg_len);
	m->sum += len;
	return 0;
}

/* Bytes moved by a sendmmsg/recvmmsg that returned `msgs` messages: the sum of their msg_len. */
static __always_inline __u64 mmsg_bytes(__u64 msgvec, long msgs, const int lp)
{
	__u64 sum = 0;
	if (msgs > MAX_MMSG)
		count(CNT_MMSG_OVERFLOW, 1);
	if (lp) {
		struct mmsg_sum m = { .msgvec = msgvec, .msgs = (__u64)msgs, .sum = 0 };
		bpf_loop(MAX_MMSG, mmsg_sum_cb, &m, 0);
		return m.sum;
	}
	for (int i = 0; i < MAX_MMSG; i++) {
		if (i >= msgs)
			break;
		__u32 len = 0;
		READ_FIELD(&len, msgvec + (__u64)i * sizeof(struct mmsghdr), struct mmsghdr, msg_len);
		sum += len;
	}
	return sum;
}

/* The call's arguments at its exit, from the task's saved user registers, which a syscall
 * leaves as they were (arm64 returns in x0: its first argument is orig_x0, which
 * PT_REGS_PARM1_SYSCALL reads). The registers are a BTF pointer: plain loads, which the JIT
 * makes fault-safe, instead of a probe-read helper call per argument. Only the loop variants
 * use this: bpf_task_pt_regs is 5.15+, bpf_loop 5.17+, and user space loads them only where
 * both exist. `flags_arg` is the syscalls.def FLAGS_ARG column (a constant in each program).
 * Returns 0 for a peek. */
static __always_inline int call_from_regs(struct active_call *a, __u8 sys, __u8 kind, __u8 dir, int flags_arg, __u8 mode)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	a->sk = 0;
	a->sys = sys;
	a->kind = kind;
	a->dir = dir;
	a->mode = mode;
	a->fd = (int)PT_REGS_PARM1_SYSCALL(regs);
	if (kind == IO_ACCEPT || kind == IO_CONNECT) {
		a->buf = 0;
		a->cnt = 0;
		return 1;
	}
	a->buf = PT_REGS_PARM2_SYSCALL(regs);
	a->cnt = PT_REGS_PARM3_SYSCALL(regs);
	long flags = flags_arg == 2 ? (long)a->cnt : flags_arg == 3 ? (long)PT_REGS_PARM4_SYSCALL(regs) : 0;
	if (flags & MSG_PEEK) {
		count(CNT_PEEK_SKIPPED, 1);
		return 0;
	}
	return 1;
}

/* `kind` is the exit program's own IO_* (a constant there), so each program keeps only its path.
 * A loop variant (`lp`) has no entry program: it takes the arguments from the registers and
 * counts the call's entry and exit together, for every call of a selected process. */
static __always_inline int exit_call(void *ctx, __u8 sys, __u8 kind, __u8 dir, int flags_arg, long ret, const int lp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	/* every process's exits come here: an unselected one leaves before the `active` lookup */
	__u8 mode = selected_mode(pid_tgid >> 32);
	if (!mode)
		return 0;
	struct active_call a;
	if (lp) {
		count(CNT_PROBE_ENTRY_BASE + sys, 1);
		count(CNT_PROBE_EXIT_BASE + sys, 1);
		/* nothing moved (or, for accept, no socket): out before reading the registers */
		if (kind == IO_CONNECT ? (ret != 0 && ret != -EINPROGRESS) : kind == IO_ACCEPT ? ret < 0 : ret <= 0)
			return 0;
		if (!call_from_regs(&a, sys, kind, dir, flags_arg, mode))
			return 0;
	} else {
		if (!take_call(pid_tgid, &a))
			return 0;
		if (a.sys != sys)
			return 0; /* an entry whose exit was missed: stale */
		count(CNT_PROBE_EXIT_BASE + sys, 1);
	}

	if (kind == IO_ACCEPT || kind == IO_CONNECT) {
		int fd = kind == IO_ACCEPT ? (int)ret : a.fd;
		if (kind == IO_ACCEPT ? ret < 0 : (ret != 0 && ret != -EINPROGRESS))
			return 0;
		struct socket *sock = stream_socket(fd);
		if (!sock)
			return 0;
		__u8 role = kind == IO_ACCEPT ? ROLE_SERVER : ROLE_CLIENT;
		track(ctx, pid_tgid, fd, sock, role, sys, !role_wanted(role, a.mode), 1);
		return 0;
	}
	if (ret <= 0)
		return 0;
	struct io_src src = { .buf = a.buf, .cnt = a.cnt, .kind = kind };
	__u64 total = ret;
	if (kind == IO_MMSG) {
		src.cnt = ret;
		total = mmsg_bytes(a.buf, ret, lp);
		if (total == 0)
			return 0;
	}
	/* A socket syscall inside a TLS call on its SSL*'s known socket: kept on the call, no lookups. */
	struct tls_thread *t;
	if (tls_nested_known(pid_tgid, a.fd, a.dir, total, &t))
		return 0;
	/* The socket found at entry is still this fd's: the call holds a reference to its file, so
	 * the socket cannot be freed and reused before the call returns (its connection may have
	 * ended, on a reset: then the lookup below starts over). */
	__u64 sk = a.sk;
	struct conn_info *ci = sk ? bpf_map_lookup_elem(&conns, &sk) : NULL;
	if (!ci) {
		__u64 fdkey = fd_key(pid_tgid, a.fd);
		__u64 *skp = bpf_map_lookup_elem(&fds, &fdkey);
		ci = skp ? bpf_map_lookup_elem(&conns, skp) : NULL;
		if (!ci) {
			struct socket *sock = stream_socket(a.fd);
			if (!sock)
				return 0;
			ci = track(ctx, pid_tgid, a.fd, sock, ROLE_UNKNOWN, SYS_COUNT, 0, 0);
			if (!ci)
				return 0;
			skp = bpf_map_lookup_elem(&fds, &fdkey);
		}
		if (!skp)
			return 0;
		sk = *skp;
	}
	/* before the role check: a TLS call's socket is remembered even on a connection not copied */
	__u8 ciphertext = tls_note_socket(pid_tgid, sk, ci, a.fd, t);
	if (ci->ignored || !role_wanted(ci->role, a.mode))
		return 0;
	socket_bytes(ctx, &src, ci, pid_tgid, a.fd, sys, a.dir, (__u32)total, ciphertext, lp);
	return 0;
}

static __always_inline int enter_close(void *ctx, int fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u8 mode = selected_mode(pid_tgid >> 32);
	if (!mode)
		return 0;
	__u64 key = fd_key(pid_tgid, fd);
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
	end_conn(ctx, skey, ci, pid_tgid, fd, SYS_CLOSE);
	return 0;
}

/* listen() of any process, only while port rules exist: user space selects the listener. */
static __always_inline int enter_listen(int fd)
{
	struct settings *s = settings();
	if (!s || !s->notify_listen)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct active_call a = { .fd = fd, .sys = SYS_LISTEN, .kind = IO_LISTEN };
	stash_call(pid_tgid, &a);
	return 0;
}

static __always_inline int exit_listen(void *ctx, long ret, const int lp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	int fd;
	if (lp) {
		/* no entry program (see exit_call): the setting is checked here */
		struct settings *s = settings();
		if (!s || !s->notify_listen)
			return 0;
		fd = (int)PT_REGS_PARM1_SYSCALL((struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf()));
	} else {
		struct active_call a;
		if (!take_call(pid_tgid, &a) || a.sys != SYS_LISTEN)
			return 0;
		fd = a.fd;
	}
	if (ret != 0)
		return 0;
	struct socket *sock = stream_socket(fd);
	if (!sock)
		return 0;
	struct conn_event *e = conn_event(EV_LISTEN, pid_tgid, fd, SYS_LISTEN);
	if (!e)
		return 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	fill_addresses(e, sock);
	/* Select the listener before listen() returns, so its first accepted connection is
	 * captured; an existing entry (another rule, or 0 = excluded) is kept. */
	__u16 lport = e->local_port;
	__u8 *pm = bpf_map_lookup_elem(&selected_ports, &lport);
	if (pm && *pm) {
		__u32 tgid = pid_tgid >> 32;
		pid_set(tgid, *pm, BPF_NOEXIST);
	}
	output_now(ctx, e, sizeof(*e));
	return 0;
}

/* Entry of any syscall in syscalls.def; `kind` is a constant in each program. */
static __always_inline int on_enter(void *ctx, __u8 sys, __u8 kind, __u8 dir, long a0, long a1, long a2, long flags)
{
	if (kind == IO_CLOSE)
		return enter_close(ctx, (int)a0);
	if (kind == IO_LISTEN)
		return enter_listen((int)a0);
	return enter_call(sys, kind, dir, (int)a0, (__u64)a1, (__u64)a2, (__u64)flags);
}

/* `lp`: the program is a loop variant (copies through bpf_loop, takes the arguments from the
 * registers: its syscall has no entry program), a constant in each program. */
static __always_inline int on_exit(void *ctx, __u8 sys, __u8 kind, __u8 dir, int flags_arg, long ret, const int lp)
{
	if (kind == IO_LISTEN)
		return exit_listen(ctx, ret, lp);
	return exit_call(ctx, sys, kind, dir, flags_arg, ret, lp);
}

#endif
