/**
 * The kernel side as seen from user space: loads the embedded BPF object through libbpf, sizes
 * its maps, attaches the probes of the attach plan (attach-plan.ts) that this kernel has, and
 * offers typed access to the filter maps and counters. Setup throws TracerError; map updates
 * return errno.
 */
import { appendFileSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus, release } from "node:os";
import {
  BpfObject, type Link, loadLibbpf, libbpfVersion, mapDelete, mapLookup, mapNextKey, mapUpdate, mountFs, numPossibleCpus,
  pageSize, probeHelper, probeMapType, Mapping, PROT_READ, PROT_WRITE, RingWakeup,
} from "./libbpf-ffi.ts";
import { PerfBufferReader } from "./perfbuf-reader.ts";
import type { EventSource } from "./event-source.ts";
import { bpfObjectBytes, libbpfBytes } from "./embedded.ts";
import { RingBufferReader } from "./ringbuf-reader.ts";
import { CNT, CONN_INFO, LAYOUT, SYSCALLS } from "./event-layout.ts";
import { TracerError } from "../errors.ts";
import { loadedProgram, planAttach, probeOf, ProbeLinks, type FileIdentity, type Probe, type SyscallFlavour, type UprobeTarget } from "./attach-plan.ts";
import { log } from "../log/log.ts";
import { ProbeAudit } from "./bpf-audit.ts";

export type AttachMode = "tracepoints" | "kprobes";
export type BufferKind = "ringbuf" | "perf";

export interface KernelOptions {
  ringbufBytes: number;
  /** unread ring-buffer bytes from which the kernel wakes the reader (0: never); it looks once per
   * 1/32 of the ring written by each CPU */
  ringWakeAtBytes?: number;
  /** false forces kprobes even where syscall tracepoints exist */
  enableTracepoints?: boolean;
  buffer?: "auto" | BufferKind;
  /** where a thread's TLS call state lives in the kernel (config bpf.thread_state) */
  threadState?: "auto" | "task_storage" | "hash";
  /** perf buffer pages per CPU (power of two) */
  perfPages?: number;
  /** kretprobe maxactive (instances in flight per probe); 0 = 10 x CPUs */
  maxActiveRetProbe?: number;
  maxCapturePerCall: number;
  btfCustomPath?: string;
  captureAllMode: number;
  notifyAllExec: boolean;
  notifyListen?: boolean;
}

type Settings = Pick<KernelOptions, "maxCapturePerCall" | "captureAllMode" | "notifyAllExec" | "notifyListen"> & { usePerf?: boolean; hasCgroups?: boolean; hasConnCtl?: boolean };

export interface KernelCounters {
  events: number;
  lost: number;
  truncatedBytes: number;
  activeFull: number;
  connFull: number;
  /** socket bytes of TLS connections, counted and never copied */
  tlsSkippedBytes: number;
  /** bytes of connections user space set CONN_F_NOCOPY on, counted and not copied */
  noCopyBytes: number;
  /** Go TLS writes that sent less than the plaintext already emitted at their entry. */
  tlsGoShortWrites: number;
  /** hits of Go's Read copy probe with no Read in flight into that buffer (nothing emitted) */
  tlsGoCopyUnmatched: number;
  /** TLS calls (C libraries) whose entry got no per-thread slot: their plaintext is not emitted */
  tlsCallsUntracked: number;
  /** recv calls with MSG_PEEK, skipped */
  peekSkipped: number;
  /** sendmmsg/recvmmsg calls with more messages than the kernel's msg_len sum walks (never expected) */
  mmsgOverflow: number;
  /** connections ended because their TCP socket reached TCP_CLOSE without close(2) (exit, kill, RST) */
  sockClosed: number;
  /** syscall name → [entries, exits] seen for selected processes (exit-only programs count a
   * call as both, see docs/operations.md) */
  probes: Record<string, [number, number]>;
}

const TRACEFS = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/** Where tracepoints are listed; mounts tracefs when nothing is mounted. */
export function ensureTracefs(): string {
  for (const d of TRACEFS) if (existsSync(`${d}/events`)) return d;
  const err = mountFs("tracefs", TRACEFS[0]!);
  if (err === 0 && existsSync(`${TRACEFS[0]}/events`)) {
    log.info("mounted tracefs", { path: TRACEFS[0] });
    return TRACEFS[0]!;
  }
  throw new TracerError("UNSUPPORTED", `tracefs is not mounted and mounting it at ${TRACEFS[0]} failed (errno ${err})`);
}

const BPF_MAP_TYPE_ARRAY = 2;
const BPF_MAP_TYPE_RINGBUF = 27;
const BPF_MAP_TYPE_TASK_STORAGE = 29;
const BPF_PROG_TYPE_KPROBE = 2;
const BPF_PROG_TYPE_TRACEPOINT = 5;
const BPF_FUNC_loop = 181;
const BPF_FUNC_get_current_task_btf = 158;
const BPF_FUNC_task_pt_regs = 175;
const BPF_FUNC_task_storage_get = 156;

/** Whether tracepoint and kprobe (uprobe) programs may call every helper of `ids`. */
function helpersExist(ids: number[]): boolean {
  return [BPF_PROG_TYPE_TRACEPOINT, BPF_PROG_TYPE_KPROBE].every((t) => ids.every((f) => probeHelper(t, f) === 1));
}

/**
 * Whether programs may use the current task's BTF pointer (bpf_get_current_task_btf, 5.11+): the
 * verifier needs the kernel's own BTF for it, which a helper probe does not check, so a kernel
 * without /sys/kernel/btf/vmlinux (or one hiding it) answers no. The loop variants (their
 * arguments from the task's registers) and task local storage both need it.
 */
function taskBtfUsable(): boolean {
  return existsSync("/sys/kernel/btf/vmlinux") && helpersExist([BPF_FUNC_get_current_task_btf]);
}

export function kprobesAvailable(tracefs: string | undefined): boolean {
  return existsSync("/sys/bus/event_source/devices/kprobe/type") || (!!tracefs && existsSync(`${tracefs}/kprobe_events`));
}

/** Syscall tracepoints (preferred) or kprobes; throws UNSUPPORTED when neither works. */
export function chooseAttachMode(tracefs: string | undefined, enableTracepoints: boolean): AttachMode {
  const tp = !!tracefs && existsSync(`${tracefs}/events/syscalls/sys_enter_read`);
  if (tp && enableTracepoints) return "tracepoints";
  if (kprobesAvailable(tracefs)) return "kprobes";
  if (tp) {
    throw new TracerError("UNSUPPORTED", "enable_tracepoints is false but this kernel has no kprobes (CONFIG_KPROBES off); set enable_tracepoints: true");
  }
  throw new TracerError("UNSUPPORTED", "this kernel has neither syscall tracepoints (CONFIG_FTRACE_SYSCALLS) nor kprobes");
}

let kallsyms: string | undefined;
/** The kernel function behind a syscall: the arch wrapper (__x64_sys_*, 4.17+) when present. */
export function syscallSymbol(name: string): string {
  const text = kallsymsText();
  for (const prefix of ["__x64_sys_", "__arm64_sys_", "sys_"]) {
    if (text.includes(` ${prefix}${name}\n`)) return prefix + name;
  }
  return `__x64_sys_${name}`;
}

function kallsymsText(): string {
  kallsyms ??= (() => {
    try {
      return readFileSync("/proc/kallsyms", "utf8");
    } catch {
      return "";
    }
  })();
  return kallsyms;
}

/** Whether a probe's attach point exists here: a tracepoint in tracefs, a kernel symbol. */
export function attachPointExists(tracefs: string, p: Probe): boolean {
  switch (p.kind) {
    case "tracepoint":
      return existsSync(`${tracefs}/events/${p.target}`);
    case "raw_tracepoint":
      return readdirSync(`${tracefs}/events`).some((cat) => existsSync(`${tracefs}/events/${cat}/${p.target}`));
    case "kprobe":
    case "kretprobe": {
      if (!kprobesAvailable(tracefs)) return false;
      const sym = p.syscall ? syscallSymbol(p.syscall) : p.target;
      const text = kallsymsText();
      return !text || text.includes(` ${sym}\n`);
    }
    default:
      return true; // uprobes: the file is checked when attaching
  }
}

/** pid_bytes geometry (bpf/lib/maps.h). */
const PID_PAGE = 4096;
const PID_SET = 0x80;
const PID_TLS = 0x40;
/** set by the kernel at a process's first TLS call (bpf/lib/maps.h); kept with PID_TLS */
const PID_TLS_CALLS = 0x20;

/**
 * Elements of the pid_bytes array: pid_max at load over PID_PAGE, rounded up; 0 where the kernel
 * cannot map arrays into user space (BPF_F_MMAPABLE, 5.5+), which leaves the kernel on the
 * selected_pids hash alone. A pid_max raised later only sends the tgids beyond the array to the
 * hash. PID_MAX_LIMIT (4,194,304 on 64-bit) makes at most 4 MiB.
 */
export function pidBytesPages(kernelRelease = release(), pidMaxText = readPidMax()): number {
  const m = /^(\d+)\.(\d+)/.exec(kernelRelease);
  if (!m || Number(m[1]) * 1000 + Number(m[2]) < 5005) return 0;
  const pidMax = Number(pidMaxText?.trim());
  if (!Number.isInteger(pidMax) || pidMax <= 0) return 0;
  return Math.ceil(Math.min(pidMax, 4_194_304) / PID_PAGE);
}

function readPidMax(): string | null {
  try {
    return readFileSync("/proc/sys/kernel/pid_max", "utf8");
  } catch {
    return null;
  }
}

export class KernelTracer {
  readonly source: EventSource;
  /** optional probes whose attach point this kernel lacks (their sections) */
  readonly skipped: string[] = [];
  private readonly fds: Record<string, number> = {};
  private readonly ncpu: number;
  /** one per-CPU value of the `counters` map, read by counterSum() */
  private readonly counterVals: Uint8Array;
  private readonly counterView: DataView;
  private probes: ProbeLinks<Link> | undefined;
  /** What was loaded and is attached, with the object's SHA-256 (log lines, GET /probes). */
  audit: ProbeAudit | undefined;
  private kprobeEvents: string[] = [];
  private maxactive = 0;

  private constructor(
    private readonly obj: BpfObject,
    readonly attachMode: AttachMode,
    readonly buffer: BufferKind,
    ringbufBytes: number,
    perfPages: number,
    private readonly tracefs: string,
  ) {
    for (const m of [
      "selected_pids", "selected_cgroups", "exe_names", "selected_ports", "settings_map", "counters", "conns", "fds", "conn_ctl", "events", "events_perf",
      "tls_procs", "go_tls_offsets", "tls_known_files", "tls_enabled",
    ]) {
      this.fds[m] = obj.mapFd(m);
    }
    this.ncpu = numPossibleCpus();
    this.counterVals = new Uint8Array(8 * this.ncpu);
    this.counterView = new DataView(this.counterVals.buffer);
    this.source = buffer === "ringbuf"
      ? RingBufferReader.map(this.fds.events!, ringbufBytes)
      : new PerfBufferReader(this.fds.events_perf!, perfPages);
  }

  static async start(opts: KernelOptions): Promise<KernelTracer> {
    const version = loadLibbpf(await libbpfBytes());
    const tracefs = ensureTracefs();
    const mode = chooseAttachMode(tracefs, opts.enableTracepoints ?? true);
    const ringbufOk = probeMapType(BPF_MAP_TYPE_RINGBUF) === 1;
    const want = opts.buffer ?? "auto";
    if (want === "ringbuf" && !ringbufOk) throw new TracerError("UNSUPPORTED", "bpf.buffer is ringbuf but this kernel has no BPF ring buffer (5.8+); use auto or perf");
    const buffer: BufferKind = want === "perf" || !ringbufOk ? "perf" : "ringbuf";
    const objectBytes = await bpfObjectBytes();
    const audit = new ProbeAudit(objectBytes);
    const obj = BpfObject.open(objectBytes, { name: "ebpf_tracer", btfCustomPath: opts.btfCustomPath });
    let tracer: KernelTracer | undefined;
    try {
      if (buffer === "ringbuf") obj.setMaxEntries("events", opts.ringbufBytes);
      else if (ringbufOk) obj.setMaxEntries("events", pageSize()); // unused: smallest ring
      else obj.reshapeMap("events", BPF_MAP_TYPE_ARRAY, 4, 4, 1); // the kernel has no ring buffers
      const taskBtf = taskBtfUsable();
      // per-thread TLS state in task local storage instead of an LRU hash by pid_tgid
      const wantState = opts.threadState ?? "auto";
      const taskStorage = wantState !== "hash" && taskBtf && probeMapType(BPF_MAP_TYPE_TASK_STORAGE) === 1 && helpersExist([BPF_FUNC_task_storage_get]);
      if (wantState === "task_storage" && !taskStorage) throw new TracerError("UNSUPPORTED", "bpf.thread_state is task_storage but this kernel has no task local storage for tracing programs (5.11+ with /sys/kernel/btf/vmlinux); use auto or hash");
      obj.setAutocreate(taskStorage ? "tls_threads" : "tls_task", false);
      const C = LAYOUT.load_config;
      const cfg = new Uint8Array(C.$size);
      cfg[C.task_storage] = taskStorage ? 1 : 0;
      const wakeAt = buffer === "ringbuf" ? Math.floor(opts.ringWakeAtBytes ?? 0) : 0;
      const cv = new DataView(cfg.buffer);
      cv.setUint32(C.wake_check_bytes, wakeAt > 0 ? Math.floor(opts.ringbufBytes / 32) : 0, true);
      cv.setUint32(C.wake_at_bytes, wakeAt, true);
      obj.setReadOnlyData(cfg);
      const pidPages = pidBytesPages();
      if (pidPages) obj.setMaxEntries("pid_bytes", pidPages);
      else {
        obj.setMapFlags("pid_bytes", 0);
        obj.setMaxEntries("pid_bytes", 1);
      }
      const flavours: SyscallFlavour[] = mode === "kprobes" ? ["kprobe"] : kprobesAvailable(tracefs) ? ["tracepoint", "kprobe"] : ["tracepoint"];
      // The loop variants copy through bpf_loop and (syscall exits) read the call's arguments
      // from the task's registers: every helper they call must exist for both program types.
      const loopVariants = buffer === "ringbuf" && taskBtf && helpersExist([BPF_FUNC_loop, BPF_FUNC_task_pt_regs]);
      const plan = planAttach(obj.programs().map((p) => probeOf(p.name, p.section)), { flavours, exists: (p) => attachPointExists(tracefs, p), loopVariants });
      const onKprobes = Object.keys(plan.flavour).filter((sc) => plan.flavour[sc] === "kprobe");
      if (mode === "tracepoints" && onKprobes.length) log.info("syscalls without tracepoints are probed with kprobes", { syscalls: onKprobes });
      for (const name of plan.unload) obj.setAutoload(name, false);
      obj.load();
      const unloaded = new Set(plan.unload);
      for (const p of obj.programs()) if (!unloaded.has(p.name)) audit.loaded(p.name, p.section);
      tracer = new KernelTracer(obj, mode, buffer, opts.ringbufBytes, opts.perfPages ?? 1024, tracefs);
      tracer.audit = audit;
      tracer.skipped.push(...plan.skipped);
      // Before the settings turn the array on and before any probe runs: the kernel writes the
      // pid bytes only while settings.pid_bytes is set, so they start complete (empty).
      if (pidPages) tracer.mapPidBytes(pidPages);
      tracer.writeSettings({ ...opts, usePerf: buffer === "perf" });
      tracer.maxactive = opts.maxActiveRetProbe || 10 * cpus().length;
      const t = tracer;
      // Every link attached or detached is one audit line (program, attach point, file for
      // uprobes, the object's SHA-256); `linkInfo` remembers what each link is for the detach.
      const linkInfo = new Map<unknown, [string, string, string | undefined]>();
      tracer.probes = new ProbeLinks(plan, {
        attach: (p) => {
          const l = t.attachProbe(p);
          linkInfo.set(l, [loadedProgram(p), p.section, undefined]);
          audit.attached(loadedProgram(p), p.section);
          return l;
        },
        attachUprobe: (p, file, offset) => {
          const l = obj.attachUprobe(loadedProgram(p), p.kind === "uretprobe", file, offset);
          const target = `${file}+0x${offset.toString(16)}`;
          linkInfo.set(l, [loadedProgram(p), p.section, target]);
          audit.attached(loadedProgram(p), p.section, target);
          return l;
        },
        detach: (links, wait) => {
          obj.detach(links, wait);
          for (const l of links) {
            const i = linkInfo.get(l);
            if (!i) continue;
            linkInfo.delete(l);
            audit.detached(i[0], i[1], i[2]);
          }
        },
      });
      tracer.probes.attachStart();
      log.debug("BPF programs attached", { libbpf: version, mode, buffer, taskStorage, attached: tracer.attached.length, skipped: plan.skipped });
      return tracer;
    } catch (e) {
      if (tracer) tracer.close();
      else obj.close();
      throw e;
    }
  }

  /** Sections of the probes attached at start. */
  get attached(): string[] {
    return this.probes?.attached ?? [];
  }

  private attachProbe(p: Probe): Link {
    const prog = loadedProgram(p);
    switch (p.kind) {
      case "tracepoint": {
        const at = p.target.indexOf("/");
        return this.obj.attachTracepoint(prog, p.target.slice(0, at), p.target.slice(at + 1));
      }
      case "raw_tracepoint":
        return this.obj.attachRawTracepoint(prog, p.target);
      case "kprobe":
        return this.obj.attachKprobe(prog, false, p.syscall ? syscallSymbol(p.syscall) : p.target);
      case "kretprobe":
        return this.attachKretprobe(prog, p.syscall ? syscallSymbol(p.syscall) : p.target);
      default:
        throw new TracerError("INTERNAL", `${p.kind} ${p.program} is attached per file, not at start`);
    }
  }

  /**
   * A kretprobe with a chosen maxactive: libbpf's perf-based kprobes cannot set it, so the
   * probe is created through tracefs ("r<maxactive>:group/event symbol") and the program attached
   * to that event. Too small a maxactive drops returns under concurrency (entries without exits
   * in the probe stats).
   */
  private attachKretprobe(prog: string, sym: string): Link {
    const event = `p${process.pid}_${sym.replace(/\W/g, "_")}`;
    const group = "ebpf_tracer";
    appendFileSync(`${this.tracefs}/kprobe_events`, `r${Math.min(this.maxactive, 4096)}:${group}/${event} ${sym}\n`);
    this.kprobeEvents.push(`${group}/${event}`);
    const id = Number(readFileSync(`${this.tracefs}/events/${group}/${event}/id`, "utf8").trim());
    return this.obj.attachPerfTracepoint(prog, id, sym);
  }

  /**
   * Attaches uprobe programs of the object at file offsets of `file` (every process mapping it),
   * or counts one more user of a file (device, inode) already probed. Keep the returned
   * identity for release().
   */
  attachUprobes(file: string | FileIdentity, targets: UprobeTarget[]): FileIdentity {
    if (!this.probes) throw new TracerError("INTERNAL", "uprobes attached before the tracer started");
    return this.probes.attachUprobes(file, targets);
  }

  /** One user fewer of a probed file; its uprobes go when none is left. */
  releaseUprobes(file: string | FileIdentity): void {
    this.probes?.release(file);
  }

  private runTimeNs = 0n;

  /** Run time of the agent's BPF programs so far, in the traced processes' context: counted by
   * the kernel only while kernel.bpf_stats_enabled is 1 (0n while it never was). While it is 0
   * the totals cannot move, so the last ones are returned without asking per program. */
  bpfRunTimeNs(): bigint {
    let on = false;
    try {
      on = readFileSync("/proc/sys/kernel/bpf_stats_enabled", "utf8").trim() !== "0";
    } catch {
      on = true; // no sysctl to ask: the programs say
    }
    if (on) this.runTimeNs = this.obj.runTimeNs();
    return this.runTimeNs;
  }

  get libbpfVersion(): string {
    return libbpfVersion();
  }

  private current: Settings = {
    maxCapturePerCall: 0, captureAllMode: 0, notifyAllExec: false, notifyListen: false, usePerf: false,
  };

  setFlags(f: { captureAllMode: number; notifyAllExec: boolean; notifyListen: boolean }): void {
    this.writeSettings({ ...this.current, ...f });
  }

  setMaxCapturePerCall(n: number): void {
    this.writeSettings({ ...this.current, maxCapturePerCall: n });
  }

  writeSettings(o: Settings): void {
    this.current = { maxCapturePerCall: o.maxCapturePerCall, captureAllMode: o.captureAllMode, notifyAllExec: o.notifyAllExec, notifyListen: o.notifyListen, usePerf: o.usePerf, hasCgroups: o.hasCgroups, hasConnCtl: o.hasConnCtl };
    const S = LAYOUT.settings;
    const v = new Uint8Array(S.$size);
    const dv = new DataView(v.buffer);
    dv.setUint32(S.max_capture_per_call, o.maxCapturePerCall, true);
    v[S.capture_all_mode] = o.captureAllMode;
    v[S.notify_all_exec] = o.notifyAllExec ? 1 : 0;
    v[S.notify_listen] = o.notifyListen ? 1 : 0;
    v[S.use_perf] = o.usePerf ? 1 : 0;
    v[S.has_cgroups] = o.hasCgroups ? 1 : 0;
    v[S.pid_bytes] = this.pidBytes ? 1 : 0;
    v[S.has_conn_ctl] = o.hasConnCtl ? 1 : 0;
    const r = mapUpdate(this.fds.settings_map!, new Uint8Array(4), v);
    if (r) throw new TracerError("BPF", `cannot write BPF settings (errno ${-r})`);
  }

  /** The kernel's pid_bytes array (maps.h), shared: one byte per tgid below pid_max at load. */
  private pidBytes: Uint8Array | undefined;
  private pidMapping: Mapping | undefined;

  private mapPidBytes(pages: number): void {
    this.pidMapping = Mapping.of(this.obj.mapFd("pid_bytes"), pages * PID_PAGE, PROT_READ | PROT_WRITE, 0);
    this.pidBytes = new Uint8Array(this.pidMapping.buffer);
  }

  /** Rewrites tgid's byte in pid_bytes, when the array exists and covers it. */
  private updatePidByte(tgid: number, f: (old: number) => number): void {
    const b = this.pidBytes;
    if (b && tgid < b.length) b[tgid] = f(b[tgid]!);
  }

  /** Writes both forms of the pid filter, the hash first (a full hash leaves the byte alone);
   * the byte's PID_TLS bit is setTlsProc's. */
  setPid(tgid: number, mode: number): number {
    const r = mapUpdate(this.fds.selected_pids!, u32(tgid), Uint8Array.of(mode));
    if (r === 0) this.updatePidByte(tgid, (old) => PID_SET | mode | (old & (PID_TLS | PID_TLS_CALLS)));
    return r;
  }

  deletePid(tgid: number): number {
    const r = mapDelete(this.fds.selected_pids!, u32(tgid));
    this.updatePidByte(tgid, (old) => old & (PID_TLS | PID_TLS_CALLS));
    return r;
  }

  /** The pid filter's mode for one process; undefined when it has no entry. */
  pidMode(tgid: number): number | undefined {
    const val = new Uint8Array(1);
    return mapLookup(this.fds.selected_pids!, u32(tgid), val) === 0 ? val[0] : undefined;
  }

  /** tgid → mode for every pid in the kernel filter. */
  pids(): Map<number, number> {
    const out = new Map<number, number>();
    const fd = this.fds.selected_pids!;
    const key = new Uint8Array(4);
    const next = new Uint8Array(4);
    const val = new Uint8Array(1);
    let first = true;
    while (mapNextKey(fd, first ? null : key, next) === 0) {
      first = false;
      key.set(next);
      if (mapLookup(fd, key, val) === 0) out.set(new DataView(key.buffer).getUint32(0, true), val[0]!);
    }
    return out;
  }

  /** Cgroup ids in selected_cgroups: the kernel consults that map only while it has entries. */
  private readonly cgroupIds = new Set<bigint>();

  setCgroup(id: bigint, mode: number): number {
    const k = new Uint8Array(8);
    new DataView(k.buffer).setBigUint64(0, id, true);
    const r = mapUpdate(this.fds.selected_cgroups!, k, Uint8Array.of(mode));
    if (r === 0 && !this.cgroupIds.has(id)) {
      this.cgroupIds.add(id);
      // entry first, flag second: a process of that cgroup is never looked up in an empty map
      if (this.cgroupIds.size === 1) this.writeSettings({ ...this.current, hasCgroups: true });
    }
    return r;
  }

  deleteCgroup(id: bigint): number {
    const k = new Uint8Array(8);
    new DataView(k.buffer).setBigUint64(0, id, true);
    if (this.cgroupIds.delete(id) && this.cgroupIds.size === 0) this.writeSettings({ ...this.current, hasCgroups: false });
    return mapDelete(this.fds.selected_cgroups!, k);
  }

  /** Processes that exec a binary whose comm (first 15 bytes of the file name) is `name`. */
  setExeName(name: string, mode: number): number {
    return mapUpdate(this.fds.exe_names!, commKey(name), Uint8Array.of(mode));
  }

  deleteExeName(name: string): number {
    return mapDelete(this.fds.exe_names!, commKey(name));
  }

  /** Processes that start listening on TCP `port` get `mode` (in the kernel, at listen()). */
  setPort(port: number, mode: number): number {
    const k = new Uint8Array(2);
    new DataView(k.buffer).setUint16(0, port, true);
    return mapUpdate(this.fds.selected_ports!, k, Uint8Array.of(mode));
  }

  deletePort(port: number): number {
    const k = new Uint8Array(2);
    new DataView(k.buffer).setUint16(0, port, true);
    return mapDelete(this.fds.selected_ports!, k);
  }

  /**
   * Stops data events for connection `connId`, open on `fd` of `tgid`, which user space found it
   * does not want (e.g. wrong role, a protocol not captured). User space learns that from events
   * read some time after they happened: by then the fd may have been closed and reused by a newer
   * connection (a client's next request), which the fd leads to now, and which is left alone. A
   * connection already gone needs nothing.
   */
  ignoreConn(tgid: number, fd: number, connId: number): void {
    this.setIgnored(tgid, fd, connId, 1);
  }

  /**
   * Undoes ignoreConn for connection `connId` (shed by the overhead budget, now re-admitted):
   * the kernel copies its bytes again. Returns its streams' next positions, which did not move
   * while it was ignored ([socket recv, socket send, TLS recv, TLS send]: user space goes on from
   * there), or undefined when the connection is gone (closed, or the fd now holds another).
   */
  readmitConn(tgid: number, fd: number, connId: number): number[] | undefined {
    const val = this.setIgnored(tgid, fd, connId, 0);
    if (!val) return undefined;
    const dv = new DataView(val.buffer);
    const pos: number[] = [];
    for (let i = 0; i < 4; i++) pos.push(Number(dv.getBigUint64(CONN_INFO.pos + 8 * i, true)));
    return pos;
  }

  /** Sets `ignored` on connection `connId` of (tgid, fd); returns the value written, or undefined
   * when that fd holds no such connection. */
  private setIgnored(tgid: number, fd: number, connId: number, ignored: number): Uint8Array | undefined {
    const key = new Uint8Array(8);
    const dv = new DataView(key.buffer);
    dv.setUint32(0, fd, true);
    dv.setUint32(4, tgid, true);
    const sockKey = new Uint8Array(8);
    if (mapLookup(this.fds.fds!, key, sockKey) !== 0) return undefined;
    const val = new Uint8Array(CONN_INFO.$size);
    if (mapLookup(this.fds.conns!, sockKey, val) !== 0) return undefined;
    if (Number(new DataView(val.buffer).getBigUint64(CONN_INFO.id, true)) !== connId) return undefined;
    val[CONN_INFO.ignored] = ignored;
    return mapUpdate(this.fds.conns!, sockKey, val, 2 /* BPF_EXIST */) === 0 ? val : undefined;
  }

  /**
   * Sets CONN_F_* bits (CONN_F_NOCOPY: stop copying payload, keep counting positions; CONN_F_TLS:
   * treat the socket layer as ciphertext) on connection `connId`, on top of those set before.
   * Goes through the `conn_ctl` map, not the `conns` value, so no kernel position update is lost.
   * The kernel forgets the entry when the connection ends. Returns 0 or a negative errno.
   */
  setConnFlags(connId: number, flags: number): number {
    const key = new Uint8Array(8);
    new DataView(key.buffer).setBigUint64(0, BigInt(connId), true);
    const val = new Uint8Array(4);
    mapLookup(this.fds.conn_ctl!, key, val);
    const dv = new DataView(val.buffer);
    dv.setUint32(0, dv.getUint32(0, true) | flags, true);
    // the kernel looks conn_ctl up from before this entry on (and stays on: entries age out
    // with their connections)
    if (!this.current.hasConnCtl) this.writeSettings({ ...this.current, hasConnCtl: true });
    return mapUpdate(this.fds.conn_ctl!, key, val);
  }

  // ---- TLS uprobes (bpf/lib/tls.h): filter and per-process maps, written by TlsCapture ----------

  /** tls_enabled[0]: config enable_uprobes (the kernel also selects new execs for TLS with it). */
  setTlsEnabled(on: boolean): number {
    return mapUpdate(this.fds.tls_enabled!, u32(0), u32(on ? 1 : 0));
  }

  /** tls_procs: whether the TLS probes act for process `tgid`. */
  setTlsProc(tgid: number, on: boolean): number {
    const r = on ? mapUpdate(this.fds.tls_procs!, u32(tgid), Uint8Array.of(1)) : mapDelete(this.fds.tls_procs!, u32(tgid));
    if (!on) this.updatePidByte(tgid, (old) => old & ~(PID_TLS | PID_TLS_CALLS));
    else if (r === 0) this.updatePidByte(tgid, (old) => old | PID_TLS);
    return r;
  }

  /** go_tls_offsets: the 32-byte value of go-offsets.ts for a Go process, or none. */
  setGoTlsOffsets(tgid: number, value: Uint8Array | undefined): number {
    return value ? mapUpdate(this.fds.go_tls_offsets!, u32(tgid), value) : mapDelete(this.fds.go_tls_offsets!, u32(tgid));
  }

  /** tls_known_files: a file (kernel dev_t, inode) user space has classified (tls: holds a stack). */
  setTlsKnownFile(dev: number, ino: number, tls: boolean): number {
    const k = new Uint8Array(16);
    const dv = new DataView(k.buffer);
    dv.setUint32(0, dev, true);
    dv.setBigUint64(8, BigInt(ino), true);
    return mapUpdate(this.fds.tls_known_files!, k, Uint8Array.of(tls ? 1 : 0));
  }

  /** Number of uprobe/uretprobe links attached now. */
  get uprobeLinks(): number {
    return (this.probes?.links().length ?? 0) - this.attached.length;
  }


  /** Counter `idx` of the `counters` map summed over CPUs; NaN when the lookup fails. */
  private counterSum(idx: number): number {
    if (mapLookup(this.fds.counters!, u32(idx), this.counterVals) !== 0) return NaN;
    let s = 0;
    for (let c = 0; c < this.ncpu; c++) s += Number(this.counterView.getBigUint64(c * 8, true));
    return s;
  }

  /** The kernel's count of records it could not write (CNT_LOST): one lookup. */
  lostRecords(): number {
    return this.counterSum(CNT.LOST);
  }

  counters(): KernelCounters {
    const sum = (idx: number): number => this.counterSum(idx) || 0;
    const probes: Record<string, [number, number]> = {};
    SYSCALLS.forEach((name, i) => {
      probes[name] = [sum(CNT.PROBE_ENTRY_BASE + i), sum(CNT.PROBE_EXIT_BASE + i)];
    });
    return {
      events: sum(CNT.EVENTS),
      lost: sum(CNT.LOST),
      truncatedBytes: sum(CNT.TRUNCATED_BYTES),
      activeFull: sum(CNT.ACTIVE_FULL),
      connFull: sum(CNT.CONN_FULL),
      tlsSkippedBytes: sum(CNT.TLS_SKIPPED_BYTES),
      noCopyBytes: sum(CNT.NOCOPY_BYTES),
      tlsGoShortWrites: sum(CNT.TLS_GO_SHORT_WRITES),
      tlsGoCopyUnmatched: sum(CNT.TLS_GO_COPY_UNMATCHED),
      tlsCallsUntracked: sum(CNT.TLS_CALL_UNTRACKED),
      peekSkipped: sum(CNT.PEEK_SKIPPED),
      mmsgOverflow: sum(CNT.MMSG_OVERFLOW),
      sockClosed: sum(CNT.SOCK_CLOSED),
      probes,
    };
  }

  /**
   * Set by `capture`: close() hands the kernel-side detach to a background process instead of
   * waiting for it (see handOffLinks). `run` leaves it off and detaches before it exits.
   */
  closeInBackground = false;
  private holder: ReturnType<typeof Bun.spawn> | undefined;

  private wakeup: RingWakeup | undefined;

  /**
   * The read end of a pipe that gets a byte whenever the kernel writes a record that must not wait
   * for the reader's next poll (a process exec, a listen(), an executable mapping: output_now() in
   * bpf/lib/output.h); every other record waits. Undefined with perf buffers, which have no such
   * wakeups, and when the helper thread cannot start (logged): the reader then polls often.
   */
  wakeupFd(): number | undefined {
    if (this.buffer !== "ringbuf") return undefined;
    if (!this.wakeup) {
      try {
        this.wakeup = new RingWakeup(this.fds.events!);
      } catch (e) {
        log.warn("no ring buffer wakeups; polling the ring every few ms instead", { reason: (e as Error).message });
        return undefined;
      }
    }
    return this.wakeup.fd;
  }

  close(): void {
    this.wakeup?.close();
    this.wakeup = undefined;
    this.source.close();
    if (this.probes) {
      if (this.closeInBackground) this.handOffLinks(this.probes.links());
      this.probes.detachAll();
    }
    this.pidBytes = undefined;
    this.pidMapping?.unmap();
    this.pidMapping = undefined;
    this.obj.close();
    // After the links: the kernel refuses to remove a kretprobe event that is still in use.
    for (const ev of this.kprobeEvents) {
      try {
        appendFileSync(`${this.tracefs}/kprobe_events`, `-:${ev}\n`);
      } catch {
        /* already gone */
      }
    }
    this.kprobeEvents = [];
  }

  /**
   * Releasing a perf event (every tracepoint, kprobe and uprobe link) waits for an RCU grace
   * period under the kernel's event_mutex: ~35-70 ms per link, one after the other, seconds for
   * the whole set. A child shell inherits the link fds and keeps them open until this process
   * has exited (its stdin pipe reaches EOF), then closes them and removes the kretprobe events.
   * Our own detach then disables each perf event (the programs stop at once) and only drops
   * references. If the shell cannot be started, close() detaches here as usual.
   */
  private handOffLinks(links: Link[]): void {
    const fds = links.map((l) => l.fd).filter((fd) => fd >= 0);
    if (!fds.length) return;
    const closeFds = fds.map((_, i) => `${i + 3}>&-`).join(" ");
    const removeEvents = this.kprobeEvents.map((ev) => `echo '-:${ev}' >> '${this.tracefs}/kprobe_events' 2>/dev/null`).join("; ");
    const script = `trap '' INT HUP TERM; read -r _; exec ${closeFds}; ${removeEvents || ":"}`;
    try {
      this.holder = Bun.spawn(["/bin/sh", "-c", script], { stdio: ["pipe", "ignore", "ignore", ...fds] });
      this.holder.unref();
      log.debug("probe detach handed to a background process", { pid: this.holder.pid, links: fds.length, kprobeEvents: this.kprobeEvents.length });
      this.kprobeEvents = [];
    } catch (e) {
      log.debug("background detach unavailable; detaching here", { reason: (e as Error).message });
    }
  }
}

function u32(n: number): Uint8Array {
  const k = new Uint8Array(4);
  new DataView(k.buffer).setUint32(0, n, true);
  return k;
}

/** The kernel's comm for an executable: its file name, cut to 15 bytes, NUL-padded to 16. */
export function commKey(name: string): Uint8Array {
  const base = name.slice(name.lastIndexOf("/") + 1);
  const k = new Uint8Array(16);
  k.set(new TextEncoder().encode(base).subarray(0, 15));
  return k;
}
