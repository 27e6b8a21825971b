/* Every map of the tracer, and the kernel-private values kept in them. User-space-visible
 * layouts (settings, conn_info, comm_key) live in include/events.h. */
#ifndef EBPF_TRACER_MAPS_H
#define EBPF_TRACER_MAPS_H

/* Load-time settings (include/events.h struct load_config): .rodata, frozen at load. */
const volatile struct load_config load_cfg = {};

/* Per CPU: ring-buffer bytes written since this CPU last looked at how much is unread
 * (ring_wake_due in lib/output.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} wake_acc SEC(".maps");

/* How the saved buffer argument of a syscall is shaped (syscalls.def IO_KIND column). */
enum {
	IO_BUF = 0,     /* (fd, buf, len) */
	IO_IOV = 1,     /* (fd, iovec *, iovcnt) */
	IO_MSG = 2,     /* (fd, msghdr *, flags) */
	IO_MMSG = 3,    /* (fd, mmsghdr *, vlen, flags): returns a message count; bytes are the msg_len sum */
	IO_ACCEPT = 4,
	IO_CONNECT = 5,
	IO_LISTEN = 6,
	IO_NOCOPY = 7,  /* sendfile: the bytes come from a file, there is no user buffer to copy */
	IO_CLOSE = 8,
};

/* A syscall of a selected process between entry and exit (the `active` map, by pid_tgid). */
struct active_call {
	__u64 buf;     /* buffer, iovec array, msghdr or mmsghdr pointer (user space) */
	__u64 cnt;     /* buffer length, iovec count or mmsg vlen */
	__u64 sk;      /* the fd's socket (key of conns) when it was tracked at entry, else 0 */
	__s32 fd;
	__u8 sys;      /* SYS_*; ACTIVE_FREE: no call in flight */
	__u8 kind;     /* IO_* */
	__u8 dir;      /* DIR_* */
	__u8 mode;     /* the process's MODE_* at entry */
};
#define ACTIVE_FREE 0xff

/* Progress of one copy walk (copy.h). It lives in the per-CPU scratch value rather than in
 * registers: the verifier treats values loaded from a map as unknown scalars, so every loop
 * iteration starts from the same abstract state and the walk verifies in a few thousand
 * instructions instead of exploding into one path per combination of ranges. base/seg_rem and
 * iov/iovcnt are laid out as struct iovec and as a msghdr's msg_iov/msg_iovlen: one user read
 * fills a pair (copy.h, READ_PAIR). */
struct walk {
	__u64 base;      /* user address of the next byte in the current segment */
	__u64 seg_rem;   /* bytes left in the current segment */
	__u64 iov;       /* user address of the current message's iovec array */
	__u64 iovcnt;
	__u64 chunk_pos; /* stream position of data[0] of the chunk being filled */
	__u64 msgvec;    /* mmsghdr array (IO_MMSG), else 0 */
	__u32 msg_idx;   /* next mmsghdr to load */
	__u32 msg_cnt;   /* messages the call moved */
	__u32 msg_rem;   /* bytes of the current message not yet walked */
	__u32 iov_idx;
	__u32 off;       /* bytes staged in the current chunk */
	__u32 done;      /* bytes copied for this call */
	__u32 want;      /* bytes to copy for this call: min(moved, cap) */
	__u32 _pad;
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

/* The pid filter again, as one byte per tgid for tgids below the kernel's pid_max at load
 * (PID_PAGE of them per element): PID_SET | mode where selected_pids has an entry (mode 0 =
 * excluded), and PID_TLS where tls_procs has one. The kernel reads this instead of hashing the
 * tgid on every syscall of every process; selected_pids stays the record user space reads, and
 * the filter for tgids beyond the array (pid_max raised after load). Both sides write single
 * bytes (user space through a shared mapping), so neither write loses the other's. Where arrays
 * cannot be mapped (before 5.5) settings.pid_bytes is 0 and the kernel uses selected_pids alone.
 * A process's exit clears its whole byte. */
#define PID_PAGE 4096
#define PID_SET 0x80
#define PID_TLS 0x40 /* the process is in tls_procs (lib/tls.h), kept apart from PID_SET | mode */
/* Set by the kernel at a TLS call's entry (tls_enter): until then no TLS call can be in flight in
 * the process, and its socket syscalls skip the per-thread TLS lookup (tls_note_socket). Kept with
 * PID_TLS by every writer; lost only to a write racing it, which the next TLS entry repairs. */
#define PID_TLS_CALLS 0x20
struct pid_page {
	__u8 b[PID_PAGE];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 8); /* user space: pid_max / PID_PAGE, rounded up */
	__type(key, __u32);
	__type(value, struct pid_page);
} pid_bytes SEC(".maps");

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
	__type(key, __u64);   /* fd_key(): tgid << 32 | fd */
	__type(value, __u64); /* struct sock address: key of conns */
} fds SEC(".maps");

/* CONN_F_* that user space wants on a connection, by conn id. A separate map because a user-space
 * update of a conns value replaces the element and would lose the positions the kernel advances
 * meanwhile. LRU: an entry for a connection that ended before user space wrote it ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* conn id */
	__type(value, __u32); /* CONN_F_* */
} conn_ctl SEC(".maps");

/* One slot per thread of a selected process, kept between calls (sys = ACTIVE_FREE): entry and
 * exit write it in place instead of inserting and deleting an element per syscall. Slots of
 * threads that exited age out by LRU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
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

/* Connection records are built here: on the stack they would crowd out the payload path's
 * locals within the 512-byte limit. Programs of one CPU do not nest (tracepoints and kprobes
 * skip a program while another runs on that CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn_event);
} conn_scratch SEC(".maps");

#endif
