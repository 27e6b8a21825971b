/** What the benchmarks read of a process from /proc: CPU ticks and memory figures. */
import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc/PID/stat's utime and stime. */
export const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** utime + stime (fields 14 and 15) in clock ticks; the comm field may hold spaces. */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

/** cpuTicks of `pid` and of its children (an nginx master and its workers). */
export function treeTicks(pid: number): number {
  let n = cpuTicks(pid);
  let kids: string[] = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
  } catch {
    // no children file (older kernels without CONFIG_PROC_CHILDREN): the process alone
  }
  for (const k of kids) {
    try {
      n += cpuTicks(Number(k));
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

/** A "Key:  N kB" line of /proc/PID/status, in MB; NaN when absent. */
export function statusMb(pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}
