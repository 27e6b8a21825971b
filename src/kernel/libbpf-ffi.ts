/**
 * The only file that touches bun:ffi. It loads the libbpf shared object embedded in the binary
 * (from a memfd, so nothing is written to disk) and exposes the few libbpf and libc calls the
 * agent uses. Pointers never leave this file: callers get handles, fds, numbers and ArrayBuffers.
 *
 * Contract for callers: every function here may throw TracerError during setup; the map helpers
 * used on the hot path return 0 or a negative errno instead of throwing.
 */
import { dlopen, JSCallback, ptr, read, toArrayBuffer, type Pointer } from "bun:ffi";
import { TracerError } from "../errors.ts";

// Type names as string literals so bun:ffi's typings infer exact argument and return types.
const i32 = "i32", u32 = "u32", u64 = "u64", usize = "u64", P = "ptr", cstring = "cstring", bool = "bool", VOID = "void";
const i64 = () => "i64" as const;

const LIBC_SYMBOLS = {
  memfd_create: { args: [cstring, u32], returns: i32 },
  write: { args: [i32, P, usize], returns: i64() },
  close: { args: [i32], returns: i32 },
  mmap: { args: [P, usize, i32, i32, i32, i64()], returns: P },
  munmap: { args: [P, usize], returns: i32 },
  madvise: { args: [P, usize, i32], returns: i32 },
  sysconf: { args: [i32], returns: i64() },
  clock_gettime: { args: [i32, P], returns: i32 },
  // Variadic in C; integer arguments pass the same way on x86-64 and aarch64.
  syscall: { args: [i64(), P, i32, i32, i32, u64], returns: i64() },
  mount: { args: [cstring, cstring, cstring, u64, P], returns: i32 },
  __errno_location: { args: [], returns: P },
} as const;

const LIBBPF_SYMBOLS = {
  libbpf_version_string: { args: [], returns: cstring },
  libbpf_strerror: { args: [i32, P, usize], returns: i32 },
  libbpf_get_error: { args: [P], returns: i64() },
  libbpf_num_possible_cpus: { args: [], returns: i32 },
  bpf_object__open_mem: { args: [P, usize, P], returns: P },
  bpf_object__load: { args: [P], returns: i32 },
  bpf_object__close: { args: [P], returns: VOID },
  bpf_object__find_map_by_name: { args: [P, cstring], returns: P },
  bpf_object__find_program_by_name: { args: [P, cstring], returns: P },
  bpf_object__next_program: { args: [P, P], returns: P },
  bpf_program__name: { args: [P], returns: cstring },
  bpf_program__section_name: { args: [P], returns: cstring },
  bpf_program__set_autoload: { args: [P, bool], returns: i32 },
  bpf_program__attach_tracepoint: { args: [P, cstring, cstring], returns: P },
  bpf_program__attach_raw_tracepoint: { args: [P, cstring], returns: P },
  bpf_program__attach_kprobe: { args: [P, bool, cstring], returns: P },
  bpf_program__attach_uprobe: { args: [P, bool, i32, cstring, usize], returns: P },
  bpf_link__destroy: { args: [P], returns: i32 },
  bpf_link__fd: { args: [P], returns: i32 },
  bpf_program__fd: { args: [P], returns: i32 },
  bpf_obj_get_info_by_fd: { args: [i32, P, P], returns: i32 },
  bpf_program__attach_perf_event: { args: [P, i32], returns: P },
  bpf_map__fd: { args: [P], returns: i32 },
  bpf_map__set_max_entries: { args: [P, u32], returns: i32 },
  bpf_map__set_type: { args: [P, u32], returns: i32 },
  bpf_map__set_map_flags: { args: [P, u32], returns: i32 },
  bpf_map__set_key_size: { args: [P, u32], returns: i32 },
  bpf_map__set_value_size: { args: [P, u32], returns: i32 },
  bpf_map__set_autocreate: { args: [P, bool], returns: i32 },
  bpf_map__set_initial_value: { args: [P, P, u64], returns: i32 },
  libbpf_probe_bpf_map_type: { args: [u32, P], returns: i32 },
  libbpf_probe_bpf_helper: { args: [u32, u32, P], returns: i32 },
  perf_buffer__new_raw: { args: [i32, u64, P, P, P, P], returns: P },
  perf_buffer__consume: { args: [P], returns: i32 },
  perf_buffer__free: { args: [P], returns: VOID },
  bpf_map_update_elem: { args: [i32, P, P, u64], returns: i32 },
  bpf_map_lookup_elem: { args: [i32, P, P], returns: i32 },
  bpf_map_delete_elem: { args: [i32, P], returns: i32 },
  bpf_map_get_next_key: { args: [i32, P, P], returns: i32 },
  // the agent's own helpers linked into the same object (scripts/native/ring-wakeup.c)
  et_wakeup_open: { args: [i32, P], returns: i32 },
  et_wakeup_run: { args: [P], returns: P },
} as const;

/**
 * Layouts of the C structs this file packs by hand, as in the libbpf 1.1.2 and UAPI headers the
 * embedded libbpf is built from. test/kernel/ffi-layout.test.ts compiles a C program against
 * those headers and fails when any of these numbers differs.
 */
export const STRUCT_LAYOUT = {
  bpf_object_open_opts: { $size: 80, sz: 0, object_name: 8, btf_custom_path: 48 },
  perf_event_attr: { $size: 128, type: 0, size: 4, config: 8, sample_period: 16, sample_type: 24, wakeup_events: 48, config1: 56, config2: 64 },
  /** read only up to run_cnt (the kernel copies as much as the caller's length asks) */
  bpf_prog_info: { run_time_ns: 192, run_cnt: 200 },
} as const;

/**
 * C constants this file passes by value, checked against the headers with STRUCT_LAYOUT (on the
 * build machine's architecture). __NR_perf_event_open: x86-64 298; arm64 (asm-generic) 241.
 */
export const C_CONSTANTS = {
  PERF_TYPE_TRACEPOINT: 2,
  PERF_TYPE_SOFTWARE: 1,
  PERF_COUNT_SW_BPF_OUTPUT: 10,
  PERF_SAMPLE_RAW: 1024,
  PERF_RECORD_SAMPLE: 9,
  LIBBPF_PERF_EVENT_CONT: -2,
  PERF_FLAG_FD_CLOEXEC: 8,
  __NR_perf_event_open: process.arch === "arm64" ? 241 : 298,
  MFD_CLOEXEC: 1,
  _SC_PAGESIZE: 30,
  PROT_READ: 1,
  PROT_WRITE: 2,
  MAP_SHARED: 1,
  MADV_PAGEOUT: 21,
} as const;
const K = C_CONSTANTS;

type Libc = ReturnType<typeof dlopen<typeof LIBC_SYMBOLS>>["symbols"];
type Libbpf = ReturnType<typeof dlopen<typeof LIBBPF_SYMBOLS>>["symbols"];

let libc: Libc | undefined;
let libbpf: Libbpf | undefined;

function c(): Libc {
  if (!libc) {
    try {
      libc = dlopen("libc.so.6", LIBC_SYMBOLS).symbols;
    } catch (e) {
      throw new TracerError("DEPENDENCY", `cannot load the C library libc.so.6 (glibc is required): ${(e as Error).message}`);
    }
  }
  return libc;
}

function b(): Libbpf {
  if (!libbpf) throw new TracerError("INTERNAL", "libbpf used before loadLibbpf()");
  return libbpf;
}

function cstr(s: string): Buffer {
  return Buffer.from(s + "\0", "utf8");
}

function errno(): number {
  const p = c().__errno_location() as Pointer | null;
  return p ? new Int32Array(toArrayBuffer(p, 0, 4))[0]! : 0;
}

/**
 * Loads libbpf from the given shared-object bytes. The bytes go into a memfd and are dlopened
 * through /proc/self/fd, so the binary needs no libbpf on the host and writes no files. libelf
 * and zlib are linked into it (scripts/build-libbpf.sh), so it needs only glibc; a library the
 * loader still cannot find is reported by name.
 */
export function loadLibbpf(soBytes: Uint8Array): string {
  if (libbpf) return b().libbpf_version_string() as unknown as string;
  const fd = c().memfd_create(cstr("libbpf.so"), K.MFD_CLOEXEC);
  if (fd < 0) throw new TracerError("DEPENDENCY", `memfd_create failed (errno ${errno()})`);
  let off = 0;
  while (off < soBytes.length) {
    const chunk = soBytes.subarray(off);
    const n = Number(c().write(fd, ptr(chunk), chunk.length));
    if (n <= 0) throw new TracerError("DEPENDENCY", `writing libbpf to memfd failed (errno ${errno()})`);
    off += n;
  }
  try {
    libbpf = dlopen(`/proc/self/fd/${fd}`, LIBBPF_SYMBOLS).symbols;
  } catch (e) {
    const msg = (e as Error).message;
    const missing = /(lib[a-z0-9_+-]+\.so[.0-9]*)/.exec(msg.replace(/libbpf\.so/g, ""))?.[1];
    throw new TracerError(
      "DEPENDENCY",
      missing
        ? `missing host library ${missing} needed by the embedded libbpf (it should need only glibc: was the binary built with scripts/build-libbpf.sh?)`
        : `cannot load the embedded libbpf: ${msg}`,
    );
  }
  // The fd stays open: the mapping keeps the library alive, and the fd is close-on-exec.
  return b().libbpf_version_string() as unknown as string;
}

export function libbpfVersion(): string {
  return String(b().libbpf_version_string());
}

function strerror(err: number): string {
  const buf = new Uint8Array(256);
  b().libbpf_strerror(err, ptr(buf), buf.length);
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

export function numPossibleCpus(): number {
  return b().libbpf_num_possible_cpus();
}

export function pageSize(): number {
  return Number(c().sysconf(K._SC_PAGESIZE));
}

/**
 * madvise(MADV_PAGEOUT) over `length` bytes at `address` of this process (an address range
 * read from /proc/self/maps, page-aligned); returns 0 or errno (EINVAL before Linux 5.4).
 */
export function pageOut(address: number, length: number): number {
  return c().madvise(address as unknown as Pointer, length, K.MADV_PAGEOUT) === 0 ? 0 : errno();
}

/** mount(2) of a pseudo filesystem (tracefs, bpf); returns 0 or errno. */
export function mountFs(type: string, target: string): number {
  const r = c().mount(cstr(type), cstr(target), cstr(type), 0, null);
  return r === 0 ? 0 : errno();
}

const ts = new BigInt64Array(2);
/** clock_gettime(2) in ns: CLOCK_REALTIME = 0, CLOCK_MONOTONIC = 1 (what bpf_ktime_get_ns uses). */
export function clockNs(clock: 0 | 1): bigint {
  c().clock_gettime(clock, ptr(ts));
  return ts[0]! * 1_000_000_000n + ts[1]!;
}

function errOf(p: Pointer | null): number {
  const e = Number(b().libbpf_get_error(p));
  return e !== 0 ? e : p ? 0 : -errno() || -1;
}

/**
 * One attached BPF link. `program` and `point` (the attach point, e.g. "syscalls/sys_enter_read"
 * or "/usr/lib/libssl.so.3+0x3a0f0") name it in logs; the libbpf pointer stays in this file.
 */
export class Link {
  #p: Pointer | null;
  constructor(p: Pointer, readonly program: string, readonly point: string) {
    this.#p = p;
  }
  get attached(): boolean {
    return this.#p !== null;
  }
  /** The link's fd (a BPF link, or the perf event itself on kernels without perf links); -1 when detached. */
  get fd(): number {
    return this.#p ? b().bpf_link__fd(this.#p) : -1;
  }
  /** Hands the pointer over for destruction, exactly once. */
  take(): Pointer | null {
    const p = this.#p;
    this.#p = null;
    return p;
  }
}

/** A BPF object opened from bytes; holds the libbpf pointers privately. */
export class BpfObject {
  private readonly links = new Set<Link>();
  // Buffers referenced by libbpf must outlive the object.
  private keep: unknown[] = [];

  private constructor(private obj: Pointer) {}

  static open(bytes: Uint8Array, opts: { name: string; btfCustomPath?: string }): BpfObject {
    const L = STRUCT_LAYOUT.bpf_object_open_opts;
    const o = new ArrayBuffer(L.$size);
    const dv = new DataView(o);
    dv.setBigUint64(L.sz, BigInt(L.$size), true);
    const name = cstr(opts.name);
    dv.setBigUint64(L.object_name, BigInt(ptr(name)), true);
    const keep: unknown[] = [name, bytes, o];
    if (opts.btfCustomPath) {
      // BTF of the running kernel when the kernel does not expose /sys/kernel/btf/vmlinux.
      const p = cstr(opts.btfCustomPath);
      keep.push(p);
      dv.setBigUint64(L.btf_custom_path, BigInt(ptr(p)), true);
    }
    const obj = b().bpf_object__open_mem(ptr(bytes), bytes.length, ptr(new Uint8Array(o))) as Pointer | null;
    const err = errOf(obj);
    if (err || !obj) throw new TracerError("BPF", `cannot open BPF object: ${strerror(err)}`);
    const h = new BpfObject(obj);
    h.keep = keep;
    return h;
  }

  private map(name: string): Pointer {
    const m = b().bpf_object__find_map_by_name(this.obj, cstr(name)) as Pointer | null;
    if (!m) throw new TracerError("INTERNAL", `BPF map ${name} not found in the object`);
    return m;
  }

  private prog(name: string): Pointer {
    const p = b().bpf_object__find_program_by_name(this.obj, cstr(name)) as Pointer | null;
    if (!p) throw new TracerError("INTERNAL", `BPF program ${name} not found in the object`);
    return p;
  }

  /** Program names with their ELF section (which names the attach point). */
  programs(): { name: string; section: string }[] {
    const out: { name: string; section: string }[] = [];
    for (const p of this.eachProgram()) out.push({ name: String(b().bpf_program__name(p)), section: String(b().bpf_program__section_name(p)) });
    return out;
  }

  private *eachProgram(): Generator<Pointer> {
    let p = b().bpf_object__next_program(this.obj, null) as Pointer | null;
    while (p) {
      yield p;
      p = b().bpf_object__next_program(this.obj, p) as Pointer | null;
    }
  }

  /** Summed run time of the object's loaded programs (bpf_prog_info.run_time_ns), which the
   * kernel counts only while BPF statistics are on (kernel.bpf_stats_enabled); 0n otherwise. */
  runTimeNs(): bigint {
    const L = STRUCT_LAYOUT.bpf_prog_info;
    const info = new Uint8Array(L.run_cnt + 8);
    const dv = new DataView(info.buffer);
    const len = new Uint32Array(1);
    let sum = 0n;
    for (const p of this.eachProgram()) {
      const fd = b().bpf_program__fd(p);
      if (fd < 0) continue; // not loaded
      info.fill(0);
      len[0] = info.length;
      if (b().bpf_obj_get_info_by_fd(fd, ptr(info), ptr(len)) === 0) sum += dv.getBigUint64(L.run_time_ns, true);
    }
    return sum;
  }

  setMaxEntries(map: string, n: number): void {
    const r = b().bpf_map__set_max_entries(this.map(map), n);
    if (r) throw new TracerError("BPF", `cannot size map ${map}: ${strerror(r)}`);
  }

  setMapFlags(map: string, flags: number): void {
    const r = b().bpf_map__set_map_flags(this.map(map), flags);
    if (r) throw new TracerError("BPF", `cannot set the flags of map ${map}: ${strerror(r)}`);
  }

  /** Changes a map's type and shape before load (e.g. to neutralise a map the kernel lacks). */
  reshapeMap(map: string, type: number, keySize: number, valueSize: number, maxEntries: number): void {
    const m = this.map(map);
    const r = b().bpf_map__set_type(m, type) || b().bpf_map__set_key_size(m, keySize) ||
      b().bpf_map__set_value_size(m, valueSize) || b().bpf_map__set_max_entries(m, maxEntries);
    if (r) throw new TracerError("BPF", `cannot reshape map ${map}: ${strerror(r)}`);
  }

  /** Whether libbpf creates `map` at load: a map the kernel lacks is left out, and the paths
   * that use it must be dead code there (turned off through the read-only data). */
  setAutocreate(map: string, on: boolean): void {
    const r = b().bpf_map__set_autocreate(this.map(map), on);
    if (r) throw new TracerError("BPF", `cannot ${on ? "create" : "leave out"} map ${map}: ${strerror(r)}`);
  }

  /** The object's read-only data (.rodata) before load: `bytes` replace it whole. */
  setReadOnlyData(bytes: Uint8Array): void {
    const r = b().bpf_map__set_initial_value(this.map(".rodata"), ptr(bytes), bytes.length);
    if (r) throw new TracerError("BPF", `cannot set the read-only data (${bytes.length} bytes): ${strerror(r)}`);
  }

  setAutoload(prog: string, on: boolean): void {
    b().bpf_program__set_autoload(this.prog(prog), on);
  }

  load(): void {
    const r = b().bpf_object__load(this.obj);
    if (r) throw new TracerError("BPF", `the kernel refused the BPF object: ${strerror(r)} (libbpf's log above has the verifier output)`);
  }

  mapFd(map: string): number {
    return b().bpf_map__fd(this.map(map));
  }

  private linked(p: Pointer | null, prog: string, point: string): Link {
    const err = errOf(p);
    if (err || !p) throw new TracerError("BPF", `cannot attach ${prog} to ${point}: ${strerror(err)}`);
    const l = new Link(p, prog, point);
    this.links.add(l);
    return l;
  }

  attachTracepoint(prog: string, category: string, name: string): Link {
    return this.linked(b().bpf_program__attach_tracepoint(this.prog(prog), cstr(category), cstr(name)) as Pointer | null, prog, `${category}/${name}`);
  }

  attachRawTracepoint(prog: string, name: string): Link {
    return this.linked(b().bpf_program__attach_raw_tracepoint(this.prog(prog), cstr(name)) as Pointer | null, prog, name);
  }

  /** A kprobe (or kretprobe) on a kernel function, through the perf kprobe PMU. */
  attachKprobe(prog: string, retprobe: boolean, func: string): Link {
    return this.linked(b().bpf_program__attach_kprobe(this.prog(prog), retprobe, cstr(func)) as Pointer | null, prog, func);
  }

  /**
   * A uprobe (or uretprobe) at a file offset of an ELF file, in every process that maps it
   * (pid -1). The offset is the file offset of the instruction, not a virtual address.
   */
  attachUprobe(prog: string, retprobe: boolean, file: string, offset: number): Link {
    const point = `${file}+0x${offset.toString(16)}`;
    return this.linked(b().bpf_program__attach_uprobe(this.prog(prog), retprobe, -1, cstr(file), offset) as Pointer | null, prog, point);
  }

  /**
   * Attaches to an existing perf tracepoint-type event id (e.g. a kretprobe created through
   * tracefs kprobe_events, which is the only way to choose its maxactive).
   */
  attachPerfTracepoint(prog: string, eventId: number, point: string): Link {
    const attr = perfEventAttr(K.PERF_TYPE_TRACEPOINT, { config: BigInt(eventId), sample_period: 1n, wakeup_events: 1 });
    const fd = Number(c().syscall(K.__NR_perf_event_open, ptr(attr), -1, 0, -1, K.PERF_FLAG_FD_CLOEXEC));
    if (fd < 0) throw new TracerError("BPF", `perf_event_open for ${prog} failed (errno ${errno()})`);
    try {
      return this.linked(b().bpf_program__attach_perf_event(this.prog(prog), fd) as Pointer | null, prog, point);
    } catch (e) {
      c().close(fd);
      throw e;
    }
  }

  /**
   * Detaches links. Each detach of a perf-event-based link (tracepoint, kprobe, uprobe) waits
   * for an RCU grace period in the kernel (tens of ms), so they run on one thread per link and
   * the grace periods overlap. `wait` false returns at once and lets the threads finish alone
   * (for detaching while capture goes on); true returns when every link is gone.
   */
  detach(links: Iterable<Link>, wait: boolean): void {
    const ptrs: Pointer[] = [];
    for (const l of links) {
      this.links.delete(l);
      const p = l.take();
      if (p) ptrs.push(p);
    }
    destroyLinksConcurrently(ptrs, wait);
  }

  close(): void {
    this.detach([...this.links], true);
    b().bpf_object__close(this.obj);
    this.keep = [];
  }
}

interface Threads {
  pthread_create: (tid: Pointer, attr: null, start: number, arg: Pointer) => number;
  pthread_join: (tid: bigint, ret: null) => number;
  pthread_detach: (tid: bigint) => number;
}

const PTHREAD_SYMBOLS = {
  pthread_create: { args: [P, P, P, P], returns: i32 },
  pthread_join: { args: [u64, P], returns: i32 },
  pthread_detach: { args: [u64], returns: i32 },
} as const;

let threads: Threads | null | undefined;
function pthreads(): Threads | null {
  if (threads !== undefined) return threads;
  threads = null;
  // glibc 2.34+ has pthreads in libc.so.6; older ones in libpthread.so.0.
  for (const lib of ["libc.so.6", "libpthread.so.0"]) {
    try {
      threads = dlopen(lib, PTHREAD_SYMBOLS).symbols as unknown as Threads;
      break;
    } catch {
      /* try the next */
    }
  }
  return threads;
}

/**
 * Runs bpf_link__destroy(link) as the start routine of one thread per link. The routine is
 * called with the link pointer as its one argument (first integer register on x86-64 and
 * aarch64), and its int result becomes the thread's exit value, which nobody reads. When
 * threads are unavailable the links are destroyed here, one after the other.
 */
function destroyLinksConcurrently(links: Pointer[], wait: boolean): void {
  const t = links.length > 1 || !wait ? pthreads() : null;
  const destroy = (b().bpf_link__destroy as unknown as { ptr: number }).ptr;
  const tid = new BigUint64Array(1);
  const started: bigint[] = [];
  for (const l of links) {
    if (t && t.pthread_create(ptr(tid), null, destroy, l) === 0) {
      if (wait) started.push(tid[0]!);
      else t.pthread_detach(tid[0]!);
    } else {
      b().bpf_link__destroy(l);
    }
  }
  for (const id of started) t!.pthread_join(id, null);
}

/**
 * A native thread that sleeps on a BPF ring buffer's fd and writes a byte to a pipe each time the
 * kernel forces a wakeup of it (records written with BPF_RB_FORCE_WAKEUP; every other record is
 * written without a wakeup): scripts/native/ring-wakeup.c. `fd` is the pipe's non-blocking read
 * end, for the event loop to read. Throws TracerError (UNSUPPORTED) when the thread cannot be
 * made; the caller then polls on a short timer instead. close() stops and joins the thread and
 * closes every descriptor, `fd` included: stop reading it first.
 */
export class RingWakeup {
  /** int[5] read by the thread until it returns: outside the JS heap's movable cells */
  private readonly state = new Int32Array(new ArrayBuffer(32));
  private readonly tid = new BigUint64Array(new ArrayBuffer(8));
  private open = false;
  readonly fd: number;

  constructor(ringFd: number) {
    const t = pthreads();
    if (!t) throw new TracerError("UNSUPPORTED", "ring buffer wakeups: pthread_create not found in the C library");
    const r = b().et_wakeup_open(ringFd, ptr(this.state));
    if (r < 0) throw new TracerError("UNSUPPORTED", `ring buffer wakeups: ${strerror(-r)}`);
    const run = (b().et_wakeup_run as unknown as { ptr: number }).ptr;
    const e = t.pthread_create(ptr(this.tid), null, run, ptr(this.state));
    if (e !== 0) {
      this.closeFds();
      throw new TracerError("UNSUPPORTED", `ring buffer wakeups: pthread_create: ${strerror(e)}`);
    }
    this.open = true;
    this.fd = this.state[WAKE.NOTIFY_R]!;
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    const one = Uint8Array.of(1);
    c().write(this.state[WAKE.STOP_W]!, ptr(one), 1);
    pthreads()!.pthread_join(this.tid[0]!, null);
    this.closeFds();
  }

  private closeFds(): void {
    for (let i = 0; i < WAKE.FIELDS; i++) c().close(this.state[i]!);
  }
}
/** indexes of RingWakeup's state, and their number (enum in ring-wakeup.c) */
const WAKE = { EPOLL: 0, NOTIFY_R: 1, NOTIFY_W: 2, STOP_R: 3, STOP_W: 4, FIELDS: 5 } as const;

/** A struct perf_event_attr of `type` (its size set, every other field 0 but `fields`). */
function perfEventAttr(type: number, fields: { config?: bigint; sample_period?: bigint; sample_type?: bigint; wakeup_events?: number; config1?: bigint; config2?: bigint }): Uint8Array {
  const A = STRUCT_LAYOUT.perf_event_attr;
  const attr = new Uint8Array(A.$size);
  const dv = new DataView(attr.buffer);
  dv.setUint32(A.type, type, true);
  dv.setUint32(A.size, A.$size, true);
  for (const k of ["config", "sample_period", "sample_type", "config1", "config2"] as const) {
    const v = fields[k];
    if (v !== undefined) dv.setBigUint64(A[k], v, true);
  }
  if (fields.wakeup_events !== undefined) dv.setUint32(A.wakeup_events, fields.wakeup_events, true);
  return attr;
}

/**
 * Whether the kernel creates a uprobe at file offset `offset` of `path`: a uprobe perf event
 * (PMU type `pmuType`, from /sys/bus/event_source/devices/uprobe/type) scoped to this process
 * alone, opened and closed at once, no BPF program involved. 0 on success, else -errno.
 */
export function probeUprobe(pmuType: number, path: string, offset: number): number {
  const file = cstr(path);
  const attr = perfEventAttr(pmuType, { config1: BigInt(ptr(file)), config2: BigInt(offset) }); // uprobe_path, probe_offset
  const fd = Number(c().syscall(K.__NR_perf_event_open, ptr(attr), process.pid, -1, -1, K.PERF_FLAG_FD_CLOEXEC));
  if (fd < 0) return -errno();
  c().close(fd);
  return 0;
}

/** 1 when the kernel supports the BPF map type, 0 when not, <0 when it cannot tell. */
export function probeMapType(type: number): number {
  return b().libbpf_probe_bpf_map_type(type, null);
}

/** 1 when programs of `progType` may call helper `helper` on this kernel, 0 when not, < 0 on error. */
export function probeHelper(progType: number, helper: number): number {
  return b().libbpf_probe_bpf_helper(progType, helper, null);
}

/**
 * libbpf's per-CPU perf buffers, for kernels without BPF ring buffers. perf_buffer__consume
 * calls back synchronously on this thread, so a JSCallback is safe here (unlike
 * ring_buffer__poll, which blocks). Records are copied out during the callback because libbpf
 * reuses the memory, and handed over in timestamp order: per-CPU buffers are not ordered with
 * respect to each other.
 *
 * The events are opened here (perf_buffer__new_raw) rather than with libbpf's defaults, which
 * ask the kernel to wake the reader after every record (wakeup_events = 1): nobody sleeps on
 * these buffers (the agent consumes them on a timer), and each wakeup is an interrupt on the
 * traced process's CPU. wakeup_events = 0 leaves the kernel's default, a wakeup once half a
 * buffer is unread. Lost-record notices are skipped: the BPF side counts every record the buffer
 * had no room for (CNT_LOST).
 */
export class PerfBuffer {
  private pb: Pointer | null;
  private readonly sample: JSCallback;
  private batch: Uint8Array[] = [];

  constructor(mapFd: number, pagesPerCpu: number, private readonly tsOffset: number) {
    // struct perf_event_header { u32 type; u16 misc; u16 size; }, then for a sample (PERF_SAMPLE_RAW
    // only): u32 size and the record
    this.sample = new JSCallback(
      (_ctx: Pointer, _cpu: number, event: Pointer) => {
        if (read.u32(event, 0) === K.PERF_RECORD_SAMPLE) {
          this.batch.push(new Uint8Array(toArrayBuffer(event, 12, read.u32(event, 8))).slice());
        }
        return K.LIBBPF_PERF_EVENT_CONT;
      },
      { args: [P, i32, P], returns: i32 },
    );
    const attr = perfEventAttr(K.PERF_TYPE_SOFTWARE, { config: BigInt(K.PERF_COUNT_SW_BPF_OUTPUT), sample_period: 1n, sample_type: BigInt(K.PERF_SAMPLE_RAW) });
    this.pb = b().perf_buffer__new_raw(mapFd, pagesPerCpu, ptr(attr), this.sample.ptr, null, null) as Pointer | null;
    const err = errOf(this.pb);
    if (err || !this.pb) {
      this.sample.close();
      throw new TracerError("BPF", `cannot set up perf buffers: ${strerror(err)}`);
    }
  }

  /** Consumes everything available; returns the records sorted by event timestamp. */
  consume(): Uint8Array[] {
    if (!this.pb) return [];
    this.batch = [];
    b().perf_buffer__consume(this.pb);
    const out = this.batch;
    this.batch = [];
    const off = this.tsOffset;
    const ts = (r: Uint8Array) => (r.length >= off + 8 ? new DataView(r.buffer, r.byteOffset + off, 8).getBigUint64(0, true) : 0n);
    out.sort((a, c) => {
      const d = ts(a) - ts(c);
      return d < 0n ? -1 : d > 0n ? 1 : 0;
    });
    return out;
  }

  close(): void {
    if (this.pb) b().perf_buffer__free(this.pb);
    this.pb = null;
    this.sample.close();
  }
}

// ---- map access (hot-path safe: returns 0 or -errno) ------------------------------------------

export function mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, flags = 0): number {
  const r = b().bpf_map_update_elem(fd, ptr(key), ptr(value), flags);
  return r < 0 ? r : 0;
}

export function mapLookup(fd: number, key: Uint8Array, out: Uint8Array): number {
  return b().bpf_map_lookup_elem(fd, ptr(key), ptr(out));
}

export function mapDelete(fd: number, key: Uint8Array): number {
  return b().bpf_map_delete_elem(fd, ptr(key));
}

/** Next key after `key` (or the first key when key is null) into `out`; -ENOENT at the end. */
export function mapNextKey(fd: number, key: Uint8Array | null, out: Uint8Array): number {
  return b().bpf_map_get_next_key(fd, key ? ptr(key) : null, ptr(out));
}

// ---- shared memory ----------------------------------------------------------------------------

export const PROT_READ = C_CONSTANTS.PROT_READ;
export const PROT_WRITE = C_CONSTANTS.PROT_WRITE;

/** A shared mapping of a BPF map fd. The ArrayBuffer must not be used after unmap(). */
export class Mapping {
  private constructor(
    private addr: Pointer,
    readonly length: number,
    readonly buffer: ArrayBuffer,
  ) {}

  static of(fd: number, length: number, prot: number, offset: number): Mapping {
    const addr = c().mmap(null, length, prot, K.MAP_SHARED, fd, offset) as Pointer | null;
    const a = Number(addr);
    if (!addr || a === -1 || a === 0xffffffffffffffff) {
      throw new TracerError("BPF", `mmap of BPF map failed (errno ${errno()})`);
    }
    return new Mapping(addr, length, toArrayBuffer(addr, 0, length));
  }

  unmap(): void {
    c().munmap(this.addr, this.length);
  }
}
