/** The BPF programs a process holds open, and their run time (kernel.bpf_stats_enabled must be 1 for it). */
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";

/** Ids of the BPF programs `pid` holds open (its fds to "anon_inode:bpf-prog"). */
export function ownedProgIds(pid: number): Set<number> {
  const ids = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (!readlinkSync(`/proc/${pid}/fd/${fd}`).includes("bpf-prog")) continue;
      const m = /^prog_id:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"));
      if (m) ids.add(Number(m[1]));
    } catch {
      /* closed meanwhile */
    }
  }
  return ids;
}

/** BPF programs owned by `pid`: name → [run_time_ns, run_cnt] (kernel.bpf_stats_enabled). */
export function bpfStats(pid: number): Map<string, [number, number]> {
  const owned = ownedProgIds(pid);
  const r = Bun.spawnSync(["bpftool", "-j", "prog", "show"], { stdout: "pipe", stderr: "ignore" });
  const out = new Map<string, [number, number]>();
  if (r.exitCode !== 0) return out;
  for (const p of JSON.parse(r.stdout.toString()) as { id: number; name?: string; run_time_ns?: number; run_cnt?: number }[]) {
    if (!owned.has(p.id)) continue;
    const prev = out.get(p.name ?? "?") ?? [0, 0];
    out.set(p.name ?? "?", [prev[0] + (p.run_time_ns ?? 0), prev[1] + (p.run_cnt ?? 0)]);
  }
  return out;
}


/** Which of `ids` the kernel still has loaded (bpftool). */
export function loadedProgIds(ids: Set<number>): number[] {
  const r = Bun.spawnSync(["bpftool", "-j", "prog", "show"], { stdout: "pipe", stderr: "ignore" });
  if (r.exitCode !== 0) return [];
  return (JSON.parse(r.stdout.toString()) as { id: number }[]).map((p) => p.id).filter((id) => ids.has(id));
}

/**
 * Turns kernel.bpf_stats_enabled on until this process exits, then puts back what it was: left
 * on, it adds two clock reads to every BPF program run on the host (~50 ns each run here).
 */
export function bpfStatsOnUntilExit(): void {
  const sysctl = "/proc/sys/kernel/bpf_stats_enabled";
  const before = readFileSync(sysctl, "utf8").trim();
  writeFileSync(sysctl, "1");
  process.on("exit", () => {
    try {
      writeFileSync(sysctl, before);
    } catch {
      /* nothing to restore to */
    }
  });
}
