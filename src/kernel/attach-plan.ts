/**
 * The attach plan: which BPF program goes where, as data. Every program of the object becomes a
 * Probe (kind, target, program, optional or required) read from its ELF section; planAttach
 * chooses what this kernel gets (one flavour per syscall: tracepoints preferred, kprobes where
 * tracepoints are missing or disabled; optional probes without an attach point skipped and
 * listed; a required one missing is an error). ProbeLinks then attaches and detaches one link
 * at a time, keeps every link handle, and reference-counts uprobes per file identity
 * (st_dev, st_ino), so each file is probed once however many selected processes map it.
 *
 * The kernel calls are injected (LinkOps), so the plan logic is tested without root.
 */
import { statSync } from "node:fs";
import { TracerError } from "../errors.ts";
import { log } from "../log/log.ts";

export type ProbeKind = "tracepoint" | "raw_tracepoint" | "kprobe" | "kretprobe" | "uprobe" | "uretprobe";
export type SyscallFlavour = "tracepoint" | "kprobe";

export interface Probe {
  kind: ProbeKind;
  program: string;
  /** the ELF section the probe was read from (what `attached` and `skipped` list) */
  section: string;
  /**
   * tracepoint: "category/name"; raw_tracepoint: its name; kprobe/kretprobe: the kernel
   * function, or the syscall name when `syscall` is set (the kernel symbol is resolved when
   * attaching); uprobe/uretprobe: "" (file and offset come with attachUprobes).
   */
  target: string;
  /** set on syscall probes: entry and exit of one syscall always use one flavour */
  syscall?: string;
  /** optional probes whose attach point is missing are skipped; required ones fail the start */
  optional: boolean;
  /**
   * The object's program that runs for this probe when it is not `program`: its loop variant
   * (`program` + LOOP_VARIANT), chosen by planAttach. `program` stays the probe's name
   * everywhere else (uprobe targets name it).
   */
  loads?: string;
}

/** Suffix of a program's loop variant: the same probe, copying through bpf_loop (5.17+); a
 * syscall exit's variant also reads the call's arguments from the registers, so its syscall's
 * entry program is not loaded then. */
export const LOOP_VARIANT = "_lp";

/** The object program that runs for `p`. */
export function loadedProgram(p: Probe): string {
  return p.loads ?? p.program;
}

/**
 * Required probes: the process lifecycle. Without them selection by executable and the end of
 * processes go unseen, which would be wrong rather than merely incomplete.
 */
const REQUIRED_TARGETS = new Set(["sched/sched_process_exec", "sched/sched_process_exit", "sched_process_fork"]);

const SECTION_RULES: [RegExp, (m: RegExpExecArray) => Pick<Probe, "kind" | "target" | "syscall">][] = [
  [/^(?:tracepoint|tp)\/syscalls\/sys_(?:enter|exit)_(\w+)$/, (m) => ({ kind: "tracepoint", target: m[0].slice(m[0].indexOf("/") + 1), syscall: m[1] })],
  [/^(?:tracepoint|tp)\/([^/]+\/[^/]+)$/, (m) => ({ kind: "tracepoint", target: m[1]! })],
  [/^(?:raw_tracepoint|raw_tp)\/(.+)$/, (m) => ({ kind: "raw_tracepoint", target: m[1]! })],
  [/^ksyscall\/(\w+)$/, (m) => ({ kind: "kprobe", target: m[1]!, syscall: m[1] })],
  [/^kretsyscall\/(\w+)$/, (m) => ({ kind: "kretprobe", target: m[1]!, syscall: m[1] })],
  [/^kprobe\/(.+)$/, (m) => ({ kind: "kprobe", target: m[1]! })],
  [/^kretprobe\/(.+)$/, (m) => ({ kind: "kretprobe", target: m[1]! })],
  [/^uprobe(?:\/.*)?$/, () => ({ kind: "uprobe", target: "" })],
  [/^uretprobe(?:\/.*)?$/, () => ({ kind: "uretprobe", target: "" })],
];

/** The probe a program of the object describes by its section; INTERNAL for an unknown section. */
export function probeOf(program: string, section: string): Probe {
  for (const [re, make] of SECTION_RULES) {
    const m = re.exec(section);
    if (m) {
      const p = make(m);
      return { ...p, program, section, optional: !REQUIRED_TARGETS.has(p.target) };
    }
  }
  throw new TracerError("INTERNAL", `BPF program ${program}: section ${section} has no attach rule`);
}

function isExit(p: Probe): boolean {
  return p.kind === "kretprobe" || (p.kind === "tracepoint" && p.target.startsWith("syscalls/sys_exit_"));
}

function flavourOf(p: Probe): SyscallFlavour {
  return p.kind === "tracepoint" ? "tracepoint" : "kprobe";
}

export interface PlanEnv {
  /** syscall flavours this configuration and kernel allow, preferred first */
  flavours: SyscallFlavour[];
  /** whether the probe's attach point exists on this kernel (tracepoint, kernel symbol) */
  exists(p: Probe): boolean;
  /** load loop variants instead of their programs: the kernel has bpf_loop and the ring buffer
   * is in use (a variant's copy loop writes to the ring only) */
  loopVariants?: boolean;
}

export interface AttachPlan {
  /** probes attached at start, in object order */
  start: Probe[];
  /** uprobe programs: loaded, attached per file by ProbeLinks.attachUprobes */
  uprobes: Probe[];
  /** programs not to load: the other syscall flavour, missing attach points */
  unload: string[];
  /** sections of optional probes skipped because their attach point is missing */
  skipped: string[];
  /** the flavour chosen for each syscall that has one */
  flavour: Record<string, SyscallFlavour>;
}

export function planAttach(all: Probe[], env: PlanEnv): AttachPlan {
  const plan: AttachPlan = { start: [], uprobes: [], unload: [], skipped: [], flavour: {} };
  // A program with a loop variant is one probe: the variant is loaded in its place, or never.
  const names = new Set(all.map((p) => p.program));
  const probes: Probe[] = [];
  for (const p of all) {
    if (p.program.endsWith(LOOP_VARIANT) && names.has(p.program.slice(0, -LOOP_VARIANT.length))) {
      if (!env.loopVariants) plan.unload.push(p.program);
      continue;
    }
    const variant = p.program + LOOP_VARIANT;
    if (env.loopVariants && names.has(variant)) {
      plan.unload.push(p.program);
      probes.push({ ...p, loads: variant });
    } else {
      probes.push(p);
    }
  }
  // A syscall whose exit runs its loop variant has no entry program: the variant takes the
  // call's arguments from the task's registers (bpf/lib/syscalls.h, call_from_regs).
  const exitOnly = new Set(probes.filter((p) => p.syscall && p.loads && isExit(p)).map((p) => p.syscall!));
  const needed = probes.filter((p) => {
    const drop = !!p.syscall && exitOnly.has(p.syscall) && !isExit(p);
    if (drop) plan.unload.push(p.program);
    return !drop;
  });
  const bySyscall = new Map<string, Probe[]>();
  for (const p of needed) if (p.syscall) bySyscall.set(p.syscall, [...(bySyscall.get(p.syscall) ?? []), p]);
  const unattachable = new Set<Probe>();
  for (const [sc, ps] of bySyscall) {
    const chosen = env.flavours.find((f) => {
      const of = ps.filter((p) => flavourOf(p) === f);
      return of.length > 0 && of.every((p) => env.exists(p));
    });
    if (chosen) {
      plan.flavour[sc] = chosen;
      continue;
    }
    // No flavour works: list the missing attach points of the allowed flavours, or every probe
    // of the syscall when it has none in an allowed flavour (e.g. a tracepoint-only probe when
    // tracepoints are disabled).
    const allowed = ps.filter((p) => env.flavours.includes(flavourOf(p)));
    for (const p of allowed.length ? allowed.filter((q) => !env.exists(q)) : ps) unattachable.add(p);
  }
  for (const p of needed) {
    if (p.kind === "uprobe" || p.kind === "uretprobe") {
      plan.uprobes.push(p);
    } else if (p.syscall) {
      const chosen = plan.flavour[p.syscall];
      if (chosen === flavourOf(p)) {
        plan.start.push(p);
        continue;
      }
      plan.unload.push(loadedProgram(p));
      if (unattachable.has(p)) {
        if (!p.optional) throw missing(p);
        plan.skipped.push(p.section);
      }
    } else if (env.exists(p)) {
      plan.start.push(p);
    } else if (p.optional) {
      plan.unload.push(loadedProgram(p));
      plan.skipped.push(p.section);
    } else {
      throw missing(p);
    }
  }
  return plan;
}

function missing(p: Probe): TracerError {
  return new TracerError("UNSUPPORTED", `this kernel has no ${p.kind.replace("_", " ")} ${p.target} (needed by BPF program ${p.program})`);
}

/** What ProbeLinks needs from a link handle: names for the log. */
export interface LinkLike {
  readonly program: string;
  readonly point: string;
}

/** The kernel side of attaching, injected (libbpf in KernelTracer, fakes in tests). */
export interface LinkOps<L extends LinkLike> {
  attach(p: Probe): L;
  attachUprobe(p: Probe, file: string, offset: number): L;
  /** detaches; `wait` false may finish after returning (detach while capture goes on) */
  detach(links: L[], wait: boolean): void;
}

/** A file's identity for uprobes: the same inode reached by different paths is one file. */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  path: string;
}

export function fileIdentity(path: string): FileIdentity {
  const st = statSync(path, { bigint: true });
  return { dev: st.dev, ino: st.ino, path };
}

/** One uprobe (or uretprobe) program at a file offset, e.g. computed from an ELF symbol. */
export interface UprobeTarget {
  program: string;
  offset: number;
  /** for logs: the symbol the offset was computed from */
  symbol?: string;
}

interface FileLinks<L> {
  refs: number;
  id: FileIdentity;
  links: L[];
}

export class ProbeLinks<L extends LinkLike> {
  private readonly started: { probe: Probe; link: L }[] = [];
  private readonly files = new Map<string, FileLinks<L>>();
  private readonly uprobePrograms: Map<string, Probe>;

  constructor(
    readonly plan: AttachPlan,
    private readonly ops: LinkOps<L>,
    private readonly identify: (path: string) => FileIdentity = fileIdentity,
  ) {
    this.uprobePrograms = new Map(plan.uprobes.map((p) => [p.program, p]));
  }

  /** Sections attached at start, in order. */
  get attached(): string[] {
    return this.started.map((s) => s.probe.section);
  }

  /** Attaches the start probes one link at a time; on failure detaches what it attached. */
  attachStart(): void {
    for (const probe of this.plan.start) {
      let link: L;
      try {
        link = this.ops.attach(probe);
      } catch (e) {
        this.detachAll();
        throw e;
      }
      this.started.push({ probe, link });
      log.debug("probe attached", { program: link.program, kind: probe.kind, point: link.point });
    }
  }

  /**
   * Probes `file` with the given uprobe programs, or only counts one more user when the same
   * file (device, inode) is already probed. Returns the identity to release later (the path may
   * name another file by then). On failure nothing stays attached for this call.
   */
  attachUprobes(file: string | FileIdentity, targets: UprobeTarget[]): FileIdentity {
    const id = typeof file === "string" ? this.identify(file) : file;
    const key = `${id.dev}:${id.ino}`;
    const have = this.files.get(key);
    if (have) {
      have.refs++;
      return have.id;
    }
    const links: L[] = [];
    try {
      for (const t of targets) {
        const probe = this.uprobePrograms.get(t.program);
        if (!probe) throw new TracerError("INTERNAL", `BPF program ${t.program} is not a uprobe program of the object`);
        const link = this.ops.attachUprobe(probe, id.path, t.offset);
        links.push(link);
        log.debug("probe attached", { program: link.program, kind: probe.kind, point: link.point, file: id.path, symbol: t.symbol });
      }
    } catch (e) {
      this.ops.detach(links, false);
      throw e;
    }
    this.files.set(key, { refs: 1, id, links });
    return id;
  }

  /** One user fewer of a probed file; its uprobes are detached when none is left. */
  release(file: string | FileIdentity): void {
    const id = typeof file === "string" ? this.identify(file) : file;
    const key = `${id.dev}:${id.ino}`;
    const f = this.files.get(key);
    if (!f) return;
    if (--f.refs > 0) return;
    this.files.delete(key);
    this.ops.detach(f.links, false);
    for (const l of f.links) log.debug("probe detached", { program: l.program, point: l.point, file: f.id.path });
  }

  /** Users of a probed file (0 when not probed). */
  uprobeUsers(file: FileIdentity): number {
    return this.files.get(`${file.dev}:${file.ino}`)?.refs ?? 0;
  }

  /** Every link attached now (start probes and uprobes). */
  links(): L[] {
    const all: L[] = this.started.map((s) => s.link);
    for (const f of this.files.values()) all.push(...f.links);
    return all;
  }

  /** Detaches every link (start probes and uprobes) and returns when they are gone. */
  detachAll(): void {
    const all = this.links();
    const files = [...this.files.values()];
    const started = this.started.splice(0);
    this.files.clear();
    this.ops.detach(all, true);
    if (!log.enabled("debug")) return;
    for (const { link: l } of started) log.debug("probe detached", { program: l.program, point: l.point });
    for (const f of files) for (const l of f.links) log.debug("probe detached", { program: l.program, point: l.point, file: f.id.path });
  }
}
