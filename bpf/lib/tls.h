/* TLS plaintext through uprobes: OpenSSL/BoringSSL/GnuTLS (entry + uretprobe, nested-syscall
 * correlation) and Go crypto/tls (entry + uprobes on each RET, fd through struct offsets).
 * Design: docs/tls.md. Which program goes on which function: src/kernel/tls/discover.ts
 * (TlsProbe.program).
 *
 * Included by lib/syscalls.h after lib/copy.h: the socket syscall exit path calls
 * tls_note_socket() once it knows the connection (a return of 1: the syscall moves ciphertext of
 * an active TLS call, counted and never copied). Plaintext goes out as LAYER_TLS data events on
 * the connection's TLS-layer positions (conn_info.pos[LAYER_TLS][dir]), with
 * DATA_FLAG_TLS_INFERRED when the connection was inferred from the thread's last socket, or with
 * conn_id 0 when no connection is known (never dropped). */
#ifndef EBPF_TRACER_TLS_H
#define EBPF_TRACER_TLS_H


/* Which function an entry record belongs to, so a library whose SSL_write calls SSL_write_ex
 * internally keeps the outer call (entries use BPF_NOEXIST). */
enum { TLS_FN_READ = 1, TLS_FN_WRITE, TLS_FN_READ_EX, TLS_FN_WRITE_EX, TLS_FN_GO_READ, TLS_FN_GO_WRITE };

struct tls_call {
	__u64 ssl;     /* SSL* / gnutls_session_t / *tls.Conn */
	__u64 buf;     /* plaintext buffer (user space) */
	__u64 lenp;    /* _ex: size_t *readbytes / *written; Go writes: len(b); else 0 */
	__u64 sk;      /* struct sock * seen by a nested socket syscall; 0 = none yet */
	__u8 fn;       /* TLS_FN_*; 0 = no call in flight (a thread's slot between calls) */
	__u8 dir;      /* DIR_* */
	__u8 mode;     /* Go: the process's MODE_* at entry (C calls read it at return) */
	__u8 _pad[5];
};

struct tls_ssl_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ssl;
};

/* A Go call's record: by goroutine (goid), or, for Reads probed at their copy
 * (GO_F_READ_AT_COPY), by the address of b with GO_KEY_BUF set (user addresses never have bit 63):
 * the copy site has that address in a register, not the goroutine's id, and a buffer key stays
 * the same for a connection's Reads (one record per buffer, rewritten per call) where a
 * goroutine key would leave a record behind for every goroutine whose Read never copied (net/http
 * starts a background Read per request and aborts it). */
struct tls_go_key {
	__u32 tgid;
	__u32 _pad;
	__u64 goid;
};
#define GO_KEY_BUF (1ULL << 63)

/* Per Go binary, written by user space per tgid (src/kernel/tls/go-offsets.ts, 32 bytes). */
struct go_tls_offsets {
	__u32 tls_conn_conn;
	__u32 iface_data;
	__u32 tcp_conn_conn;
	__u32 conn_fd;
	__u32 netfd_pfd;
	__u32 pollfd_sysfd;
	__u32 g_goid;
	__u32 flags;   /* GO_F_* */
};
_Static_assert(sizeof(struct go_tls_offsets) == 32, "go_tls_offsets layout");
/* go_tls_offsets.flags (src/kernel/tls/go-offsets.ts): g in x28 (arm64) instead of r14; the entry
 * probes sit on the functions' stack-check branch (src/kernel/tls/probe-site.ts goStackCheck). */
#define GO_F_ARM64 1
#define GO_F_ENTRY_AT_BRANCH 2
/* (*Conn).Read is probed where it copies its plaintext out (go_copy), not at its RETs */
#define GO_F_READ_AT_COPY 4


/* A thread's TLS state (C libraries): its call in flight, kept between calls with fn = 0 (the
 * entry and return probes write it in place instead of inserting and deleting an element per
 * SSL_read/SSL_write), and the memory-BIO fallback. */
struct tls_thread {
	struct tls_call call;
	__u64 last_sk;    /* the TLS socket the thread last did socket I/O on outside a TLS call; 0 = none */
	/* Where call.sk came from (TLS_SK_*), and with it: */
	__u64 conn_id;    /* TLS_SK_CACHED: the connection the cache saw on that socket */
	__u64 pending[2]; /* ciphertext bytes per DIR_* that nested syscalls moved on call.sk, added to
			   * its connection at the call's return (tls_exit): 64 bits, as one SSL_write_ex
			   * may move more than 4 GiB */
	__s32 fd;         /* the socket's fd: the cache's, or the nested syscall's that named it */
	__u8 sk_from;
	__u8 _pad[3];
};

/* tls_thread.sk_from: the call's socket not looked for yet; none known; the SSL*'s socket from
 * tls_ssl_sock (checked against its connection id at return); named by a nested syscall. */
enum { TLS_SK_UNTRIED = 0, TLS_SK_NONE, TLS_SK_CACHED, TLS_SK_NAMED };

/* Value of tls_ssl_sock: the socket an SSL* last used, its connection and fd. */
struct tls_sock_ref {
	__u64 sk;
	__u64 conn_id;
	__s32 fd;
	__u32 _pad;
};

/* Where struct tls_thread lives: in the task itself where the kernel allows it (load_cfg.task_storage:
 * a lookup through the task pointer, ~30 ns cheaper than hashing pid_tgid, bench/README.md, and
 * freed with the thread), else in an LRU hash by pid_tgid whose slots of exited threads age out.
 * Each kernel creates only the map it uses (src/kernel/tracer.ts). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_thread);
} tls_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct tls_thread);
} tls_threads SEC(".maps");

/* A zeroed struct tls_thread, never written: what a new tls_threads element is made from. From the
 * stack it would not fit the syscall exit programs (5.10 counts their stack and their deepest
 * subprogram's together: test/kernel/bpf-cfg.test.ts). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tls_thread);
} tls_thread_zero SEC(".maps");

#define TLS_THREAD_CREATE 1

/* The current thread's TLS state; with TLS_THREAD_CREATE a zeroed one is made when it has none.
 * NULL: none (or none could be made: the caller counts what that loses). */
static __always_inline struct tls_thread *tls_thread(__u64 pid_tgid, const int create)
{
	if (load_cfg.task_storage)
		return bpf_task_storage_get(&tls_task, bpf_get_current_task_btf(), 0,
					    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	struct tls_thread *t = bpf_map_lookup_elem(&tls_threads, &pid_tgid);
	if (t || !create)
		return t;
	__u32 zero = 0;
	struct tls_thread *z = bpf_map_lookup_elem(&tls_thread_zero, &zero);
	if (!z)
		return NULL;
	bpf_map_update_elem(&tls_threads, &pid_tgid, z, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tls_threads, &pid_tgid);
}

/* Go calls in flight, per goroutine. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_go_key);
	__type(value, struct tls_call);
} tls_go_calls SEC(".maps");

/* The socket an SSL* last used: buffered reads make no syscall, and the socket syscalls of a call
 * on it need no fd and connection lookups (tls_nested_known). Forgotten at SSL_free. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tls_ssl_key);
	__type(value, struct tls_sock_ref);
} tls_ssl_sock SEC(".maps");

/* tgid → 1 for processes whose TLS is captured (selected, uprobes enabled, no exclusion rule),
 * written by user space: uprobe entries of other processes stop here, and the socket hook costs
 * other processes one lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tls_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, struct go_tls_offsets);
} go_tls_offsets SEC(".maps");

/* Whether the TLS probes act for process tgid: its PID_TLS bit, or tls_procs beyond pid_bytes.
 * *bp gets its pid byte (NULL beyond the array). */
static __always_inline int tls_proc_at(__u32 tgid, __u8 **bp)
{
	__u8 *b = pid_byte_of(tgid);
	*bp = b;
	if (b)
		return *b & PID_TLS;
	return bpf_map_lookup_elem(&tls_procs, &tgid) != NULL;
}

static __always_inline int tls_proc(__u32 tgid)
{
	__u8 *b;
	return tls_proc_at(tgid, &b);
}

/* Puts tgid in tls_procs, and its PID_TLS bit. */
static __always_inline void tls_proc_set(__u32 tgid)
{
	__u8 one = 1;
	if (bpf_map_update_elem(&tls_procs, &tgid, &one, BPF_ANY) != 0)
		return;
	__u8 *b = pid_byte_of(tgid);
	if (b)
		*b |= PID_TLS;
}


/* ---- library loads after start (Python maps libssl at `import ssl`) -------------------------- */

#define PROT_EXEC 0x4

struct tls_file_key {
	__u32 dev;
	__u32 _pad;
	__u64 ino;
};

/* Files user space has analysed: value 0 = not TLS (stay quiet), 1 = TLS stack (report each
 * process that maps it, for its coverage and tls_procs). Absent = unknown (report). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_file_key);
	__type(value, __u8);
} tls_known_files SEC(".maps");

/* Key 0: 1 when uprobes are enabled (config enable_uprobes); 0 keeps the mmap probe quiet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tls_enabled SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_mmap")
int tls_enter_mmap(struct trace_event_raw_sys_enter *ctx)
{
	/* mmap(addr, len, prot, flags, fd, off): anonymous and non-executable maps leave at once. */
	int fd = (int)ctx->args[4];
	if (!(ctx->args[2] & PROT_EXEC) || fd < 0)
		return 0;
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&tls_enabled, &zero);
	if (!on || !*on)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!tls_proc(pid_tgid >> 32))
		return 0;
	struct file *f = file_of(fd);
	if (!f)
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	struct tls_file_key key = { .dev = BPF_CORE_READ(inode, i_sb, s_dev), .ino = BPF_CORE_READ(inode, i_ino) };
	__u8 *known = bpf_map_lookup_elem(&tls_known_files, &key);
	if (known && *known == 0)
		return 0;
	struct tls_map_event e = {};
	fill_header(&e.hdr, EV_TLS_MAP_EXEC, pid_tgid);
	e.ino = key.ino;
	e.dev = key.dev;
	e.fd = fd;
	output_now(ctx, &e, sizeof(e));
	return 0;
}

/* ---- nested-syscall hook (called from the socket syscall exit path) --------------------------- */

/* Loads the socket the call's SSL* last used (tls_ssl_sock) into the thread's call: at most once
 * per call, by its first socket syscall that moved bytes or by its return. */
static __noinline void tls_load_cached(struct tls_thread *t, __u32 tgid)
{
	struct tls_ssl_key key = { .tgid = tgid, .ssl = t->call.ssl };
	struct tls_sock_ref *r = bpf_map_lookup_elem(&tls_ssl_sock, &key);
	if (!r) {
		t->sk_from = TLS_SK_NONE;
		return;
	}
	t->call.sk = r->sk;
	t->conn_id = r->conn_id;
	t->fd = r->fd;
	t->sk_from = TLS_SK_CACHED;
}

/* Adds ciphertext bytes moved inside a TLS call to connection ci's socket-layer streams, as
 * socket_bytes() would have at each syscall (an ignored connection's streams stay put). */
static __always_inline void tls_apply_pending(struct conn_info *ci, __u64 recv, __u64 send)
{
	if (ci && ci->ignored)
		return;
	if (ci) {
		if (recv)
			__sync_fetch_and_add(&ci->pos[LAYER_SOCKET][DIR_RECV], recv);
		if (send)
			__sync_fetch_and_add(&ci->pos[LAYER_SOCKET][DIR_SEND], send);
	}
	count(CNT_TLS_SKIPPED_BYTES, recv + send);
}

/* A socket syscall that moved bytes inside a TLS call, on the fd of the call's socket when that
 * is known: the socket the call's SSL* last used (TLS_SK_CACHED, checked against its connection
 * id at return) or the one an earlier syscall of this call named (TLS_SK_NAMED). Its bytes
 * (ciphertext) are kept on the call and reach the connection at the call's return: the syscall
 * needs no fd or connection lookup. Returns 1 when it took the bytes; *tp gets the thread's state
 * when it was looked up (for tls_note_socket). Other processes leave on
 * their PID_TLS bit, a probed process that has made no TLS call yet (a plain HTTP server in a
 * binary that carries OpenSSL) on PID_TLS_CALLS, both before any lookup. */
static __always_inline int tls_nested_known(__u64 pid_tgid, int fd, __u8 dir, __u64 total, struct tls_thread **tp)
{
	__u8 *b;
	*tp = NULL;
	if (!tls_proc_at(pid_tgid >> 32, &b) || (b && !(*b & PID_TLS_CALLS)))
		return 0;
	struct tls_thread *t = tls_thread(pid_tgid, 0);
	*tp = t;
	if (!t || !t->call.fn)
		return 0;
	if (t->sk_from == TLS_SK_UNTRIED)
		tls_load_cached(t, pid_tgid >> 32);
	if ((t->sk_from != TLS_SK_CACHED && t->sk_from != TLS_SK_NAMED) || t->fd != fd)
		return 0;
	t->pending[dir & 1] += total;
	return 1;
}

/* Records socket `sk` (connection `ci`, or NULL when untracked) on fd `fd` in the thread's active
 * TLS call, or, outside a TLS call and when it carries TLS records, as the thread's last socket.
 * `t`: the thread's state as tls_nested_known found it (NULL: none, or not looked up because no
 * TLS call can be in flight). Returns 1 when a TLS call is active on this thread: the syscall's payload is ciphertext. Both
 * are written in place when the thread already has state: a socket syscall of a TLS connection
 * costs lookups, not LRU updates.
 * The last socket is the memory-BIO fallback (tls_exit), and a memory BIO does its socket I/O
 * outside the TLS calls: a syscall inside one names its own call's socket, which that call's
 * SSL* keeps (tls_ssl_sock), so it is not recorded twice. */
static __noinline int tls_note_socket(__u64 pid_tgid, __u64 sk, struct conn_info *ci, int fd, struct tls_thread *t)
{
	if (!tls_proc(pid_tgid >> 32))
		return 0;
	if (t && t->call.fn) {
		/* bytes kept for the call's socket go to it before the call moves to another one */
		if (t->call.sk != sk && (t->pending[0] | t->pending[1])) {
			__u64 old = t->call.sk;
			tls_apply_pending(bpf_map_lookup_elem(&conns, &old), t->pending[DIR_RECV], t->pending[DIR_SEND]);
			t->pending[DIR_RECV] = 0;
			t->pending[DIR_SEND] = 0;
		}
		t->call.sk = sk;
		t->fd = fd;
		t->sk_from = TLS_SK_NAMED;
		return 1;
	}
	/* Only sockets that carry TLS records become the thread's last socket: a memory-BIO client
	 * that logs to a stdout socketpair between two requests must not have its next request
	 * inferred onto that socket. */
	if (!ci || !(ci->flags & CONN_F_TLS))
		return 0;
	if (!t)
		t = tls_thread(pid_tgid, TLS_THREAD_CREATE);
	if (t && t->last_sk != sk)
		t->last_sk = sk;
	return 0;
}

/* ---- emission ------------------------------------------------------------------------------ */

/* `total` plaintext bytes at user address `buf` moved in `dir`. With a connection: on its
 * TLS-layer stream. Without one: conn_id 0, position 0, no peers — user space still parses and
 * reports them. One emit_data() for both: the verifier goes through its copy loop once per
 * program, not once per case. */
static __always_inline void tls_emit(void *ctx, __u64 pid_tgid, struct conn_info *ci, __u64 buf, __u32 total, __u8 dir,
				     __u8 inferred, __s32 fd, const int lp)
{
	struct io_src src = { .buf = buf, .cnt = total, .kind = IO_BUF };
	__u64 id = 0, pos = 0;
	__u8 role = 0, flags = DATA_FLAG_TLS_INFERRED;
	if (ci) {
		__u32 cflags = 0;
		if (!stream_advance(ci, LAYER_TLS, dir, total, &pos, &cflags, lp))
			return;
		id = ci->id;
		role = ci->role;
		flags = inferred ? DATA_FLAG_TLS_INFERRED : 0;
	}
	emit_data(ctx, &src, id, role, pid_tgid, fd, SYS_COUNT, dir, LAYER_TLS, pos, total, flags, lp);
}

/* ---- C libraries: OpenSSL, BoringSSL, GnuTLS -------------------------------------------------- */

static __always_inline int tls_enter(__u8 fn, __u8 dir, __u64 ssl, __u64 buf, __u64 lenp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	/* Probes on a shared library fire in every process that maps it: only TLS-enabled ones
	 * (selected, not excluded by rule) go on. */
	__u8 *b;
	if (!tls_proc_at(pid_tgid >> 32, &b))
		return 0;
	/* before the call is recorded: its nested syscalls look for it from now on */
	if (b && !(*b & PID_TLS_CALLS))
		*b |= PID_TLS_CALLS;
	struct tls_thread *t = tls_thread(pid_tgid, TLS_THREAD_CREATE);
	if (!t) {
		count(CNT_TLS_CALL_UNTRACKED, 1);
		return 0;
	}
	/* A call in flight is the outer one (SSL_write → SSL_write_ex): it keeps the slot. */
	struct tls_call *slot = &t->call;
	if (slot->fn)
		return 0;
	slot->ssl = ssl;
	slot->buf = buf;
	slot->lenp = lenp;
	slot->sk = 0;
	slot->dir = dir;
	t->sk_from = TLS_SK_UNTRIED;
	t->pending[DIR_RECV] = 0;
	t->pending[DIR_SEND] = 0;
	slot->fn = fn;
	return 0;
}

/* The socket SSL* `ssl` of process `tgid` last used is `sk` (connection `conn_id`, fd `fd`):
 * written in place when known. */
static __always_inline void tls_remember_ssl_sock(__u32 tgid, __u64 ssl, __u64 sk, __u64 conn_id, __s32 fd)
{
	struct tls_ssl_key key = { .tgid = tgid, .ssl = ssl };
	struct tls_sock_ref *p = bpf_map_lookup_elem(&tls_ssl_sock, &key);
	if (!p) {
		struct tls_sock_ref r = { .sk = sk, .conn_id = conn_id, .fd = fd };
		bpf_map_update_elem(&tls_ssl_sock, &key, &r, BPF_ANY);
	} else if (p->sk != sk || p->conn_id != conn_id || p->fd != fd) {
		p->sk = sk;
		p->conn_id = conn_id;
		p->fd = fd;
	}
}

static __always_inline int tls_exit(void *ctx, __u8 fn, long ret, const int lp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct tls_thread *t = tls_thread(pid_tgid, 0);
	if (!t || t->call.fn != fn)
		return 0;
	struct tls_call *cp = &t->call;
	cp->fn = 0; /* the slot is free again; what follows reads its fields */
	/* SSL_read/SSL_write returning <= 0 (WANT_READ, WANT_WRITE, errors) and _ex returning 0
	 * moved no plaintext: out before any other work unless nested syscalls left ciphertext
	 * bytes for the connection (a WANT_READ after half a record). */
	__u64 prx = t->pending[DIR_RECV], ptx = t->pending[DIR_SEND];
	int moved = (int)ret > 0;
	if (!moved && !(prx | ptx))
		return 0;

	/* The call's socket: named by a nested syscall (exact), else the one its SSL* last used
	 * (exact: a buffered SSL_read makes no syscall), checked against the connection the cache
	 * saw there and looked up again by its fd when that connection has gone (the socket
	 * reused, the SSL* moved to a new connection on the same fd). */
	if (t->sk_from == TLS_SK_UNTRIED)
		tls_load_cached(t, tgid);
	__u8 from = t->sk_from;
	__u64 sk = cp->sk, last = t->last_sk;
	struct conn_info *ci = NULL;
	if (from == TLS_SK_CACHED || from == TLS_SK_NAMED) {
		ci = bpf_map_lookup_elem(&conns, &sk);
		if (from == TLS_SK_CACHED && (!ci || ci->id != t->conn_id)) {
			__u64 fdkey = fd_key(pid_tgid, t->fd);
			__u64 *skp = bpf_map_lookup_elem(&fds, &fdkey);
			ci = skp ? bpf_map_lookup_elem(&conns, skp) : NULL;
			sk = ci && skp ? *skp : 0;
			from = ci ? TLS_SK_NAMED : TLS_SK_NONE;
		}
		if (prx | ptx)
			tls_apply_pending(ci, prx, ptx);
	}
	if (!moved)
		return 0;

	__u64 bytes = 0;
	__u64 lenp = cp->lenp;
	if (lenp) {
		if ((int)ret != 1 || read_user(&bytes, sizeof(bytes), (void *)lenp) != 0)
			return 0;
	} else {
		bytes = (__u32)(int)ret;
	}
	if (bytes == 0 || bytes > 0x7fffffff)
		return 0;

	/* the mode is read here rather than at entry: calls that move nothing never need it */
	__u8 mode = selected_mode(tgid);
	if (!mode)
		return 0;
	__u8 inferred = 0;
	if (from == TLS_SK_NAMED) {
		tls_remember_ssl_sock(tgid, cp->ssl, sk, ci ? ci->id : 0, t->fd);
	} else if (from == TLS_SK_NONE && last) {
		/* a memory BIO: the thread's last TLS socket */
		sk = last;
		ci = bpf_map_lookup_elem(&conns, &sk);
		inferred = 1;
	}
	if (ci && (ci->ignored || !role_wanted(ci->role, mode)))
		return 0;
	tls_emit(ctx, pid_tgid, ci, cp->buf, (__u32)bytes, cp->dir, inferred, -1, lp);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_read_entry, void *ssl, void *buf)
{
	return tls_enter(TLS_FN_READ, DIR_RECV, (__u64)ssl, (__u64)buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_read_return, long ret)
{
	return tls_exit(ctx, TLS_FN_READ, ret, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_read_return_lp, long ret)
{
	return tls_exit(ctx, TLS_FN_READ, ret, 1);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_write_entry, void *ssl, void *buf)
{
	return tls_enter(TLS_FN_WRITE, DIR_SEND, (__u64)ssl, (__u64)buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_write_return, long ret)
{
	return tls_exit(ctx, TLS_FN_WRITE, ret, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_write_return_lp, long ret)
{
	return tls_exit(ctx, TLS_FN_WRITE, ret, 1);
}

/* SSL_read_ex(ssl, buf, num, size_t *readbytes) → 1 on success */
SEC("uprobe")
int BPF_KPROBE(tls_ssl_read_ex_entry, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return tls_enter(TLS_FN_READ_EX, DIR_RECV, (__u64)ssl, (__u64)buf, (__u64)readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_read_ex_return, long ret)
{
	return tls_exit(ctx, TLS_FN_READ_EX, ret, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_read_ex_return_lp, long ret)
{
	return tls_exit(ctx, TLS_FN_READ_EX, ret, 1);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_write_ex_entry, void *ssl, void *buf, __u64 num, void *written)
{
	return tls_enter(TLS_FN_WRITE_EX, DIR_SEND, (__u64)ssl, (__u64)buf, (__u64)written);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_write_ex_return, long ret)
{
	return tls_exit(ctx, TLS_FN_WRITE_EX, ret, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_write_ex_return_lp, long ret)
{
	return tls_exit(ctx, TLS_FN_WRITE_EX, ret, 1);
}

/* SSL_free / gnutls_deinit */
SEC("uprobe")
int BPF_KPROBE(tls_free_entry, void *ssl)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tls_ssl_key key = { .tgid = pid_tgid >> 32, .ssl = (__u64)ssl };
	bpf_map_delete_elem(&tls_ssl_sock, &key);
	return 0;
}

/* ---- Go crypto/tls ---------------------------------------------------------------------------- */

/* Go register ABI: g, the first argument registers, and the first result register. */
#if defined(__TARGET_ARCH_x86)
#define GO_G(r) ((r)->r14)
#define GO_ARG0(r) ((r)->ax)
#define GO_ARG1(r) ((r)->bx)
#define GO_ARG2(r) ((r)->cx)
#define GO_RET0(r) ((r)->ax)
/* JBE taken: CF or ZF */
#define GO_STACK_BRANCH_TAKEN(r) (((r)->flags & 0x41) != 0)
#elif defined(__TARGET_ARCH_arm64)
/* arm64's kernel pt_regs starts with the user_pt_regs the uprobe sees (as bpf_tracing.h reads it) */
#define GO_REGS(r) ((const struct user_pt_regs *)(r))
#define GO_G(r) (GO_REGS(r)->regs[28])
#define GO_ARG0(r) (GO_REGS(r)->regs[0])
#define GO_ARG1(r) (GO_REGS(r)->regs[1])
#define GO_ARG2(r) (GO_REGS(r)->regs[2])
#define GO_RET0(r) (GO_REGS(r)->regs[0])
/* B.LS taken: C clear or Z set (PSTATE bits 29 and 30) */
#define GO_STACK_BRANCH_TAKEN(r) ((GO_REGS(r)->pstate & (1ULL << 29)) == 0 || (GO_REGS(r)->pstate & (1ULL << 30)) != 0)
#endif

static __always_inline int go_key(struct pt_regs *regs, struct go_tls_offsets *o, struct tls_go_key *k)
{
	__u64 g = GO_G(regs);
	__u64 goid = 0;
	if (!g || read_user(&goid, sizeof(goid), (void *)(g + o->g_goid)) != 0)
		return -1;
	k->goid = goid;
	return 0;
}

/* *tls.Conn → Sysfd through the offsets; -1 when any pointer is unreadable. */
static __always_inline int go_conn_fd(__u64 conn, struct go_tls_offsets *o)
{
	__u64 p = 0;
	if (read_user(&p, sizeof(p), (void *)(conn + o->tls_conn_conn + o->iface_data)) != 0 || !p)
		return -1;
	if (read_user(&p, sizeof(p), (void *)(p + o->tcp_conn_conn + o->conn_fd)) != 0 || !p)
		return -1;
	__s64 fd = -1;
	if (read_user(&fd, sizeof(fd), (void *)(p + o->netfd_pfd + o->pollfd_sysfd)) != 0)
		return -1;
	return fd < 0 || fd > 0x7fffffff ? -1 : (int)fd;
}

/* The connection of *tls.Conn `conn` (tracked now if the socket predates the agent), or NULL;
 * NULL too when the process's mode does not want this connection's role (then *skip is set). */
static __always_inline struct conn_info *go_conn(struct pt_regs *regs, __u64 pid_tgid, struct go_tls_offsets *o, __u64 conn,
						 __u8 mode, int *fdp, int *skip)
{
	int fd = go_conn_fd(conn, o);
	*fdp = fd;
	*skip = 0;
	if (fd < 0)
		return NULL;
	struct conn_info *ci = conn_of_fd(fd_key(pid_tgid, fd));
	if (!ci) {
		struct socket *sock = stream_socket(fd);
		if (sock)
			ci = track(regs, pid_tgid, fd, sock, ROLE_UNKNOWN, SYS_COUNT, 0, 0);
	}
	if (ci && (ci->ignored || !role_wanted(ci->role, mode))) {
		*skip = 1;
		return NULL;
	}
	return ci;
}

/* Reads are emitted where Read copies its plaintext out (go_copy), or at a RET where that copy
 * was not found (the plaintext exists only then). Writes are emitted at entry:
 * Go's HTTP/1 client writes from one goroutine and reads from another, and a writer descheduled
 * between its socket write and its RET would otherwise put a request behind its own response in
 * the ring. At entry the bytes provably precede anything the peer answers. (*Conn).Write sends
 * all of b or fails, and a failed Write breaks the connection's write side for good: the RET
 * compares n with len(b) and counts a shortfall (CNT_TLS_GO_SHORT_WRITES), whose unsent tail was
 * already emitted. Reads and writes are keyed by goroutine (g is in a fixed register). */
static __always_inline int go_enter(struct pt_regs *regs, __u8 fn, __u8 dir, const int lp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u8 mode = selected_mode(tgid);
	if (!mode)
		return 0;
	struct go_tls_offsets *o = bpf_map_lookup_elem(&go_tls_offsets, &tgid);
	if (!o)
		return 0;
	/* On the stack check's branch (an instruction the kernel emulates: no single step), a hit
	 * whose branch goes to morestack is not the call's: the function comes back to its start
	 * once its stack has grown, and this probe fires again with the branch not taken. */
	if ((o->flags & GO_F_ENTRY_AT_BRANCH) && GO_STACK_BRANCH_TAKEN(regs))
		return 0;
	/* the argument registers, each read once at a fixed context offset (the verifier refuses a
	 * context pointer clang moved to share one load between branches) */
	__u64 conn = GO_ARG0(regs), buf = GO_ARG1(regs);
	asm volatile("" : "+r"(conn), "+r"(buf));
	struct tls_go_key k = { .tgid = tgid };
	if (fn == TLS_FN_GO_READ && (o->flags & GO_F_READ_AT_COPY))
		k.goid = buf | GO_KEY_BUF;
	else if (go_key(regs, o, &k) != 0)
		return 0;
	struct tls_call c = { .ssl = conn, .buf = buf, .fn = fn, .dir = dir, .mode = mode };
	if (fn == TLS_FN_GO_WRITE) {
		__u64 len = GO_ARG2(regs);
		if (len == 0 || len > 0x7fffffff)
			return 0;
		c.lenp = len; /* for the RET's shortfall check */
		int fd, skip;
		struct conn_info *ci = go_conn(regs, pid_tgid, o, c.ssl, mode, &fd, &skip);
		if (skip)
			return 0;
		tls_emit(regs, pid_tgid, ci, c.buf, (__u32)len, dir, 0, fd, lp);
	}
	/* A goroutine keeps its record between calls (fn = 0 when none is in flight), written in
	 * place: replacing an LRU element costs more than the lookup. One goroutine runs on one
	 * thread at a time, so nothing else writes this key meanwhile. */
	struct tls_call *slot = bpf_map_lookup_elem(&tls_go_calls, &k);
	if (slot)
		*slot = c;
	else
		bpf_map_update_elem(&tls_go_calls, &k, &c, BPF_ANY);
	return 0;
}

/* The `n` plaintext bytes at `buf` a Read of *tls.Conn `conn` returns, recorded with `mode` and
 * `dir` at its entry: on the connection of conn's fd, unless that connection's role is not wanted. */
static __always_inline void go_read_emit(struct pt_regs *regs, __u64 pid_tgid, struct go_tls_offsets *o, __u64 conn, __u8 mode,
					 __u8 dir, __u64 buf, __s64 n, const int lp)
{
	if (n <= 0 || n > 0x7fffffff)
		return;
	int fd, skip;
	struct conn_info *ci = go_conn(regs, pid_tgid, o, conn, mode, &fd, &skip);
	if (!skip)
		tls_emit(regs, pid_tgid, ci, buf, (__u32)n, dir, 0, fd, lp);
}

/* At a RET of (*Conn).Read/Write: n in the first result register. */
static __always_inline int go_ret(struct pt_regs *regs, __u8 fn, const int lp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct go_tls_offsets *o = bpf_map_lookup_elem(&go_tls_offsets, &tgid);
	if (!o)
		return 0;
	struct tls_go_key k = { .tgid = tgid };
	if (go_key(regs, o, &k) != 0)
		return 0;
	struct tls_call *cp = bpf_map_lookup_elem(&tls_go_calls, &k);
	if (!cp || cp->fn != fn)
		return 0;
	struct tls_call c = *cp;
	cp->fn = 0;
	__s64 n = (__s64)GO_RET0(regs);
	if (fn == TLS_FN_GO_WRITE) {
		if (n != (__s64)c.lenp)
			count(CNT_TLS_GO_SHORT_WRITES, 1);
		return 0;
	}
	go_read_emit(regs, pid_tgid, o, c.ssl, c.mode, c.dir, c.buf, n, lp);
	return 0;
}

SEC("uprobe")
int go_tls_read_entry(struct pt_regs *ctx)
{
	return go_enter(ctx, TLS_FN_GO_READ, DIR_RECV, 0);
}

SEC("uprobe")
int go_tls_read_ret(struct pt_regs *ctx)
{
	return go_ret(ctx, TLS_FN_GO_READ, 0);
}

SEC("uprobe")
int go_tls_read_ret_lp(struct pt_regs *ctx)
{
	return go_ret(ctx, TLS_FN_GO_READ, 1);
}

/* At the CALL of runtime.memmove in (*Conn).Read (src/kernel/tls/probe-site.ts goReadCopySite):
 * memmove(to, from, n) with to = b's first byte, from = the decrypted bytes and n = the count Read
 * returns, in the first three argument registers; the bytes are emitted from `from` before the
 * copy runs. A CALL is emulated (x86-64) or simulated (arm64 BL): ~1 µs a hit where a probe on a
 * RET is single-stepped (~10 µs). The Read's record is found by `to` (GO_KEY_BUF); a hit with no
 * Read in flight into that buffer (its entry came before the probes, or the site is not the
 * copy) is counted (CNT_TLS_GO_COPY_UNMATCHED) and emits nothing. One copy per call: the
 * record's fn is cleared, and the next Read into that buffer rewrites it. */
static __always_inline int go_copy(struct pt_regs *regs, const int lp)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct go_tls_offsets *o = bpf_map_lookup_elem(&go_tls_offsets, &tgid);
	if (!o)
		return 0;
	struct tls_go_key k = { .tgid = tgid, .goid = GO_ARG0(regs) | GO_KEY_BUF };
	struct tls_call *cp = bpf_map_lookup_elem(&tls_go_calls, &k);
	if (!cp || cp->fn != TLS_FN_GO_READ) {
		count(CNT_TLS_GO_COPY_UNMATCHED, 1);
		return 0;
	}
	cp->fn = 0;
	go_read_emit(regs, pid_tgid, o, cp->ssl, cp->mode, cp->dir, GO_ARG1(regs), (__s64)GO_ARG2(regs), lp);
	return 0;
}

SEC("uprobe")
int go_tls_read_copy(struct pt_regs *ctx)
{
	return go_copy(ctx, 0);
}

SEC("uprobe")
int go_tls_read_copy_lp(struct pt_regs *ctx)
{
	return go_copy(ctx, 1);
}

SEC("uprobe")
int go_tls_write_entry(struct pt_regs *ctx)
{
	return go_enter(ctx, TLS_FN_GO_WRITE, DIR_SEND, 0);
}

SEC("uprobe")
int go_tls_write_entry_lp(struct pt_regs *ctx)
{
	return go_enter(ctx, TLS_FN_GO_WRITE, DIR_SEND, 1);
}

SEC("uprobe")
int go_tls_write_ret(struct pt_regs *ctx)
{
	return go_ret(ctx, TLS_FN_GO_WRITE, 0);
}

#endif
