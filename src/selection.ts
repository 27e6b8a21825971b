/**
 * Which processes are captured: turns pid / executable / port selectors into kernel filter
 * entries. Executable names also go into the kernel's exec matcher, so a matching process that
 * starts later is selected at its execve, before its first syscall; children of selected
 * processes inherit the selection in the kernel at fork.
 */
import { listPids, listeningPorts, pidsOwningInodes, readProc, type ProcInfo } from "./procfs.ts";
import { MODE_BOTH, MODE_EGRESS, MODE_INGRESS } from "./event-layout.ts";
import type { Mode } from "./config-schema.ts";
import { log } from "./log.ts";

export interface SelectionSpec {
  pids: number[];
  exe: string[];
  ports: number[];
  mode: Mode;
}

/** The subset of kernel filter operations selection needs (KernelTracer implements it). */
export interface FilterMaps {
  setPid(tgid: number, mode: number): number;
  deletePid(tgid: number): number;
  setExeName(name: string, mode: number): number;
  deleteExeName(name: string): number;
}

export function modeBits(m: Mode): number {
  return m === "ingress" ? MODE_INGRESS : m === "egress" ? MODE_EGRESS : MODE_BOTH;
}

export function modeName(bits: number): Mode | "excluded" {
  return bits === MODE_INGRESS ? "ingress" : bits === MODE_EGRESS ? "egress" : bits === MODE_BOTH ? "ingress_and_egress" : "excluded";
}

/** True when a process runs the executable `sel` (a path, a file name, or a comm). */
export function exeMatches(sel: string, p: Pick<ProcInfo, "exe" | "comm">): boolean {
  if (sel.includes("/")) return p.exe === sel;
  const base = p.exe.slice(p.exe.lastIndexOf("/") + 1);
  return base === sel || (!p.exe && p.comm === sel.slice(0, 15));
}

/** Adds every descendant of `roots` among `procs` to `roots`. */
export function withDescendants(roots: Set<number>, procs: ProcInfo[]): Set<number> {
  const out = new Set(roots);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) {
      if (!out.has(p.pid) && out.has(p.ppid)) {
        out.add(p.pid);
        grew = true;
      }
    }
  }
  return out;
}

export interface SelectionResult {
  pids: Map<number, number>;
  missingPids: number[];
}

/** Resolves the spec against /proc now and writes the kernel maps. */
export function applySelection(maps: FilterMaps, spec: SelectionSpec, procRoot = "/proc"): SelectionResult {
  const mode = modeBits(spec.mode);
  for (const name of spec.exe) maps.setExeName(name, mode);
  const procs = listPids(procRoot).map((p) => readProc(p, procRoot)).filter((p): p is ProcInfo => !!p);
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  const roots = new Set<number>();
  const missingPids: number[] = [];
  for (const pid of spec.pids) (byPid.has(pid) ? roots.add(pid) : missingPids.push(pid));
  for (const p of procs) if (spec.exe.some((s) => exeMatches(s, p))) roots.add(p.pid);
  if (spec.ports.length) {
    const inodes = new Set(listeningPorts(procRoot).filter((l) => spec.ports.includes(l.port)).map((l) => l.inode));
    for (const pid of pidsOwningInodes(inodes, procRoot)) roots.add(pid);
  }
  const selected = withDescendants(roots, procs);
  const pids = new Map<number, number>();
  for (const pid of selected) {
    maps.setPid(pid, mode);
    pids.set(pid, mode);
    const p = byPid.get(pid);
    log.info("Added process to maps", { Pid: pid, Name: p?.comm ?? "", Exe: p?.exe ?? "", Cgroup: p?.cgroup ?? "", Enabled: true, Mode: spec.mode });
  }
  for (const pid of missingPids) log.warn("selected pid does not exist", { Pid: pid });
  return { pids, missingPids };
}

/**
 * Classifies a socket that was open before capture started: it is the server side when its
 * local port is a listening TCP port on this host. Listener lists are cached for a second.
 */
export class SocketClassifier {
  private ports = new Set<number>();
  private readAt = 0;
  constructor(private readonly procRoot = "/proc") {}
  isListeningPort(port: number): boolean {
    const now = Date.now();
    if (!this.ports.has(port) && now - this.readAt > 1000) {
      this.ports = new Set(listeningPorts(this.procRoot).map((l) => l.port));
      this.readAt = now;
    }
    return this.ports.has(port);
  }
}
