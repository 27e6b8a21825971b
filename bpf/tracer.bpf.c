// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* ebpf-tracer kernel side: follows socket syscalls of selected processes and streams their
 * connection lifecycle and payload bytes to user space through one BPF ring buffer.
 *
 * Cost model: every probe first looks up the calling tgid (and cgroup) in the filter maps and
 * returns at once for unselected processes. Only selected processes pay for the fd → socket
 * check, and only sockets of type SOCK_STREAM produce events.
 *
 * One object, built from: include/events.h (the ABI), include/syscalls.def (the syscall list),
 * lib/maps.h, lib/output.h (records, counters, filter), lib/conn.h (fd key, sockets,
 * open/close), lib/copy.h (payload walk and the emit path a uprobe can reuse), lib/syscalls.h
 * (entry/exit pairing), lib/tls.h (uprobes on TLS libraries: plaintext as the TLS layer). */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#include "vmlinux.h"
#pragma clang diagnostic pop
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "lib/syscalls.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* ---- syscall tracepoints ------------------------------------------------------------------ */

/* The flags argument of a syscall (FLAGS_ARG column), or 0 where it has none. */
#define FLAGS_OF(i, a2, a3) ((i) == 2 ? (long)(a2) : (i) == 3 ? (long)(a3) : 0)

/* Each exit twice: the plain program, and its loop variant (`_lp`: copies through bpf_loop,
 * 5.17+) that user space loads instead where the kernel has bpf_loop and the ring buffer is in
 * use (src/kernel/attach-plan.ts). A kernel without bpf_loop never loads a variant: 5.10 rejects
 * a program that names a callback even in a branch it would never take. */
#define TP_EXIT_exit(ID, probe, KIND, DIR, FLAGS_ARG)                                              \
	SEC("tracepoint/syscalls/sys_exit_" #probe)                                                \
	int tp_exit_##probe(struct trace_event_raw_sys_exit *ctx)                                  \
	{                                                                                          \
		return on_exit(ctx, SYS_##ID, KIND, DIR, FLAGS_ARG, ctx->ret, 0);                  \
	}                                                                                          \
	SEC("tracepoint/syscalls/sys_exit_" #probe)                                                \
	int tp_exit_##probe##_lp(struct trace_event_raw_sys_exit *ctx)                             \
	{                                                                                          \
		return on_exit(ctx, SYS_##ID, KIND, DIR, FLAGS_ARG, ctx->ret, 1);                  \
	}
#define TP_EXIT_entry(ID, probe, KIND, DIR, FLAGS_ARG)

#define X(ID, probe, KIND, DIR, FLAGS_ARG, EXIT)                                                   \
	SEC("tracepoint/syscalls/sys_enter_" #probe)                                               \
	int tp_enter_##probe(struct trace_event_raw_sys_enter *ctx)                                \
	{                                                                                          \
		return on_enter(ctx, SYS_##ID, KIND, DIR, ctx->args[0], ctx->args[1], ctx->args[2], \
				FLAGS_OF(FLAGS_ARG, ctx->args[2], ctx->args[3]));                  \
	}                                                                                          \
	TP_EXIT_##EXIT(ID, probe, KIND, DIR, FLAGS_ARG)
#include "syscalls.def"
#undef X

/* ---- syscall kprobes (kernels without syscall tracepoints, or enable_tracepoints: false) -------
 * libbpf resolves "ksyscall/NAME" to the kernel's syscall entry (e.g. __x64_sys_NAME) and
 * BPF_KSYSCALL reads the user arguments through the syscall wrapper's pt_regs. User space loads
 * either these or the tracepoint programs, never both. */

#define KP_EXIT_exit(ID, probe, KIND, DIR, FLAGS_ARG)                                              \
	SEC("kretsyscall/" #probe)                                                                 \
	int BPF_KRETPROBE(kp_exit_##probe, long ret)                                               \
	{                                                                                          \
		return on_exit(ctx, SYS_##ID, KIND, DIR, FLAGS_ARG, ret, 0);                       \
	}                                                                                          \
	SEC("kretsyscall/" #probe)                                                                 \
	int BPF_KRETPROBE(kp_exit_##probe##_lp, long ret)                                          \
	{                                                                                          \
		return on_exit(ctx, SYS_##ID, KIND, DIR, FLAGS_ARG, ret, 1);                       \
	}
#define KP_EXIT_entry(ID, probe, KIND, DIR, FLAGS_ARG)

#define X(ID, probe, KIND, DIR, FLAGS_ARG, EXIT)                                                   \
	SEC("ksyscall/" #probe)                                                                    \
	int BPF_KSYSCALL(kp_enter_##probe, long a0, long a1, long a2, long a3)                     \
	{                                                                                          \
		return on_enter(ctx, SYS_##ID, KIND, DIR, a0, a1, a2, FLAGS_OF(FLAGS_ARG, a2, a3)); \
	}                                                                                          \
	KP_EXIT_##EXIT(ID, probe, KIND, DIR, FLAGS_ARG)
#include "syscalls.def"
#undef X

/* ---- socket lifecycle ------------------------------------------------------------------------
 * A process that exits or is killed never calls close(2): the kernel releases its sockets. A TCP
 * socket that reaches TCP_CLOSE (after the FIN exchange, on RST, or on a failed connect) ends its
 * connection here, with final positions, exactly as close(2) would. Optional: the tracepoint
 * exists since 4.16; without it such connections end by user space's idle sweep. Runs in any
 * context (often softirq), so the event carries the tgid stored with the connection. */

/* The leading fields of sock:inet_sock_set_state, stable since 4.16. */
struct inet_sock_set_state_args {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
};

SEC("tracepoint/sock/inet_sock_set_state")
int tp_sock_state(struct inet_sock_set_state_args *ctx)
{
	if (ctx->newstate != TCP_CLOSE)
		return 0;
	__u64 skey = (__u64)ctx->skaddr;
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &skey);
	if (!ci)
		return 0;
	count(CNT_SOCK_CLOSED, 1);
	__u64 tgid = ci->tgid;
	end_conn(ctx, skey, ci, tgid << 32 | tgid, -1, SYS_COUNT);
	return 0;
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
		pid_set(tgid, mode, BPF_ANY);
		selected = 1;
	} else {
		m = bpf_map_lookup_elem(&selected_pids, &tgid);
		if (m) {
			mode = *m;
			selected = 1;
		}
	}
	if (mode) {
		/* A selected process is TLS-probed from its first instruction (a client may make its
		 * first TLS call before user space has read this event); user space removes it again
		 * when an exclusion rule matches. */
		__u32 zero = 0;
		__u32 *on = bpf_map_lookup_elem(&tls_enabled, &zero);
		if (on && *on)
			tls_proc_set(tgid);
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
	output_now(ctx, e, sizeof(*e));
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
	pid_set(child_tgid, mode, BPF_ANY);
	/* TLS probing follows the fork too (nginx workers): user space learns of the child from the
	 * fork event, which may come after its first TLS call. */
	if (tls_proc(parent_tgid))
		tls_proc_set(child_tgid);
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
	pid_forget(tgid);
	if (!mode)
		return 0;
	struct process_event *e = proc_event(EV_PROC_EXIT, pid_tgid, mode);
	if (e)
		output(ctx, e, sizeof(*e) - PATH_LEN - ARGS_LEN);
	return 0;
}

