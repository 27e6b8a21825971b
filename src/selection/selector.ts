/**
 * Applies selection rules to the kernel filter and keeps it right as processes come and go:
 * one /proc scan at start (and on reload), then exec/fork/exit/listen events from BPF, plus an
 * optional safety-net rescan every proc_fs_scan_period_in_sec (0 = never). Every decision is
 * logged once per process.
 */
import { descendants, listeningPortsByPid, listPids, readProc, scanProcs, type ProcInfo } from "./procfs.ts";
import { CGROUP_ROOT, CgroupPaths, cgroupId, isCgroupV2, walkCgroups, containerIdOf, systemdUnitOf } from "./cgroups.ts";
import { decide, kernelNeeds, serviceNameFor, baseName, type ProcessFacts, type Rules, type Decision } from "./rules.ts";
import { modeBits, modeName } from "./modes.ts";
import type { ConnEvent, ProcEvent } from "../kernel/event-decoder.ts";
import type { ProcessRegistry } from "./process-registry.ts";
import { log } from "../log/log.ts";

/** What the selection wants for one process: its mode (0 = written as excluded) and why. */
type Wanted = { mode: number; d: Decision; facts: ProcessFacts };

/** Kernel filter operations the selector uses (KernelTracer implements them). */
export interface SelectorMaps {
  setPid(tgid: number, mode: number): number;
  deletePid(tgid: number): number;
  pids(): Map<number, number>;
  setExeName(name: string, mode: number): number;
  deleteExeName(name: string): number;
  setCgroup(id: bigint, mode: number): number;
  deleteCgroup(id: bigint): number;
  setFlags(f: { captureAllMode: number; notifyAllExec: boolean; notifyListen: boolean }): void;
  setPort?(port: number, mode: number): number;
  deletePort?(port: number): number;
}

export interface SelectedProcess {
  pid: number;
  name: string;
  exe: string;
  mode: string;
  service?: string;
}

/** Told when a process becomes captured (again: rescans repeat it) or stops being captured. */
export interface SelectionListener {
  selected(pid: number, comm: string): void;
  deselected(pid: number): void;
}

export class Selector {
  private rules!: Rules;
  /** TLS capture follows the selection (src/kernel/tls/manager.ts) */
  listener?: SelectionListener;
  private exeNames = new Map<string, number>();
  private cgroups = new Map<bigint, number>();
  private ports = new Map<number, number>();
  private logged = new Map<number, SelectedProcess>();
  /** setPid failures because the kernel's selected_pids map was full (E2BIG), and any other errno. */
  private pidsFull = 0;
  private pidErrors = 0;
  private readonly cgPaths: CgroupPaths;
  private readonly v2: boolean;

  constructor(
    private readonly maps: SelectorMaps,
    private readonly registry: ProcessRegistry,
    private readonly procRoot = "/proc",
    private readonly cgroupRoot = CGROUP_ROOT,
  ) {
    this.cgPaths = new CgroupPaths(cgroupRoot);
    this.v2 = isCgroupV2(cgroupRoot);
  }

  /** Applies `rules` from scratch (start and reload): scan, diff against the kernel, write. */
  apply(rules: Rules): void {
    this.rules = rules;
    const needs = kernelNeeds(rules);
    if (needs.cgroups && !this.v2) {
      log.warn("cgroup v2 is not mounted: unit/cgroup/container targets are matched per process at exec and start only");
    }
    this.applyExeNames(rules);
    this.applyPorts(rules);
    this.applyCgroups(rules, needs.cgroups && this.v2);
    this.maps.setFlags({
      captureAllMode: rules.captureAll ? modeBits(rules.captureAll) : 0,
      notifyAllExec: needs.execEvents || needs.cgroups,
      notifyListen: needs.listenEvents,
    });
    this.applyPids(rules, needs.listenEvents);
  }

  /** The safety net: the same /proc scan as at start, for what events could have missed (a
   * full ring, pid reuse); cheap diff against the kernel map, only changes are written. */
  rescan(): void {
    if (this.rules) this.applyPids(this.rules, kernelNeeds(this.rules).listenEvents);
  }

  private applyExeNames(rules: Rules): void {
    const want = new Map<string, number>();
    for (const t of rules.targets) {
      if (!t.kernelExe) continue;
      const name = baseName(t.kernelExe);
      if (!want.has(name)) want.set(name, modeBits(t.mode));
    }
    for (const name of rules.exclude) want.set(baseName(name), 0);
    for (const name of this.exeNames.keys()) if (!want.has(name)) this.maps.deleteExeName(name);
    for (const [name, mode] of want) if (this.exeNames.get(name) !== mode) this.maps.setExeName(name, mode);
    this.exeNames = want;
  }

  private applyPorts(rules: Rules): void {
    if (!this.maps.setPort || !this.maps.deletePort) return;
    const want = new Map<number, number>();
    for (const t of rules.targets) {
      if (t.kernelPort !== undefined && !want.has(t.kernelPort)) want.set(t.kernelPort, modeBits(t.mode));
    }
    for (const p of this.ports.keys()) if (!want.has(p)) this.maps.deletePort(p);
    for (const [p, mode] of want) if (this.ports.get(p) !== mode) this.maps.setPort(p, mode);
    this.ports = want;
  }

  private applyCgroups(rules: Rules, enabled: boolean): void {
    const want = new Map<bigint, number>();
    if (enabled) {
      const pure = rules.targets.filter((t) => t.needsCgroup && t.source.pid === undefined && t.source.exe === undefined && t.source.cmdline === undefined && t.source.port === undefined);
      if (pure.length) {
        for (const path of walkCgroups(this.cgroupRoot)) {
          const facts: ProcessFacts = { pid: -1, comm: "", exe: "", cmdline: "", cgroup: path, ports: [] };
          const t = pure.find((x) => x.test(facts));
          if (!t) continue;
          const id = cgroupId(path, this.cgroupRoot);
          if (id !== undefined && !want.has(id)) want.set(id, modeBits(t.mode));
        }
      }
    }
    for (const id of this.cgroups.keys()) if (!want.has(id)) this.maps.deleteCgroup(id);
    for (const [id, mode] of want) if (this.cgroups.get(id) !== mode) this.maps.setCgroup(id, mode);
    this.cgroups = want;
  }

  private applyPids(rules: Rules, withPorts: boolean): void {
    const ports = withPorts || rules.targets.some((t) => t.needsPorts) ? listeningPortsByPid(this.procRoot) : new Map<number, number[]>();
    const procs = scanProcs(this.procRoot);
    const desired = new Map<number, Wanted>();
    const writeExcluded = !!rules.captureAll || this.cgroups.size > 0;
    for (const p of procs) {
      const facts = factsOf(p, ports.get(p.pid) ?? []);
      const d = decide(rules, facts);
      if (d.selected) desired.set(p.pid, { mode: modeBits(d.mode!), d, facts });
      else if (d.excluded && writeExcluded) desired.set(p.pid, { mode: 0, d, facts });
    }
    this.inheritParents(desired, procs);
    const scanned = new Set(procs.map((p) => p.pid));
    const current = this.maps.pids();
    for (const [pid, mode] of current) {
      // A pid the scan did not see started after it; the kernel selected it at fork/exec.
      if (scanned.has(pid) && !desired.has(pid)) {
        this.maps.deletePid(pid);
        if (mode) this.logRemoved(pid, "no longer selected");
      }
    }
    this.writePids(desired, desired.keys(), current);
    this.adoptLateChildren(desired, scanned);
  }

  /** Children of selected processes among `procs` follow their parent, as they would have at
   * fork: added to `desired` (except those `skip` names), parents before children. Returns them. */
  private inheritParents(desired: Map<number, Wanted>, procs: ProcInfo[], skip?: (pid: number) => boolean): number[] {
    const added: number[] = [];
    const roots = [...desired].filter(([, v]) => v.mode !== 0).map(([pid]) => pid);
    for (const p of descendants(roots, procs)) {
      const parent = desired.get(p.ppid);
      if (desired.has(p.pid) || !parent || parent.mode === 0 || skip?.(p.pid)) continue;
      desired.set(p.pid, { mode: parent.mode, d: parent.d, facts: factsOf(p, []) });
      added.push(p.pid);
    }
    return added;
  }

  /** Writes the `pids` of `desired` whose kernel entry differs from `current`; logs the selected. */
  private writePids(desired: Map<number, Wanted>, pids: Iterable<number>, current: Map<number, number>): void {
    for (const pid of pids) {
      const { mode, d, facts } = desired.get(pid)!;
      if (current.get(pid) !== mode && !this.setPid(pid, mode)) continue;
      if (mode) this.logAdded(pid, facts, d, mode);
    }
  }

  /**
   * A child forked after the scan but before its parent was written to the kernel map was
   * neither in the scan nor selected by the fork probe (the parent was not selected yet when it
   * forked): nginx forking its workers while the agent starts. Every fork after a parent's
   * write is the kernel's (those are left to their fork events), so looking again after the
   * writes finds the rest; children written here may themselves have forked meanwhile, hence a
   * few rounds. Only the processes that appeared since the last look are read.
   */
  private adoptLateChildren(desired: Map<number, Wanted>, scanned: Set<number>): void {
    for (let round = 0; round < 3; round++) {
      const procs: ProcInfo[] = [];
      for (const pid of listPids(this.procRoot)) {
        if (scanned.has(pid)) continue;
        scanned.add(pid);
        const p = readProc(pid, this.procRoot);
        if (p) procs.push(p);
      }
      let current: Map<number, number> | undefined;
      const kernel = () => (current ??= this.maps.pids());
      const added = this.inheritParents(desired, procs, (pid) => kernel().has(pid));
      if (added.length === 0) return;
      this.writePids(desired, added, kernel());
    }
  }

  /** A process called execve: the kernel reports selected ones, and every one when rules need it.
   * Returns whether the process is captured. */
  onExec(e: ProcEvent): boolean {
    if (!this.rules) return e.mode !== 0;
    const facts: ProcessFacts = {
      pid: e.tgid, comm: e.comm, exe: e.path, cmdline: e.args.join(" "),
      cgroup: this.cgPaths.pathOf(e.cgroupId) ?? "", ports: [],
    };
    const d = decide(this.rules, facts);
    if (d.selected) {
      const mode = modeBits(d.mode!);
      if (e.mode !== mode && !this.setPid(e.tgid, mode)) return e.mode !== 0;
      this.logAdded(e.tgid, facts, d, mode);
      return true;
    }
    if (d.excluded && e.mode) {
      this.setPid(e.tgid, 0);
      this.logRemoved(e.tgid, "excluded");
      return false;
    }
    if (e.mode) {
      // Selected by inheritance from its parent: it stays selected, under its new name.
      this.logAdded(e.tgid, facts, { selected: true, excluded: false }, e.mode);
      return true;
    }
    return false;
  }

  onFork(e: ProcEvent): void {
    const parent = this.logged.get(e.ppid);
    if (parent) this.registry.setServiceName(e.tgid, parent.service);
  }

  onExit(e: ProcEvent): void {
    if (this.logged.has(e.tgid)) this.logRemoved(e.tgid, "exited");
  }

  /** A process started listening: port targets may now select it (and its children). */
  onListen(e: ConnEvent): void {
    if (!this.rules || !this.rules.targets.some((t) => t.needsPorts)) return;
    const p = readProc(e.tgid, this.procRoot);
    if (!p) return;
    const d = decide(this.rules, factsOf(p, [e.localPort]));
    if (!d.selected) {
      // the kernel selected it at listen() for a port rule, but it is excluded by name
      if (d.excluded && this.ports.has(e.localPort)) this.setPid(p.pid, 0);
      return;
    }
    const mode = modeBits(d.mode!);
    for (const info of [p, ...descendants([p.pid], scanProcs(this.procRoot))]) {
      if (this.setPid(info.pid, mode)) this.logAdded(info.pid, factsOf(info, []), d, mode);
    }
  }

  /**
   * Writes one pid into the kernel filter. A full map (E2BIG: selected_pids holds 65,536 pids)
   * means the process is not captured: counted (SelectedPidsFull in stats()) and logged once.
   */
  private setPid(pid: number, mode: number): boolean {
    const r = this.maps.setPid(pid, mode);
    if (r === 0) return true;
    if (r === -7 /* E2BIG */) {
      if (this.pidsFull++ === 0) log.error("the kernel's selected_pids map is full: processes selected from now on are not captured", { Pid: pid });
    } else if (this.pidErrors++ === 0) {
      log.error("cannot write a pid into the kernel filter", { Pid: pid, errno: -r });
    }
    return false;
  }

  /** Counters for `status` and the stats line. */
  stats(): { SelectedPidsFull: number; SelectedPidsErrors: number } {
    return { SelectedPidsFull: this.pidsFull, SelectedPidsErrors: this.pidErrors };
  }

  private logAdded(pid: number, facts: ProcessFacts, d: Decision, mode: number): void {
    const service = serviceNameFor(d, facts) ?? this.logged.get(pid)?.service;
    const entry: SelectedProcess = { pid, name: facts.exe ? baseName(facts.exe) : facts.comm, exe: facts.exe, mode: modeName(mode), service };
    const prev = this.logged.get(pid);
    this.listener?.selected(pid, facts.comm || entry.name);
    this.registry.setServiceName(pid, service);
    this.registry.get(pid).maxSpansPerSecond = d.target?.source.max_spans_per_second;
    this.registry.setCgroup(pid, facts.cgroup, containerIdOf(facts.cgroup), systemdUnitOf(facts.cgroup));
    if (prev && prev.mode === entry.mode && prev.service === entry.service) return;
    this.logged.set(pid, entry);
    log.info("Added process to maps", { Pid: pid, Name: entry.name, Exe: facts.exe, Cgroup: facts.cgroup, Service: service ?? "", Enabled: true, Mode: entry.mode });
  }

  private logRemoved(pid: number, reason: string): void {
    const prev = this.logged.get(pid);
    this.logged.delete(pid);
    this.listener?.deselected(pid);
    log.info("Removed process from maps", { Pid: pid, Name: prev?.name ?? "", Exe: prev?.exe ?? "", Reason: reason, Enabled: false });
  }

  selected(): SelectedProcess[] {
    return [...this.logged.values()];
  }
}

function factsOf(p: ProcInfo, ports: number[]): ProcessFacts {
  return { pid: p.pid, comm: p.comm, exe: p.exe, cmdline: p.cmdline.join(" "), cgroup: p.cgroup, ports };
}
