/**
 * Start to first probe: from spawning `ebpf-tracer capture --pid 1 --log-level debug` to its first
 * "probe attached" log line, and to "capturing"; builds alternate, runs repeated (the machine is
 * noisy). `--perf` runs with `bpf.buffer: perf` (no loop variants: the plain programs load).
 *
 *   sudo bun bench/start-time.ts [--bins base=A,new=B] [--runs 3] [--perf]
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { arg, binsArg } from "./common.ts";

const BINS = binsArg().map(([label, bin]): [string, string] => [label || "dist", bin]);
const RUNS = Number(arg("--runs", "3"));
if (process.getuid?.() !== 0) {
  console.error("bench/start-time.ts needs root (BPF)");
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), "et-start-"));
const cfg = join(dir, "c.yaml");
writeFileSync(cfg, process.argv.includes("--perf") ? "bpf:\n  buffer: perf\n" : "{}\n");

async function once(bin: string): Promise<{ probe: number; capturing: number }> {
  const t0 = performance.now();
  const p = Bun.spawn([bin, "capture", "-c", cfg, "--pid", "1", "--log-level", "debug"], { stdout: "ignore", stderr: "pipe" });
  let buf = "";
  let probe = NaN;
  const dec = new TextDecoder();
  for await (const chunk of p.stderr) {
    buf += dec.decode(chunk);
    if (Number.isNaN(probe) && buf.includes('"probe attached"')) probe = performance.now() - t0;
    if (buf.includes("capturing")) break;
  }
  const capturing = performance.now() - t0;
  p.kill("SIGINT");
  await p.exited;
  return { probe, capturing };
}

const results = new Map<string, number[][]>();
for (let r = 0; r < RUNS; r++) {
  for (const [name, bin] of BINS) {
    const x = await once(bin);
    (results.get(name) ?? results.set(name, []).get(name)!).push([x.probe, x.capturing]);
    console.log(`run ${r + 1} ${name}: first probe attached ${x.probe.toFixed(0)} ms, "capturing" ${x.capturing.toFixed(0)} ms`);
  }
}
const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, xs] of results) {
  console.log(`median ${name}: first probe ${med(xs.map((x) => x[0]!)).toFixed(0)} ms, "capturing" ${med(xs.map((x) => x[1]!)).toFixed(0)} ms`);
}
rmSync(dir, { recursive: true, force: true });
