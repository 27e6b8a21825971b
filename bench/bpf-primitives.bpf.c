// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* What the building blocks of the tracer's programs cost on this kernel, each alone in a program
 * on sys_enter_write (bench/bpf-primitives.c drives write(-7, buf, 16) and reads the kernel's
 * bpf_stats run time). Every program but p_empty leaves at once for other writes. Build and run:
 * see bench/bpf-primitives.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define MARK_FD -7

struct block {
	char b[4096];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct block);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct block);
} pid_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} ring SEC(".maps");

volatile __u64 sink;

#define MARKED(ctx) ((int)(ctx)->args[0] == MARK_FD)

/* This CPU's scratch block for a marked write, else NULL. */
static __always_inline struct block *marked_scratch(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	return MARKED(ctx) ? bpf_map_lookup_elem(&scratch, &zero) : NULL;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_empty(struct trace_event_raw_sys_enter *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_pid_tgid(struct trace_event_raw_sys_enter *ctx)
{
	if (MARKED(ctx))
		sink = bpf_get_current_pid_tgid();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_hash_miss(struct trace_event_raw_sys_enter *ctx)
{
	if (!MARKED(ctx))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 *m = bpf_map_lookup_elem(&pids, &tgid);
	if (m)
		sink = *m;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_pid_byte(struct trace_event_raw_sys_enter *ctx)
{
	if (!MARKED(ctx))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 page = (tgid / 4096) & 7;
	struct block *p = bpf_map_lookup_elem(&pid_bytes, &page);
	if (p)
		sink = p->b[tgid & 4095];
	return 0;
}

/* The tgid through the current task's BTF pointer: a helper call all the same (the verifier
 * does not inline bpf_get_current_task_btf on x86-64 6.18). */
SEC("tracepoint/syscalls/sys_enter_write")
int p_task_tgid(struct trace_event_raw_sys_enter *ctx)
{
	if (MARKED(ctx))
		sink = bpf_get_current_task_btf()->tgid;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_ktime(struct trace_event_raw_sys_enter *ctx)
{
	if (MARKED(ctx))
		sink = bpf_ktime_get_ns();
	return 0;
}

/* A user read of `n` bytes of the written buffer into the scratch block. */
#define READ_USER_PROG(name, n)                                             \
	SEC("tracepoint/syscalls/sys_enter_write")                          \
	int name(struct trace_event_raw_sys_enter *ctx)                     \
	{                                                                   \
		struct block *s = marked_scratch(ctx);                      \
		if (s)                                                      \
			bpf_probe_read_user(s->b, n, (void *)ctx->args[1]); \
		return 0;                                                   \
	}

READ_USER_PROG(p_read_user_16, 16)
READ_USER_PROG(p_read_user_256, 256)

/* The same reads into a plain array map's value: an array this large is vmalloc'd, where the
 * kernel's hardened-usercopy check on the destination stops at once (a per-CPU array's value
 * sits in the linear map, whose check looks up the destination's page). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct block);
} big_array SEC(".maps");

#define READ_USER_ARRAY_PROG(name, n)                                       \
	SEC("tracepoint/syscalls/sys_enter_write")                          \
	int name(struct trace_event_raw_sys_enter *ctx)                     \
	{                                                                   \
		if (!MARKED(ctx))                                           \
			return 0;                                           \
		__u32 cpu = bpf_get_smp_processor_id() & 63;                \
		struct block *s = bpf_map_lookup_elem(&big_array, &cpu);    \
		if (s)                                                      \
			bpf_probe_read_user(s->b, n, (void *)ctx->args[1]); \
		return 0;                                                   \
	}

READ_USER_ARRAY_PROG(p_read_user_16_array, 16)
READ_USER_ARRAY_PROG(p_read_user_256_array, 256)

/* Straight into a ring buffer reservation (vmalloc'd too), discarded. */
SEC("tracepoint/syscalls/sys_enter_write")
int p_read_user_16_ring(struct trace_event_raw_sys_enter *ctx)
{
	if (!MARKED(ctx))
		return 0;
	char *r = bpf_ringbuf_reserve(&ring, 256, 0);
	if (!r)
		return 0;
	bpf_probe_read_user(r, 16, (void *)ctx->args[1]);
	bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_read_user_stack(struct trace_event_raw_sys_enter *ctx)
{
	char b[16];
	if (!MARKED(ctx))
		return 0;
	bpf_probe_read_user(b, sizeof(b), (void *)ctx->args[1]);
	sink = b[3];
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_ringbuf_300(struct trace_event_raw_sys_enter *ctx)
{
	struct block *s = marked_scratch(ctx);
	if (s && bpf_ringbuf_output(&ring, s->b, 300, BPF_RB_NO_WAKEUP) != 0)
		sink = 1;
	return 0;
}

/* Per-thread state, as tls_calls keeps it: an LRU hash keyed by pid_tgid (a hit), against task
 * local storage (5.11+), which finds the thread's value through the task without hashing. */
struct thread_val {
	__u64 a, b, c, d, e;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct thread_val);
} by_thread SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_val);
} task_vals SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_write")
int p_lru_hit(struct trace_event_raw_sys_enter *ctx)
{
	if (!MARKED(ctx))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct thread_val *v = bpf_map_lookup_elem(&by_thread, &id);
	if (v)
		v->a++;
	else {
		struct thread_val z = {};
		bpf_map_update_elem(&by_thread, &id, &z, BPF_ANY);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int p_task_storage(struct trace_event_raw_sys_enter *ctx)
{
	if (!MARKED(ctx))
		return 0;
	struct thread_val *v = bpf_task_storage_get(&task_vals, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (v)
		v->a++;
	return 0;
}
