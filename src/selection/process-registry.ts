/**
 * What the agent knows about each traced process, for span attributes: filled from exec/fork
 * events (so short-lived processes are described even after they are gone) and otherwise read
 * from /proc on first use. Entries of exited processes linger briefly for late exchanges.
 */
import { readProc } from "./procfs.ts";
import { containerIdOf, systemdUnitOf } from "./cgroups.ts";
import type { ProcEvent } from "../kernel/event-decoder.ts";

export interface ProcessDetails {
  pid: number;
  name: string;       // executable file name (comm when the path is unknown)
  exePath: string;
  commandLine: string;
  /** service.name chosen by selection for this process, if any */
  serviceName?: string;
  /** targets[].max_spans_per_second of the target that selected it */
  maxSpansPerSecond?: number;
  cgroup?: string;
  containerId?: string;
  systemdUnit?: string;
  exitedAt?: number;  // ms epoch
}

const LINGER_MS = 30_000;
const MAX_ENTRIES = 65_536;

export class ProcessRegistry {
  private byPid = new Map<number, ProcessDetails>();

  constructor(private readonly procRoot = "/proc") {}

  onEvent(e: ProcEvent): void {
    if (e.kind === "exec") {
      const old = this.byPid.get(e.tgid);
      this.byPid.set(e.tgid, {
        pid: e.tgid,
        name: e.path ? e.path.slice(e.path.lastIndexOf("/") + 1) : e.comm,
        exePath: e.path,
        commandLine: e.args.join(" "),
        // what selection decided for this pid stays until it decides again: the selector may
        // have handled this exec before the registry does (a target's rate limit was lost so)
        serviceName: old?.serviceName,
        maxSpansPerSecond: old?.maxSpansPerSecond,
        cgroup: old?.cgroup,
        containerId: old?.containerId,
        systemdUnit: old?.systemdUnit,
      });
    } else if (e.kind === "fork") {
      const parent = this.byPid.get(e.ppid);
      this.byPid.set(e.tgid, parent ? { ...parent, pid: e.tgid, exitedAt: undefined } : this.fromProc(e.tgid, e.comm));
    } else {
      const d = this.byPid.get(e.tgid);
      if (d) d.exitedAt = Date.now();
    }
    if (this.byPid.size > MAX_ENTRIES) this.sweep(true);
  }

  /** Details for `pid`, reading /proc the first time; `comm` is the fallback name. */
  get(pid: number, comm = ""): ProcessDetails {
    let d = this.byPid.get(pid);
    if (!d) {
      d = this.fromProc(pid, comm);
      this.byPid.set(pid, d);
    }
    return d;
  }

  setServiceName(pid: number, name: string | undefined): void {
    if (name === undefined && !this.byPid.has(pid)) return;
    const d = this.get(pid);
    d.serviceName = name;
  }

  setCgroup(pid: number, cgroup: string, containerId: string | undefined, systemdUnit: string | undefined): void {
    const d = this.get(pid);
    d.cgroup = cgroup || undefined;
    d.containerId = containerId;
    d.systemdUnit = systemdUnit;
  }

  private fromProc(pid: number, comm: string): ProcessDetails {
    const p = readProc(pid, this.procRoot);
    if (!p) return { pid, name: comm, exePath: "", commandLine: "" };
    return {
      pid,
      name: p.exe ? p.exe.slice(p.exe.lastIndexOf("/") + 1) : p.comm,
      exePath: p.exe,
      commandLine: p.cmdline.join(" "),
      cgroup: p.cgroup || undefined,
      containerId: containerIdOf(p.cgroup),
      systemdUnit: systemdUnitOf(p.cgroup),
    };
  }

  /** Drops entries of processes that exited more than LINGER_MS ago (all exited when `force`). */
  sweep(force = false): void {
    const now = Date.now();
    for (const [pid, d] of this.byPid) {
      if (d.exitedAt !== undefined && (force || now - d.exitedAt > LINGER_MS)) this.byPid.delete(pid);
    }
  }

  get size(): number {
    return this.byPid.size;
  }
}
