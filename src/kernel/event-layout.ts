/**
 * Mirror of bpf/include/events.h (and the syscall list bpf/include/syscalls.def): record types, enums and field offsets of every struct that crosses
 * the ring buffer or that user space writes into maps. test/kernel/layout.test.ts checks these
 * numbers against the BTF of the compiled object; change both files together.
 */
export const EV = { CONN_OPEN: 1, CONN_CLOSE: 2, DATA: 3, PROC_EXEC: 4, PROC_FORK: 5, PROC_EXIT: 6, LISTEN: 7, TLS_MAP_EXEC: 8 } as const;

/** The ids of bpf/include/syscalls.def (SYS_<ID> lowercased), in its order. */
export const SYSCALLS = [
  "accept", "accept4", "connect", "read", "write", "readv", "writev", "sendto", "recvfrom",
  "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "close", "listen", "sendfile",
] as const;
export const SYS_COUNT = SYSCALLS.length;

export const DIR_RECV = 0;
export const DIR_SEND = 1;
/** Layer of a data event's bytes: the socket (syscalls) or TLS plaintext (uprobes on a TLS library). */
export const LAYER_SOCKET = 0;
export const LAYER_TLS = 1;
export const LAYER_COUNT = 2;
/** Per-connection flags: NOCOPY is user space's (KernelTracer.setConnFlags), TLS the kernel's. */
export const CONN_F_NOCOPY = 1;
export const CONN_F_TLS = 2;
export const ROLE_UNKNOWN = 0;
export const ROLE_SERVER = 1;
export const ROLE_CLIENT = 2;
export const MODE_INGRESS = 1;
export const MODE_EGRESS = 2;
export const MODE_BOTH = 3;
export const DATA_CHUNK = 8192;
export const DATA_FLAG_LAST = 1;
/** The socket's first bytes were a TLS record: one zero-length event; its socket payload is never copied. */
export const DATA_FLAG_TLS = 2;
/** LAYER_TLS data whose connection was inferred (the thread's last socket: memory-BIO stacks), or
 * unknown (conn_id 0), rather than named by a socket syscall inside the TLS call. */
export const DATA_FLAG_TLS_INFERRED = 4;
export const COMM_LEN = 16;
export const PATH_LEN = 256;
export const ARGS_LEN = 256;

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** Offsets by struct, field → byte offset; `$size` is sizeof. */
export const LAYOUT = {
  event_header: { type: 0, tgid: 4, tid: 8, cpu: 12, ts_ns: 16, $size: 24 },
  conn_event: {
    hdr: 0, conn_id: 24, sent: 32, recv: 40, fd: 48, family: 52, local_port: 54, remote_port: 56,
    role: 58, syscall: 59, local_addr: 60, remote_addr: 76, comm: 92, flags: 108, tls_sent: 112, tls_recv: 120, $size: 128,
  },
  data_event: {
    hdr: 0, conn_id: 24, pos: 32, len: 40, skipped: 44, call_bytes: 48, fd: 52, dir: 56,
    syscall: 57, flags: 58, role: 59, layer: 60, _pad0: 61, data: 64, $size: 64 + DATA_CHUNK,
  },
  process_event: {
    hdr: 0, ppid: 24, mode: 28, _pad0: 29, path_len: 32, args_len: 36, cgroup_id: 40, comm: 48,
    path: 64, args: 320, $size: 576,
  },
  settings: {
    max_capture_per_call: 0, capture_all_mode: 4, notify_all_exec: 5, notify_listen: 6, use_perf: 7,
    has_cgroups: 8, pid_bytes: 9, has_conn_ctl: 10, _pad1: 11, $size: 12,
  },
  load_config: { task_storage: 0, _pad: 1, wake_check_bytes: 4, wake_at_bytes: 8, $size: 12 },
  comm_key: { comm: 0, $size: 16 },
  tls_map_event: { hdr: 0, ino: 24, dev: 32, fd: 36, $size: 40 },
} as const;

/** Indexes of the per-CPU `counters` map (enum in events.h). */
export const CNT = {
  EVENTS: 0,
  LOST: 1,
  TRUNCATED_BYTES: 2,
  PROBE_ENTRY_BASE: 3,
  PROBE_EXIT_BASE: 3 + SYS_COUNT,
  ACTIVE_FULL: 3 + 2 * SYS_COUNT,
  CONN_FULL: 4 + 2 * SYS_COUNT,
  TLS_SKIPPED_BYTES: 5 + 2 * SYS_COUNT,
  MMSG_OVERFLOW: 6 + 2 * SYS_COUNT,
  PEEK_SKIPPED: 7 + 2 * SYS_COUNT,
  SOCK_CLOSED: 8 + 2 * SYS_COUNT,
  NOCOPY_BYTES: 9 + 2 * SYS_COUNT,
  TLS_GO_SHORT_WRITES: 10 + 2 * SYS_COUNT,
  TLS_GO_COPY_UNMATCHED: 11 + 2 * SYS_COUNT,
  TLS_CALL_UNTRACKED: 12 + 2 * SYS_COUNT,
  COUNT: 13 + 2 * SYS_COUNT,
} as const;

/** BPF map value for `conns` (keyed by struct sock address; the `fds` map leads from
 * tgid << 32 | fd to that key); user space flips `ignored` after classifying a socket. `pos` is
 * u64[LAYER][DIR]. Flags user space wants go to the `conn_ctl` map (conn id → u32 CONN_F_*). */
export const CONN_INFO = { id: 0, pos: 8, tuple: 40, tgid: 48, flags: 52, role: 56, ignored: 57, _pad: 58, $size: 64 } as const;
