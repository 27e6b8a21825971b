/**
 * Where the BPF programs' time goes, below the per-program totals that kernel.bpf_stats gives:
 * `perf record -a -g` (cpu-clock sampling: this VM has no PMU) while a load runs, then every
 * sample whose kernel stack holds a JIT-compiled BPF program is charged to that program and to
 * what it was doing — its own instructions ("self"), or a helper and the kernel function the
 * helper was in (e.g. `bpf_probe_read_user > copy_from_user_nofault`).
 *
 *   sudo bun bench/bpf-where.ts [--delay 12] [--seconds 8] [--top 40] -- <load command…>
 *   e.g. sudo bun bench/bpf-where.ts -- bun bench/overhead.ts --server nginx --schemes https \
 *          --private-client-ssl --modes capture --rounds 1 --duration 20
 *
 * The load starts first; recording begins after --delay seconds (the agent attached and the
 * load steady) and lasts --seconds. Needs `perf` (Debian: linux-perf). A sample is one tick of
 * a CPU: shares compare places within one run, not across machines. An offset that collects
 * many "self" samples at a program's first instructions is the cost of entering it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { arg } from "./common.ts";

const sep = process.argv.indexOf("--");
const load = sep >= 0 ? process.argv.slice(sep + 1) : [];
if (!load.length) {
  console.error("usage: sudo bun bench/bpf-where.ts [--delay S] [--seconds S] [--top N] -- <load command…>");
  process.exit(2);
}
if (process.getuid?.() !== 0) {
  console.error("bench/bpf-where.ts needs root (perf -a, BPF)");
  process.exit(1);
}
if (Bun.spawnSync(["perf", "--version"], { stdout: "ignore", stderr: "ignore" }).exitCode !== 0) {
  console.error("bench/bpf-where.ts needs perf (apt-get install linux-perf)");
  process.exit(1);
}
const DELAY = Number(arg("--delay", "12"));
const SECONDS = Number(arg("--seconds", "8"));
const TOP = Number(arg("--top", "40"));

const dir = mkdtempSync(join(tmpdir(), "et-bpf-where-"));
const data = join(dir, "perf.data");
const loader = Bun.spawn(load, { stdout: "pipe", stderr: "inherit" });
const loadOut = new Response(loader.stdout).text();
await Bun.sleep(DELAY * 1000);
const rec = Bun.spawnSync(["perf", "record", "-a", "-g", "-F", "4999", "-o", data, "--", "sleep", String(SECONDS)], { stdout: "ignore", stderr: "pipe" });
if (rec.exitCode !== 0) throw new Error(`perf record failed: ${rec.stderr.toString().slice(-500)}`);
await loader.exited;
const script = Bun.spawnSync(["perf", "script", "-i", data, "-F", "ip,sym"], { stdout: "pipe", stderr: "ignore", maxBuffer: 1 << 30 });
rmSync(dir, { recursive: true, force: true });

/** A frame's symbol without its offset. */
const symOf = (line: string): string => {
  const f = line.trim().split(/\s+/)[1] ?? "";
  return f.replace(/\+0x[0-9a-f]+$/, "");
};
let total = 0;
let inBpf = 0;
const byProg = new Map<string, number>();
const byPlace = new Map<string, number>();
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
for (const sample of script.stdout.toString().split("\n\n")) {
  const frames = sample.split("\n").filter((l) => l.trim()).map(symOf);
  if (!frames.length) continue;
  total++;
  const at = frames.findIndex((f) => f.startsWith("bpf_prog_"));
  if (at < 0) continue;
  inBpf++;
  // bpf_prog_<tag>_<name>
  const prog = frames[at]!.split("_").slice(3).join("_");
  bump(byProg, prog);
  const place = at === 0 ? "self" : at === 1 ? frames[0]! : `${frames[at - 1]} > ${frames[0]}`;
  bump(byPlace, `${prog}: ${place}`);
}

console.log((await loadOut).trim().split("\n").slice(-3).join("\n"));
console.log(`\n${total} samples, ${inBpf} in BPF programs (${((inBpf / Math.max(1, total)) * 100).toFixed(1)} %)`);
console.log("by program:");
for (const [k, v] of [...byProg].sort((a, b) => b[1] - a[1])) console.log(`  ${((v / Math.max(1, inBpf)) * 100).toFixed(1).padStart(5)} %  ${k}`);
console.log("by program and place (self = the program's own instructions; helper > kernel function):");
for (const [k, v] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${((v / Math.max(1, inBpf)) * 100).toFixed(1).padStart(5)} %  ${k}`);
