/* Every struct that crosses from the BPF program to user space, and the maps' key/value
 * layouts that user space writes. Fixed-width fields, explicit padding, the event type first.
 * src/kernel/event-layout.ts mirrors these offsets; test/kernel/layout.test.ts checks the two
 * against the compiled object's BTF. Change both together.
 *
 * Built with -Wpadded -Werror: any implicit padding is a build error. */
#ifndef EBPF_TRACER_EVENTS_H
#define EBPF_TRACER_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Event types (the first u32 of every record). */
enum {
	EV_CONN_OPEN = 1,  /* accept/connect succeeded, or a socket of a selected process was first seen */
	EV_CONN_CLOSE = 2, /* close() of a tracked socket; carries final stream positions */
	EV_DATA = 3,       /* a chunk of bytes read from / written to a tracked socket */
	EV_PROC_EXEC = 4,  /* a selected process (or, with notify_all_exec, any process) called execve */
	EV_PROC_FORK = 5,  /* a selected process forked a child, which inherits the selection */
	EV_PROC_EXIT = 6,  /* a selected process exited; its pid was removed from the filter */
	EV_LISTEN = 7,     /* with notify_listen: a process (any) started listening; conn_event with the local port */
	EV_TLS_MAP_EXEC = 8, /* a TLS-probed process mapped a file executable that user space has not classified */
};

/* Syscall ids used for probe stats and in data events, from syscalls.def. Order is the stats array order. */
enum {
#define X(id, ...) SYS_##id,
#include "syscalls.def"
#undef X
	SYS_COUNT,
};

/* Directions of data: bytes the process received from the socket, or sent to it. */
enum { DIR_RECV = 0, DIR_SEND = 1 };

/* Layer of the bytes of a data event: the socket itself (syscalls), or the plaintext of a TLS
 * library on that socket (uprobes). Each layer has its own stream positions per direction. */
enum { LAYER_SOCKET = 0, LAYER_TLS = 1, LAYER_COUNT = 2 };

/* Per-connection flags (conn_info.flags, the conn_ctl map, conn_event.flags on close). */
enum {
	CONN_F_NOCOPY = 1, /* user space (conn_ctl): copy no payload, emit no data events; positions still advance */
	CONN_F_TLS = 2,    /* kernel: the socket's first bytes were a TLS record; socket payload is never copied */
};

/* Role of a connection, from the syscall that created it. */
enum { ROLE_UNKNOWN = 0, ROLE_SERVER = 1, ROLE_CLIENT = 2 };

/* Capture mode bits (pid and cgroup filter values). */
enum { MODE_INGRESS = 1, MODE_EGRESS = 2, MODE_BOTH = 3 };

/* Bytes of payload per data event. Bigger calls are split into several events. The BPF side
 * stages a chunk in a per-CPU buffer of twice this size (a per-CPU map value is limited to
 * 32 KiB), so that one bounded copy can always land in it. Must be a power of two. */
#define DATA_CHUNK 8192

#define DATA_FLAG_LAST 1      /* last chunk of this syscall: `skipped` is valid */
#define DATA_FLAG_TLS 2       /* the socket turned out to carry TLS: one zero-length event, bytes skipped */
#define DATA_FLAG_TLS_INFERRED 4 /* LAYER_TLS: the connection was inferred (thread's last socket), not exact */

#define COMM_LEN 16
#define PATH_LEN 256
#define ARGS_LEN 256

struct event_header {
	__u32 type;
	__u32 tgid;
	__u32 tid;
	__u32 cpu;
	__u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct event_header) == 24, "event_header layout");

/* EV_CONN_OPEN, EV_CONN_CLOSE and EV_LISTEN. Addresses are IPv6 or IPv4-mapped IPv6, network byte order;
 * ports are host byte order. For AF_UNIX both addresses are zero. */
struct conn_event {
	struct event_header hdr;
	__u64 conn_id;    /* unique for the life of the loaded program */
	__u64 sent;       /* on close: bytes sent on the connection; on open: 0 */
	__u64 recv;       /* on close: bytes received */
	__s32 fd;
	__u16 family;     /* AF_INET, AF_INET6, AF_UNIX */
	__u16 local_port;
	__u16 remote_port;
	__u8 role;        /* ROLE_* */
	__u8 syscall;     /* SYS_* that opened/closed it; SYS_COUNT when first seen on data */
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u8 comm[COMM_LEN];
	__u32 flags;      /* on close: CONN_F_* of the connection */
	__u64 tls_sent;   /* on close: plaintext bytes sent through the TLS layer */
	__u64 tls_recv;   /* on close: plaintext bytes received through the TLS layer */
};
_Static_assert(sizeof(struct conn_event) == 128, "conn_event layout");

/* EV_DATA. Only `len` bytes of data[] are sent. `pos` is the offset of data[0] in this
 * layer's and direction's byte stream; the kernel advances the stream by every byte the syscall moved, so
 * user space sees a gap when events were lost. On the last chunk of a call, `skipped` is the
 * number of bytes the call moved beyond what was copied (the per-call cap, or iovecs past the
 * walk limit). */
struct data_event {
	struct event_header hdr;
	__u64 conn_id;
	__u64 pos;
	__u32 len;
	__u32 skipped;
	__u32 call_bytes; /* bytes the whole syscall moved */
	__s32 fd;
	__u8 dir;         /* DIR_* */
	__u8 syscall;     /* SYS_* */
	__u8 flags;       /* DATA_FLAG_* */
	__u8 role;        /* ROLE_* of the connection */
	__u8 layer;       /* LAYER_* */
	__u8 _pad0[3];
	__u8 data[DATA_CHUNK];
};
_Static_assert(sizeof(struct data_event) == 64 + DATA_CHUNK, "data_event layout");
#define DATA_EVENT_HEADER 64

/* EV_PROC_EXEC, EV_PROC_FORK, EV_PROC_EXIT. For exec, `path` is the file passed to execve and
 * `args` the NUL-separated command line (both truncated to their size). For fork, `ppid` is the
 * parent tgid and the header's tgid the child. */
struct process_event {
	struct event_header hdr;
	__u32 ppid;
	__u8 mode;        /* MODE_* the process is captured with; 0 = not selected (notify_all_exec) */
	__u8 _pad0[3];
	__u32 path_len;
	__u32 args_len;
	__u64 cgroup_id;
	__u8 comm[COMM_LEN];
	__u8 path[PATH_LEN];
	__u8 args[ARGS_LEN];
};
_Static_assert(sizeof(struct process_event) == 48 + COMM_LEN + PATH_LEN + ARGS_LEN, "proc_event layout");

/* EV_TLS_MAP_EXEC: a selected process maps a file executable (late library load, e.g. Python's
 * `import ssl`) whose (dev, inode) is not in tls_known_files as "not TLS". */
struct tls_map_event {
	struct event_header hdr;
	__u64 ino;
	__u32 dev;   /* kernel dev_t (MKDEV: major << 20 | minor), as /proc/PID/maps parsing computes it */
	__s32 fd;    /* the mapped fd, open while the loader maps: /proc/PID/fd/FD reaches the file */
};
_Static_assert(sizeof(struct tls_map_event) == 40, "tls_map_event layout");

/* Value of the `settings` array map (key 0), written by user space after load. */
struct settings {
	__u32 max_capture_per_call; /* bytes copied per syscall at most */
	__u8 capture_all_mode;      /* MODE_* applied to every process not excluded; 0 = off */
	__u8 notify_all_exec;       /* 1: emit EV_PROC_EXEC for every exec, so user space can match rules */
	__u8 notify_listen;         /* 1: emit EV_LISTEN for every successful listen(), for port rules */
	__u8 use_perf;              /* 1: write events to the perf event array even if ring buffers exist */
	__u8 has_cgroups;           /* 1: selected_cgroups has entries (else unselected processes skip its lookup) */
	__u8 pid_bytes;             /* 1: the pid_bytes array mirrors selected_pids and is read first */
	__u8 has_conn_ctl;          /* 1: user space has written conn_ctl (else data events skip its lookup) */
	__u8 _pad1;
};
_Static_assert(sizeof(struct settings) == 12, "settings layout");

/* The object's read-only data: its one variable `load_cfg` (lib/maps.h), written by user space
 * before load (src/kernel/tracer.ts). The verifier reads these as constants, so a path one turns
 * off is never verified: it may call helpers and use maps the kernel lacks. */
struct load_config {
	__u8 task_storage;       /* 1: per-thread TLS state in task local storage (5.11+ with kernel BTF), else an LRU hash */
	__u8 _pad[3];
	__u32 wake_check_bytes;  /* ring buffer: a CPU looks at the ring's unread bytes after writing this many (0: never) */
	__u32 wake_at_bytes;     /* ...and forces a wakeup of the reader when at least this many are unread */
};
_Static_assert(sizeof(struct load_config) == 12, "load_config layout");

/* Key of the `exe_names` map: a process's comm (as set by execve, 15 chars + NUL), zero-padded. */
struct comm_key {
	__u8 comm[COMM_LEN];
};

/* Value of the `conns` map, keyed by struct sock address. One per connection, shared by every fd
 * that refers to the socket: dup'd fds (inetd-style servers read fd 0 and write fd 1) and fds
 * inherited across fork continue one byte stream. User space flips `ignored` after classifying
 * a socket; the other fields are the kernel's (flags it wants set go through conn_ctl, so that
 * no user-space write races the positions). */
struct conn_info {
	__u64 id;
	__u64 pos[LAYER_COUNT][2]; /* next stream offset per LAYER_*, DIR_* */
	__u64 tuple;  /* ports and remote address: tells a reused sock address from the same connection */
	__u32 tgid;   /* process that opened or first used it (close events from softirq context) */
	__u32 flags;  /* CONN_F_* the kernel set (CONN_F_TLS) */
	__u8 role;
	__u8 ignored; /* tracked only to stay quiet (mode excludes this role) */
	__u8 _pad[6];
};
_Static_assert(sizeof(struct conn_info) == 64, "conn_info layout");

/* Indexes of the per-CPU `counters` array. */
enum {
	CNT_EVENTS = 0,        /* records written to the ring */
	CNT_LOST,              /* records the ring had no room for */
	CNT_TRUNCATED_BYTES,   /* bytes moved by syscalls but not copied (cap, iovec walk limit) */
	CNT_PROBE_ENTRY_BASE,  /* SYS_COUNT entry counters follow, then SYS_COUNT exit counters */
	CNT_PROBE_EXIT_BASE = CNT_PROBE_ENTRY_BASE + SYS_COUNT,
	CNT_ACTIVE_FULL = CNT_PROBE_EXIT_BASE + SYS_COUNT, /* entry could not be stashed */
	CNT_CONN_FULL,         /* connection table had no room */
	CNT_TLS_SKIPPED_BYTES, /* socket bytes of TLS connections, counted and never copied */
	CNT_MMSG_OVERFLOW,     /* sendmmsg/recvmmsg returned more messages than the sum loop walks */
	CNT_PEEK_SKIPPED,      /* recv calls with MSG_PEEK, skipped (the real read follows) */
	CNT_SOCK_CLOSED,       /* connections ended by the socket reaching TCP_CLOSE, not by close(2) */
	CNT_NOCOPY_BYTES,      /* bytes of CONN_F_NOCOPY connections, counted and not copied */
	CNT_TLS_GO_SHORT_WRITES, /* Go (*tls.Conn).Write calls that sent less than the plaintext emitted at entry */
	CNT_TLS_GO_COPY_UNMATCHED, /* hits of Go's Read copy probe with no Read in flight into that buffer: nothing emitted */
	CNT_TLS_CALL_UNTRACKED, /* TLS calls (C libraries) whose entry got no per-thread slot: their plaintext is not emitted */
	CNT_COUNT,
};

#endif
