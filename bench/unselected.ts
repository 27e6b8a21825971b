/**
 * What the agent costs processes it does not select: every syscall of every process on the host
 * runs the agent's syscall tracepoints, and an unselected one must leave them at once.
 * An unselected `dd if=/dev/zero of=/dev/null bs=1` makes COUNT read(2) and COUNT write(2) calls,
 * in rounds without the agent and with `ebpf-tracer capture` selecting only a sleeping process,
 * printing per round dd's wall time per syscall, and with the agent the BPF run time per call of
 * each program that ran (kernel.bpf_stats_enabled; bpftool).
 *
 *   sudo bun bench/unselected.ts [--rounds 3] [--count 2000000] [--cgroup] [--bin dist/ebpf-tracer]
 *
 * --cgroup: the agent also selects a cgroup (an empty one made for the run), so the kernel
 * consults the cgroup map for unselected processes too.
 */
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { bpfStats, bpfStatsOnUntilExit } from "../test/support/bpf-progs.ts";
import { arg } from "./common.ts";

const BIN = resolve(arg("--bin", resolve(import.meta.dir, "..", "dist/ebpf-tracer")));
const ROUNDS = Number(arg("--rounds", "3"));
const COUNT = Number(arg("--count", "2000000"));
const CGROUP = process.argv.includes("--cgroup");

const dir = mkdtempSync(join(tmpdir(), "et-unselected-"));
const cgDir = `/sys/fs/cgroup/et-bench-unselected-${process.pid}`;
const children: Subprocess[] = [];
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
  try {
    rmdirSync(cgDir);
  } catch {
    /* not made */
  }
});

const sleeper = Bun.spawn(["sleep", "3600"]);
children.push(sleeper);
const cfg = join(dir, "capture.yaml");
let yaml = `logging:\n  level: info\ntargets:\n  - pid: ${sleeper.pid}\n`;
if (CGROUP) {
  mkdirSync(cgDir);
  yaml += `  - cgroup: "/${cgDir.split("/").pop()}"\n`;
}
writeFileSync(cfg, yaml);
bpfStatsOnUntilExit();

async function startAgent(): Promise<Subprocess> {
  const proc = Bun.spawn([BIN, "capture", "-c", cfg, "--json"], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  children.push(proc);
  let err = "";
  (async () => {
    const dec = new TextDecoder();
    for await (const c of proc.stderr as ReadableStream<Uint8Array>) err += dec.decode(c, { stream: true });
  })();
  const deadline = Date.now() + 20_000;
  while (!err.includes("capture started")) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`capture did not start: ${err}`);
    await Bun.sleep(20);
  }
  return proc;
}

function dd(): number {
  const t0 = Bun.nanoseconds();
  const r = Bun.spawnSync(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", `count=${COUNT}`, "status=none"]);
  if (r.exitCode !== 0) throw new Error(`dd failed: ${r.stderr.toString()}`);
  return (Bun.nanoseconds() - t0) / (2 * COUNT);
}

const fmt = (n: number) => n.toFixed(1).padStart(7);
console.log(`unselected dd: ${COUNT} reads + ${COUNT} writes per run${CGROUP ? ", agent selecting a cgroup too" : ""}`);
for (let round = 1; round <= ROUNDS; round++) {
  const off = dd();
  console.log(`round ${round} off: ${fmt(off)} ns/syscall (dd wall time)`);
  const agent = await startAgent();
  await Bun.sleep(300);
  const before = bpfStats(agent.pid);
  const on = dd();
  const after = bpfStats(agent.pid);
  const rows: string[] = [];
  let total = 0;
  let calls = 0;
  for (const [name, [ns, cnt]] of after) {
    const [ns0, cnt0] = before.get(name) ?? [0, 0];
    const dc = cnt - cnt0;
    if (dc < COUNT / 2) continue; // the dd's calls, not the host's background
    total += ns - ns0;
    calls += dc;
    rows.push(`    ${name.padEnd(16)} ${String(dc).padStart(9)} calls ${fmt((ns - ns0) / dc)} ns/call`);
  }
  console.log(`round ${round} on:  ${fmt(on)} ns/syscall (dd wall time, +${(on - off).toFixed(1)}); BPF ${fmt(total / Math.max(1, calls))} ns/program run`);
  for (const r of rows.sort()) console.log(r);
  agent.kill("SIGINT");
  await agent.exited;
  // capture hands its last detach to a background process: let the tracepoints go first
  for (let i = 0; i < 100 && /\btp_enter_read\b/.test(Bun.spawnSync(["bpftool", "prog", "show"]).stdout.toString()); i++) await Bun.sleep(100);
}
process.exit(0);
