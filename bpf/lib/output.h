/* Counters, settings, the process filter, user memory reads and the one path records take to
 * user space. */
#ifndef EBPF_TRACER_OUTPUT_H
#define EBPF_TRACER_OUTPUT_H

#include "maps.h"

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

/* This tgid's byte in pid_bytes, or NULL where the kernel must hash (no settings, no array, or
 * a tgid beyond it). */
static __always_inline __u8 *pid_byte(struct settings *s, __u32 tgid)
{
	if (!s || !s->pid_bytes)
		return NULL;
	__u32 page = tgid / PID_PAGE;
	struct pid_page *p = bpf_map_lookup_elem(&pid_bytes, &page);
	return p ? &p->b[tgid & (PID_PAGE - 1)] : NULL;
}

static __always_inline __u8 *pid_byte_of(__u32 tgid)
{
	return pid_byte(settings(), tgid);
}

/* The capture mode of the current process: an explicit pid entry (which may be 0 = excluded)
 * wins, then its cgroup, then capture-all. 0 means "not captured". Every syscall of every
 * process on the host comes here: an unselected one costs two inlined array lookups (settings,
 * pid_bytes), no hashing and no helper call while no cgroup rule exists. */
static __always_inline __u8 selected_mode(__u32 tgid)
{
	struct settings *s = settings();
	if (!s)
		return 0;
	__u8 *b = pid_byte(s, tgid);
	if (b) {
		if (*b & PID_SET)
			return *b & (MODE_INGRESS | MODE_EGRESS);
	} else {
		__u8 *m = bpf_map_lookup_elem(&selected_pids, &tgid);
		if (m)
			return *m;
	}
	if (s->has_cgroups) {
		__u64 cg = bpf_get_current_cgroup_id();
		__u8 *m = bpf_map_lookup_elem(&selected_cgroups, &cg);
		if (m)
			return *m;
	}
	return s->capture_all_mode;
}

/* Gives tgid an entry in the pid filter (BPF_ANY, or BPF_NOEXIST to keep one it has); 0 when
 * written. */
static __always_inline long pid_set(__u32 tgid, __u8 mode, __u64 flags)
{
	long r = bpf_map_update_elem(&selected_pids, &tgid, &mode, flags);
	__u8 *b = r == 0 ? pid_byte_of(tgid) : NULL;
	if (b)
		*b = PID_SET | mode | (*b & (PID_TLS | PID_TLS_CALLS));
	return r;
}

static __always_inline void pid_forget(__u32 tgid)
{
	bpf_map_delete_elem(&selected_pids, &tgid);
	__u8 *b = pid_byte_of(tgid);
	if (b)
		*b = 0;
}

/* Whether the record about to be written should also wake the reader because the ring is filling:
 * a burst from idle can fill it long before the reader's next timed drain (its sleep is sized from
 * the rate it saw, up to 100 ms). Each CPU asks the ring how much is unread once per
 * load_cfg.wake_check_bytes it writes (a per-CPU sum: no helper call per record), and the answer
 * wakes the reader from load_cfg.wake_at_bytes up (src/kernel/tracer.ts sets both from the ring's
 * size). */
static __always_inline int ring_wake_due(__u64 size)
{
	if (!load_cfg.wake_check_bytes)
		return 0;
	__u32 zero = 0;
	__u64 *acc = bpf_map_lookup_elem(&wake_acc, &zero);
	if (!acc)
		return 0;
	*acc += size;
	if (*acc < load_cfg.wake_check_bytes)
		return 0;
	*acc = 0;
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= load_cfg.wake_at_bytes;
}

/* One record into the ring buffer; the helper's result. The reader drains the ring on a timer
 * whose period it sizes from the arrival rate (up to 100 ms, src/agent/poll-interval.ts); a
 * helper thread of it sleeps on the ring's fd (scripts/native/ring-wakeup.c, edge-triggered) and
 * has it drain at once when a record forces a wakeup: `wake` (output_now: the rare records user
 * space must act on within milliseconds) or ring_wake_due (the ring filling faster than the timer
 * expected). Every other record wakes no one: a wakeup per record cost ~8 µs on the traced
 * process, and a forced one per record whenever a quarter of the ring was unread cost 300-600 ns
 * more per copying call while the reader was behind (bench/README.md); ring_wake_due asks at most
 * once per 1/32 of the ring a CPU writes. */
static __always_inline long ringbuf_write(void *data, __u64 size, int wake)
{
	if (!wake)
		wake = ring_wake_due(size);
	return bpf_ringbuf_output(&events, data, size, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Writes one record to user space: the ring buffer when the kernel has one (decided at load by
 * CO-RE, so older kernels never see the ring-buffer helpers) and perf is not forced, else this
 * CPU's perf buffer (whose reader polls every few ms: no wakeups either way). */
static __always_inline void output_wake(void *ctx, void *data, __u64 size, const int wake)
{
	struct settings *s = settings();
	long r;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ringbuf_output) && !(s && s->use_perf))
		r = ringbuf_write(data, size, wake);
	else
		r = bpf_perf_event_output(ctx, &events_perf, BPF_F_CURRENT_CPU, data, size);
	count(r == 0 ? CNT_EVENTS : CNT_LOST, 1);
}

static __always_inline void output(void *ctx, void *data, __u64 size)
{
	output_wake(ctx, data, size, 0);
}

/* A record user space must act on at once: a process exec (selection, a new executable's TLS
 * probes), a listen() (port selection), an executable mapping (a TLS library to probe). */
static __always_inline void output_now(void *ctx, void *data, __u64 size)
{
	output_wake(ctx, data, size, 1);
}

/* output() for bpf_loop callbacks, which have no program context to give the perf helper: the
 * ring buffer only. The loop variants that call it are loaded only where the kernel has
 * bpf_loop (5.17+, so ring buffers too) and the ring buffer is in use. */
static __always_inline void output_rb(void *data, __u64 size)
{
	count(ringbuf_write(data, size, 0) == 0 ? CNT_EVENTS : CNT_LOST, 1);
}

static __always_inline void fill_header(struct event_header *h, __u32 type, __u64 pid_tgid)
{
	h->type = type;
	h->tgid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = bpf_ktime_get_ns();
}

#endif
