/**
 * TLS capture for the selected processes: discovery (discover.ts) → uprobes per file through the
 * attach plan (KernelTracer.attachUprobes, refcounted per (dev, inode)) → the kernel's per-process
 * maps (tls_procs, go_tls_offsets, tls_known_files) → the coverage report (coverage.ts).
 *
 * Users of a probed file: every selected process that maps it, plus "host" for the TLS libraries
 * of /etc/ld.so.cache probed at start (so a library a process maps later, e.g. Python's
 * `import ssl`, is probed before its first call). A file's uprobes go when its last user is gone.
 * Nothing here throws to the caller: a file that cannot be read or probed is reported in the
 * coverage (reasons, probe errors) and logged.
 */
import { readFileSync, statSync } from "node:fs";
import { analyzeElf, mkdev, parseMaps, TlsDiscovery, type DiscoverOptions, type ProcessTls, type TlsStack } from "./discover.ts";
import { ElfFile } from "./elf.ts";
import { readLdCache, tlsLibraryCandidates } from "./ldcache.ts";
import { TlsCoverageBook, type TlsCoverage } from "./coverage.ts";
import type { FileIdentity, UprobeTarget } from "../attach-plan.ts";
import { log } from "../../log/log.ts";

/** What TlsCapture needs from the kernel (KernelTracer implements it; tests fake it). */
export interface TlsKernel {
  attachUprobes(file: string | FileIdentity, targets: UprobeTarget[]): FileIdentity;
  releaseUprobes(file: string | FileIdentity): void;
  setTlsEnabled(on: boolean): number;
  setTlsProc(tgid: number, on: boolean): number;
  setGoTlsOffsets(tgid: number, value: Uint8Array | undefined): number;
  setTlsKnownFile(dev: number, ino: number, tls: boolean): number;
}

export interface TlsCaptureOptions extends DiscoverOptions {
  /** config enable_uprobes */
  enabled: boolean;
  /** probe the TLS libraries of the loader cache at start (docs/tls.md §4) */
  probeLdCache?: boolean;
  ldCachePath?: string;
}

const HOST = 0; // the user id of the loader-cache libraries (no process has pid 0)

interface ProbedFile {
  id?: FileIdentity;
  users: Set<number>;
  kind: string;
  targets: number;
  error?: string;
}

interface ProcEntry {
  comm: string;
  files: Set<string>;
  library?: string;
}

/**
 * The library a process's spans name when it maps `kind` and was credited `had` so far. The
 * kernel does not say which library a plaintext event came from: a process mapping several (curl
 * maps libssl, and libgnutls through librtmp) is credited to OpenSSL first.
 */
function creditedLibrary(had: string | undefined, kind: string): string {
  return !had || (had === "gnutls" && kind !== "gnutls") ? kind : had;
}

/** The uprobe targets of a stack: one per entry/return, one per RET for Go. */
export function uprobeTargets(s: TlsStack): UprobeTarget[] {
  const out: UprobeTarget[] = [];
  for (const p of s.probes) {
    if (p.kind === "ret-offsets") for (const off of p.retOffsets ?? []) out.push({ program: p.program, offset: off, symbol: `${p.symbol}+ret` });
    else out.push({ program: p.program, offset: p.offset, symbol: p.kind === "copy" ? `${p.symbol}+copy` : p.symbol });
  }
  return out;
}

/** stat's st_dev (glibc's encoding) → the kernel's dev_t as BPF and /proc/PID/maps give it. */
function kernelDev(stDev: number): number {
  const major = (stDev >>> 8) & 0xfff;
  const minor = (stDev & 0xff) | ((stDev >>> 12) & 0xfff00);
  return mkdev(major, minor);
}

export class TlsCapture {
  readonly coverage: TlsCoverageBook;
  private readonly discovery: TlsDiscovery;
  private readonly files = new Map<string, ProbedFile>();
  private readonly procs = new Map<number, ProcEntry>();
  private readonly retries = new Map<number, ReturnType<typeof setTimeout>>();
  /** files analysed and marked in tls_known_files */
  private readonly known = new Set<string>();
  /** library kinds of probed files mapped by processes not added yet (see mapped) */
  private readonly earlyLibrary = new Map<number, string>();
  private attachErrors = 0;

  constructor(private readonly kernel: TlsKernel, private readonly opts: TlsCaptureOptions) {
    this.coverage = new TlsCoverageBook(opts.enabled);
    this.discovery = new TlsDiscovery(opts);
  }

  /** Turns the kernel side on (or off) and probes the loader cache's TLS libraries. */
  start(): void {
    this.kernel.setTlsEnabled(this.opts.enabled);
    if (!this.opts.enabled || this.opts.probeLdCache === false) return;
    let paths: string[];
    try {
      paths = tlsLibraryCandidates(readLdCache(this.opts.ldCachePath), this.opts.libsslPrefixes);
    } catch (e) {
      log.info("TLS: cannot read the loader cache; libraries are probed when a selected process maps them", { reason: (e as Error).message });
      return;
    }
    for (const path of paths) {
      let st;
      let stack: TlsStack | undefined;
      try {
        st = statSync(path);
        const elf = ElfFile.open(path);
        try {
          const a = analyzeElf(elf, false);
          if (a.stack) stack = { ...a.stack, path, dev: kernelDev(st.dev), ino: st.ino };
        } finally {
          elf.close();
        }
      } catch (e) {
        log.debug("TLS: loader-cache library not analysed", { path, reason: (e as Error).message });
        continue;
      }
      if (!stack?.decryptable) continue;
      this.use(HOST, stack, path);
      this.markKnown(stack.dev, stack.ino, true);
    }
  }

  /** A process is selected (start scan, exec, fork) or mapped something new: (re)discover it. */
  addProcess(pid: number, comm: string): void {
    if (!this.opts.enabled) {
      this.kernel.setTlsProc(pid, false);
      return;
    }
    let d: ProcessTls;
    try {
      d = this.discovery.discoverProcess(pid);
    } catch (e) {
      log.debug("TLS discovery failed", { Pid: pid, reason: (e as Error).message });
      return; // gone: its exit follows
    }
    const p = this.procs.get(pid) ?? { comm, files: new Set<string>(), library: this.earlyLibrary.get(pid) };
    this.earlyLibrary.delete(pid);
    p.comm = comm || p.comm;
    this.procs.set(pid, p);
    if (d.excludedBy) {
      this.kernel.setTlsProc(pid, false);
    } else {
      this.kernel.setTlsProc(pid, true);
    }
    let line = this.coverage.setProcess(p.comm, d);
    let go: Uint8Array | undefined;
    const wanted = new Set<string>();
    for (const s of d.stacks) {
      if (!s.decryptable) continue;
      const key = `${s.dev}:${s.ino}`;
      wanted.add(key);
      p.library = creditedLibrary(p.library, s.kind);
      if (s.kind === "go" && s.go) go = s.go.mapValue;
      if (!p.files.has(key)) {
        p.files.add(key);
        this.use(pid, s, `/proc/${pid}/root${s.path}`);
        const f = this.files.get(key);
        if (f) for (let i = 0; i < (f.error ? 1 : f.targets); i++) line = this.coverage.probeResult(pid, s.path, f.error) ?? line;
      }
    }
    // Files the process no longer maps (exec replaced the image): one user fewer.
    for (const key of [...p.files]) {
      if (!wanted.has(key)) {
        p.files.delete(key);
        this.unuse(pid, key);
      }
    }
    this.kernel.setGoTlsOffsets(pid, d.excludedBy ? undefined : go);
    this.markMapped(pid, d);
    const now = this.coverage.snapshot().find((c) => c.pid === pid);
    if (line && now) log.info(line, { Pid: pid, state: now.state });
  }

  /** The process is no longer selected, or exited. */
  removeProcess(pid: number): void {
    const t = this.retries.get(pid);
    if (t) clearTimeout(t);
    this.retries.delete(pid);
    const p = this.procs.get(pid);
    this.procs.delete(pid);
    this.earlyLibrary.delete(pid);
    this.coverage.processGone(pid);
    this.kernel.setTlsProc(pid, false);
    this.kernel.setGoTlsOffsets(pid, undefined);
    if (!p) return;
    for (const key of p.files) this.unuse(pid, key);
  }

  /**
   * EV_TLS_MAP_EXEC: `pid` maps file (dev, ino) executable. The event comes at mmap's entry, so
   * the mapping may not be in /proc/PID/maps yet: rediscovery retries a few times, 20 ms apart.
   */
  mapped(pid: number, dev: number, ino: number, attempt = 0): void {
    const p = this.procs.get(pid);
    // A file already probed (the loader cache's libssl): its kind is known now, before this
    // process's plaintext (later in the ring) is read — a short-lived curl may be gone before
    // /proc/PID/maps shows the mapping, or before its exec is handled (the kernel reports maps
    // only of processes in tls_procs, which it sets at exec for selected ones).
    const probed = attempt === 0 ? this.files.get(`${dev}:${ino}`) : undefined;
    if (probed && !probed.error) {
      if (p) p.library = creditedLibrary(p.library, probed.kind);
      else {
        if (this.earlyLibrary.size >= 65536) this.earlyLibrary.clear();
        this.earlyLibrary.set(pid, creditedLibrary(this.earlyLibrary.get(pid), probed.kind));
      }
    }
    if (!p) return; // not (yet) a process of ours
    this.addProcess(pid, p.comm);
    if (this.known.has(`${dev}:${ino}`) || attempt >= 5) return;
    const prev = this.retries.get(pid);
    if (prev) clearTimeout(prev);
    this.retries.set(pid, setTimeout(() => {
      this.retries.delete(pid);
      this.mapped(pid, dev, ino, attempt + 1);
    }, 20));
  }

  /** The TLS library a process's plaintext comes from (for spans). */
  library(pid: number): string | undefined {
    return this.procs.get(pid)?.library ?? this.earlyLibrary.get(pid);
  }

  snapshot(): TlsCoverage[] {
    return this.coverage.snapshot();
  }

  stats(): { TlsProbedFiles: number; TlsProcesses: number; TlsAttachErrors: number } {
    return { TlsProbedFiles: [...this.files.values()].filter((f) => f.id).length, TlsProcesses: this.procs.size, TlsAttachErrors: this.attachErrors };
  }

  /** Releases every file (the tracer's close detaches the links anyway). `releaseFiles` false:
   * only stop the timers, leaving the links to the tracer's close (capture hands them to a
   * background process: releasing them here, one file at a time, would cost ~70 ms per link). */
  stop(releaseFiles = true): void {
    for (const t of this.retries.values()) clearTimeout(t);
    this.retries.clear();
    if (!releaseFiles) return;
    for (const pid of [...this.procs.keys()]) this.removeProcess(pid);
    for (const [key, f] of this.files) if (f.users.delete(HOST) && f.users.size === 0) this.drop(key, f);
  }

  private use(user: number, s: TlsStack, path: string): void {
    const key = `${s.dev}:${s.ino}`;
    let f = this.files.get(key);
    if (!f) {
      const targets = uprobeTargets(s);
      f = { users: new Set(), kind: s.kind, targets: targets.length };
      try {
        f.id = this.kernel.attachUprobes(path, targets);
        log.info("TLS probes attached", { kind: s.kind, version: s.version ?? "", path: s.path, probes: targets.length });
      } catch (e) {
        this.attachErrors++;
        f.error = (e as Error).message;
        log.warn("TLS probes could not be attached", { kind: s.kind, path: s.path, reason: f.error });
      }
      this.files.set(key, f);
    }
    f.users.add(user);
  }

  private unuse(user: number, key: string): void {
    const f = this.files.get(key);
    if (!f) return;
    f.users.delete(user);
    if (f.users.size === 0) this.drop(key, f);
  }

  private drop(key: string, f: ProbedFile): void {
    this.files.delete(key);
    if (f.id) this.kernel.releaseUprobes(f.id);
  }

  private markKnown(dev: number, ino: number, tls: boolean): void {
    const key = `${dev}:${ino}`;
    if (this.known.has(key)) return;
    this.known.add(key);
    this.kernel.setTlsKnownFile(dev, ino, tls);
  }

  /** Every regular file the process maps is now classified: the mmap probe stays quiet for them. */
  private markMapped(pid: number, d: ProcessTls): void {
    let maps: string;
    try {
      maps = readFileSync(`/proc/${pid}/maps`, "utf8");
    } catch {
      return;
    }
    const tls = new Set(d.stacks.map((s) => `${s.dev}:${s.ino}`));
    const failed = new Set(d.errors.map((e) => e.path));
    for (const f of parseMaps(maps)) if (!failed.has(f.path)) this.markKnown(f.dev, f.ino, tls.has(`${f.dev}:${f.ino}`));
  }
}
