/* The payload path shared by every data source: advance a connection's stream in one layer and
 * direction, apply the connection's flags (no copy, TLS ciphertext), and copy what the per-call
 * cap allows into DATA_CHUNK-sized data events. Syscall exits call socket_bytes() with the shape
 * of their arguments; a uprobe on a TLS library calls stream_advance() and emit_data() with the
 * plaintext. */
#ifndef EBPF_TRACER_COPY_H
#define EBPF_TRACER_COPY_H

#include "conn.h"

/* Walk limits: one loop step either loads an iovec or mmsghdr, or copies into the staging chunk.
 * 64 steps carry a 144 KiB call (18 chunks) spread over up to ~40 iovecs. */
#define MAX_STEPS 64
#define MAX_IOV 32
#define DEFAULT_CAP (144 * 1024)

/* Where the bytes of one call are in user memory. */
struct io_src {
	__u64 buf;  /* buffer, iovec array, msghdr or mmsghdr array */
	__u64 cnt;  /* IO_BUF: length; IO_IOV: iovec count; IO_MMSG: messages moved */
	__u8 kind;  /* IO_BUF, IO_IOV, IO_MSG, IO_MMSG or IO_NOCOPY */
	__u8 _pad[7];
};

/* User-memory field reads straight into their destination: whole msghdr/mmsghdr/iovec copies
 * on the stack would push the exit programs past the 512-byte stack that 5.10 counts across the
 * program and its walk_step subprogram together. */
#define READ_FIELD(dst, addr, type, member) \
	read_user(dst, sizeof(*(dst)), (void *)((addr) + __builtin_offsetof(type, member)))

/* Two adjacent u64 fields of user memory (`first` and the one after it) into two adjacent u64
 * fields of `w`, in one read. */
#define READ_PAIR(dst, addr, type, first) \
	read_user(dst, 2 * sizeof(__u64), (void *)((addr) + __builtin_offsetof(type, first)))

_Static_assert(__builtin_offsetof(struct iovec, iov_len) == __builtin_offsetof(struct iovec, iov_base) + 8, "iovec pair");
_Static_assert(__builtin_offsetof(struct user_msghdr, msg_iovlen) == __builtin_offsetof(struct user_msghdr, msg_iov) + 8, "msghdr pair");
_Static_assert(__builtin_offsetof(struct walk, seg_rem) == __builtin_offsetof(struct walk, base) + 8, "walk pair base/seg_rem");
_Static_assert(__builtin_offsetof(struct walk, iovcnt) == __builtin_offsetof(struct walk, iov) + 8, "walk pair iov/iovcnt");

/* Address and length of the first buffer segment of `src`; 0 when there is none. */
static __always_inline __u64 first_segment(const struct io_src *src, __u64 *len)
{
	*len = 0;
	if (src->kind == IO_BUF) {
		*len = src->cnt;
		return src->buf;
	}
	__u64 iov = src->buf, iovlen = 1;
	if (src->kind == IO_MSG || src->kind == IO_MMSG) {
		/* an mmsghdr starts with its msghdr */
		if (READ_FIELD(&iov, src->buf, struct user_msghdr, msg_iov) != 0 ||
		    READ_FIELD(&iovlen, src->buf, struct user_msghdr, msg_iovlen) != 0)
			return 0;
	} else if (src->kind != IO_IOV) {
		return 0;
	}
	__u64 base = 0;
	if (iovlen == 0 || READ_FIELD(&base, iov, struct iovec, iov_base) != 0 || READ_FIELD(len, iov, struct iovec, iov_len) != 0)
		return 0;
	return base;
}

/* Whether the call's first bytes are a TLS record header: content type 20..23 (change cipher
 * spec, alert, handshake, application data), major version 3, minor 0..4 (SSL 3.0 to TLS 1.3
 * record versions). A new connection starts with a handshake record (22); the other types
 * catch a TLS connection first seen in the middle (a socket inherited or already open when the
 * process was selected). A connection first seen inside a record is not recognised. */
static __always_inline int looks_like_tls(const struct io_src *src, __u32 total)
{
	if (total < 3)
		return 0;
	__u64 len = 0;
	__u64 base = first_segment(src, &len);
	if (!base || len < 3)
		return 0;
	__u8 h[3] = {};
	if (read_user(h, sizeof(h), (void *)base) != 0)
		return 0;
	return h[0] >= 0x14 && h[0] <= 0x17 && h[1] == 0x03 && h[2] <= 0x04;
}

/* A step filled the staging chunk and more bytes follow: the chunk goes out (through output(),
 * or output_rb() from a bpf_loop callback) and the next one starts at its end. */
static __always_inline void flush_chunk(void *ctx, struct data_scratch *s, const int rb)
{
	struct walk *w = &s->w;
	s->ev.pos = w->chunk_pos;
	s->ev.len = DATA_CHUNK;
	if (rb)
		output_rb(&s->ev, sizeof(s->ev));
	else
		output(ctx, &s->ev, sizeof(s->ev));
	w->chunk_pos += DATA_CHUNK;
	w->off = 0;
}

/* One step of the copy walk: load the next mmsghdr or iovec, or copy the next piece of the
 * current segment into the staging chunk and emit the chunk when it is full. Returns 0 when
 * done. The walk only ever copies a prefix of the call's bytes, so positions stay exact.
 * A BPF subprogram, not inlined: then the walk loop is closed by a jump after the call. Inlined,
 * clang may let the step's last statement fall through into the loop head, which kernels before
 * 6.4 reject ("back-edge from insn", test/kernel/bpf-cfg.test.ts). */
static __always_inline int walk_step_do(void *ctx, struct data_scratch *s, const int rb)
{
	struct walk *w = &s->w;
	if (w->done >= w->want)
		return 0;
	if (w->seg_rem == 0) {
		if (w->msg_rem == 0) {
			/* the current message is complete: the next one (mmsg), else the end */
			if (!w->msgvec || w->msg_idx >= w->msg_cnt)
				return 0;
			__u64 m = w->msgvec + (__u64)w->msg_idx * sizeof(struct mmsghdr);
			if (READ_PAIR(&w->iov, m, struct mmsghdr, msg_hdr.msg_iov) != 0 ||
			    READ_FIELD(&w->msg_rem, m, struct mmsghdr, msg_len) != 0)
				return 0;
			w->msg_idx++;
			w->iov_idx = 0;
			return 1;
		}
		if (w->iov_idx >= w->iovcnt || w->iov_idx >= MAX_IOV)
			return 0;
		__u64 v = w->iov + (__u64)w->iov_idx * sizeof(struct iovec);
		w->iov_idx++;
		if (READ_PAIR(&w->base, v, struct iovec, iov_base) != 0)
			return 0;
		return 1;
	}
	__u32 off = w->off;
	__u64 n = w->want - w->done;
	if (n > w->seg_rem)
		n = w->seg_rem;
	if (n > w->msg_rem)
		n = w->msg_rem;
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
	w->msg_rem -= n;
	if (w->msg_rem == 0)
		w->seg_rem = 0; /* a message's bytes end inside its iovecs: go to the next message */
	if (w->off >= DATA_CHUNK && w->done < w->want)
		flush_chunk(ctx, s, rb);
	return 1;
}

static __noinline int walk_step(void *ctx, struct data_scratch *s)
{
	return walk_step_do(ctx, s, 0);
}

/* One step of copying one contiguous buffer (IO_BUF past one chunk): the next chunk, emitted when
 * more bytes follow. The walk's step would do, but its iovec and message branches make the
 * verifier go through four paths per step in every program that copies a buffer (TLS return
 * probes, read/write exits); this one has one. A subprogram for the reason walk_step is. */
static __always_inline int buf_step_do(void *ctx, struct data_scratch *s, const int rb)
{
	struct walk *w = &s->w;
	if (w->done >= w->want)
		return 0;
	__u64 n = w->want - w->done;
	if (n > DATA_CHUNK)
		n = DATA_CHUNK;
	asm volatile("" : "+r"(n));
	n &= 2 * DATA_CHUNK - 1;
	if (n == 0 || n > DATA_CHUNK)
		return 0;
	if (read_user(s->ev.data, n, (void *)(w->base + w->done)) != 0)
		return 0; /* unreadable user memory: the rest is reported as skipped */
	w->off = n;
	w->done += n;
	if (w->done < w->want)
		flush_chunk(ctx, s, rb);
	return 1;
}

static __noinline int buf_step(void *ctx, struct data_scratch *s)
{
	return buf_step_do(ctx, s, 0);
}

/* bpf_loop callbacks (0: go on, 1: stop). The loop variants of the copying programs run the
 * steps through bpf_loop, whose callback the verifier goes through once instead of once per
 * step of an unrolled loop: their load takes a fraction of the time. */
static long buf_step_cb(__u32 i, void *unused)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	return s && buf_step_do(NULL, s, 1) ? 0 : 1;
}

static long walk_step_cb(__u32 i, void *unused)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	return s && walk_step_do(NULL, s, 1) ? 0 : 1;
}

/* Up to MAX_STEPS steps until one returns 0: through bpf_loop and callback `cb` in a loop variant
 * (`lp`), else a bounded loop calling `step`. */
#define RUN_STEPS(lp, step, cb)                                 \
	do {                                                    \
		if (lp) {                                       \
			bpf_loop(MAX_STEPS, cb, NULL, 0);       \
		} else {                                        \
			for (int i = 0; i < MAX_STEPS; i++) {   \
				if (!(step))                    \
					break;                  \
			}                                       \
		}                                               \
	} while (0)

/* A writev/readv of at most FAST_IOV segments whose copied bytes fit one chunk (an HTTP
 * response head and body, most small calls): the iovec array in one user read, then one copy
 * per segment, no walk steps. Stops at the first unreadable segment: a prefix, as the walk. The
 * array is staged at the end of `spill`, past anything a chunk of at most DATA_CHUNK bytes
 * reaches. */
#define FAST_IOV 8
/* struct iovec as user space lays it out on LP64 (a UAPI layout: no CO-RE relocation needed) */
struct user_iov {
	__u64 base;
	__u64 len;
};
_Static_assert(sizeof(struct user_iov) == sizeof(struct iovec), "iovec layout");
static __always_inline void copy_iov_fast(struct data_scratch *s, __u64 iov, __u64 cnt)
{
	struct walk *w = &s->w;
	struct user_iov *v = (struct user_iov *)&s->spill[sizeof(s->spill) - FAST_IOV * sizeof(struct user_iov)];
	__u64 bytes = cnt * sizeof(struct user_iov);
	/* the bound must be checked on the register passed as the size: clang would otherwise
	 * test cnt - 1 in a copy, which 5.10's verifier does not relate to this one */
	asm volatile("" : "+r"(bytes));
	if (bytes == 0 || bytes > FAST_IOV * sizeof(struct user_iov))
		return;
	if (read_user(v, bytes, (void *)iov) != 0)
		return;
	__u32 want = w->want;
	__u32 off = 0;
	for (int i = 0; i < FAST_IOV; i++) {
		if ((__u64)i >= cnt || off >= want)
			break;
		__u64 n = v[i].len;
		if (n > want - off)
			n = want - off;
		asm volatile("" : "+r"(n));
		n &= 2 * DATA_CHUNK - 1;
		__u32 o = off;
		asm volatile("" : "+r"(o));
		o &= DATA_CHUNK - 1;
		if (n == 0)
			continue;
		if (read_user(&s->ev.data[o], n, (void *)v[i].base) != 0)
			break;
		off = o + n;
	}
	w->off = off;
	w->done = off;
}

/* Copies up to the per-call cap of the `total` bytes at stream position `pos` and emits them as
 * chunks. The last chunk carries DATA_FLAG_LAST | `flags` and the count of bytes not copied,
 * which CNT_TRUNCATED_BYTES counts too. With DATA_FLAG_TLS nothing is copied or counted here
 * (the caller counts ciphertext in CNT_TLS_SKIPPED_BYTES). */
static __always_inline void emit_data(void *ctx, const struct io_src *src, __u64 conn_id, __u8 role, __u64 pid_tgid, int fd,
				      __u8 sys, __u8 dir, __u8 layer, __u64 pos, __u32 total, __u8 flags, const int lp)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	struct settings *st = settings();
	__u32 cap = st && st->max_capture_per_call ? st->max_capture_per_call : DEFAULT_CAP;

	struct data_event *ev = &s->ev;
	fill_header(&ev->hdr, EV_DATA, pid_tgid);
	ev->conn_id = conn_id;
	ev->call_bytes = total;
	ev->fd = fd;
	ev->dir = dir;
	ev->syscall = sys;
	ev->role = role;
	ev->layer = layer;
	ev->flags = 0;
	ev->skipped = 0;
	ev->_pad0[0] = 0;
	ev->_pad0[1] = 0;
	ev->_pad0[2] = 0;

	struct walk *w = &s->w;
	if ((flags & DATA_FLAG_TLS) || src->kind == IO_NOCOPY) {
		/* nothing to copy: one header-only record saying how many bytes moved. Kept out of
		 * the walk's path, so an exit program whose kind is IO_NOCOPY and the TLS-detection
		 * branch of every exit carry no copy of the walk for the verifier to go through. */
		ev->pos = pos;
		ev->len = 0;
		ev->skipped = total;
		ev->flags = DATA_FLAG_LAST | flags;
		if (!(flags & DATA_FLAG_TLS))
			count(CNT_TRUNCATED_BYTES, total);
		output(ctx, ev, DATA_EVENT_HEADER);
		return;
	}
	w->want = total < cap ? total : cap;
	w->done = 0;
	w->off = 0;
	w->iov_idx = 0;
	w->chunk_pos = pos;
	w->base = 0;
	w->seg_rem = 0;
	w->iov = 0;
	w->iovcnt = 0;
	w->msgvec = 0;
	w->msg_idx = 0;
	w->msg_cnt = 0;
	w->msg_rem = total; /* one message, except for mmsg */
	if (src->kind == IO_BUF) {
		w->base = src->buf;
		w->seg_rem = total;
	} else if (src->kind == IO_IOV) {
		w->iov = src->buf;
		w->iovcnt = src->cnt;
	} else if (src->kind == IO_MSG) {
		if (READ_PAIR(&w->iov, src->buf, struct user_msghdr, msg_iov) != 0)
			w->want = 0;
	} else if (src->kind == IO_MMSG) {
		w->msgvec = src->buf;
		w->msg_cnt = src->cnt;
		w->msg_rem = 0;
	} else {
		w->want = 0;
	}
	if (src->kind == IO_BUF && w->want <= DATA_CHUNK) {
		/* one buffer that fits one chunk (every TLS record's plaintext, most small calls):
		 * a single copy, no walk */
		__u64 n = w->want;
		asm volatile("" : "+r"(n));
		n &= 2 * DATA_CHUNK - 1;
		if (n && read_user(ev->data, n, (void *)src->buf) == 0) {
			w->off = n;
			w->done = n;
		}
	} else if (src->kind == IO_BUF) {
		RUN_STEPS(lp, buf_step(ctx, s), buf_step_cb);
	} else if (src->kind == IO_IOV && w->want <= DATA_CHUNK && src->cnt && src->cnt <= FAST_IOV) {
		copy_iov_fast(s, src->buf, src->cnt);
	} else {
		RUN_STEPS(lp, walk_step(ctx, s), walk_step_cb);
	}
	__u32 off = w->off;
	__u32 done = w->done;
	if (off > DATA_CHUNK)
		off = DATA_CHUNK;
	ev->pos = w->chunk_pos;
	ev->len = off;
	ev->skipped = total - done;
	ev->flags = DATA_FLAG_LAST | flags;
	if (total > done && !(flags & DATA_FLAG_TLS))
		count(CNT_TRUNCATED_BYTES, total - done);
	__u64 size = DATA_EVENT_HEADER + (__u64)off;
	asm volatile("" : "+r"(size));
	size &= 2 * DATA_CHUNK - 1;
	output(ctx, ev, size);
}

/* Advances connection `ci`'s stream in (`layer`, `dir`) by `total` bytes; *pos gets their
 * position, *flags the connection's flags. Returns whether they may be copied: not when user
 * space set CONN_F_NOCOPY (counted; the close event carries the final positions) or, on the
 * socket layer, when the kernel already marked the connection TLS (ciphertext, counted before
 * the conn_ctl lookup: every socket syscall of a TLS connection comes here, also under NOCOPY).
 * Read, then add without fetching the old value: fetching atomics need 5.12+. Two threads
 * writing one socket at the same instant could then see the same position; their bytes
 * interleave on the wire anyway, so such a stream is not parseable either way. */
static __always_inline int stream_advance(struct conn_info *ci, __u8 layer, __u8 dir, __u32 total, __u64 *pos, __u32 *flags,
					  const int lp)
{
	__u64 *posp = &ci->pos[layer & 1][dir & 1];
	*pos = *posp;
	__sync_fetch_and_add(posp, (__u64)total);
	if (layer == LAYER_SOCKET && (ci->flags & CONN_F_TLS)) {
		count(CNT_TLS_SKIPPED_BYTES, total);
		return 0;
	}
	*flags = conn_flags(ci, lp);
	if (*flags & CONN_F_NOCOPY) {
		count(CNT_NOCOPY_BYTES, total);
		return 0;
	}
	return 1;
}

/* `total` bytes moved on the socket of connection `ci` in `dir` by the call described by `src`:
 * advances the socket-layer stream and emits what the connection's flags allow (stream_advance).
 * A TLS connection (CONN_F_TLS, or first bytes that are a TLS record): the ciphertext is
 * counted, never copied; the call that detects it emits one zero-length event with
 * DATA_FLAG_TLS, later calls emit nothing. `ciphertext`: the caller knows the bytes are TLS
 * records (a socket syscall made inside a probed TLS call), whatever their position. TLS
 * plaintext from uprobes takes stream_advance() on LAYER_TLS and emit_data() (tls_emit). */
static __always_inline void socket_bytes(void *ctx, const struct io_src *src, struct conn_info *ci, __u64 pid_tgid, int fd,
					 __u8 sys, __u8 dir, __u32 total, __u8 ciphertext, const int lp)
{
	__u64 pos = 0;
	__u32 flags = 0;
	if (!stream_advance(ci, LAYER_SOCKET, dir, total, &pos, &flags, lp))
		return;
	if (flags & CONN_F_TLS) {
		count(CNT_TLS_SKIPPED_BYTES, total);
		return;
	}
	if (ciphertext || (pos == 0 && looks_like_tls(src, total))) {
		ci->flags |= CONN_F_TLS; /* the kernel is this word's only writer */
		count(CNT_TLS_SKIPPED_BYTES, total);
		emit_data(ctx, src, ci->id, ci->role, pid_tgid, fd, sys, dir, LAYER_SOCKET, pos, total, DATA_FLAG_TLS, lp);
		return;
	}
	emit_data(ctx, src, ci->id, ci->role, pid_tgid, fd, sys, dir, LAYER_SOCKET, pos, total, 0, lp);
}

#endif
