/**
 * What a given share of one core, taken by anything, costs the saturated benchmark server: the
 * Node keep-alive server of bench/overhead.ts under `wrk -t1 -c16` on this 2-core machine, in
 * interleaved rounds of
 *   off        — nothing else running
 *   hog:N      — a process that burns CPU in bursts (`--burst-ms`, default 3.5 ms: what the agent
 *                spends per drain of its ring under this load) paced to about N % of one core;
 *                no BPF, no reading of anything
 *   capture    — `ebpf-tracer capture --json --pid PID > /dev/null` (`--no-agent` leaves it out)
 * printing per run: requests/s, the ratio to the median "off" run, and the share of one core the
 * extra process actually took (its user + system time over the run's wall time).
 *
 *   sudo bun bench/cpu-share.ts [--shares 10,20,35] [--rounds 2] [--duration 5] [--burst-ms 3.5]
 *                               [--warmup 3] [--no-agent]
 *
 * Why: the saturation target (the traced server keeps >= 0.80 of its throughput) depends on the
 * agent's CPU share on a machine whose two cores wrk and the server already fill; the hog rows
 * say which share allows which ratio when nothing but CPU is taken (no probes, no cache traffic
 * of the agent's data), so an agent row can be read against them. Each run first serves
 * `--warmup` seconds of the same load, unmeasured (the agent's JIT warm-up).
 */
import { resolve } from "node:path";
import type { Subprocess } from "bun";
import { CLK_TCK, cpuTicks } from "./procstat.ts";
import { agentEnv, arg, median, spawnReady, startJsonServer, wrk } from "./common.ts";

const SHARES = arg("--shares", "10,20,35").split(",").map(Number);
const ROUNDS = Number(arg("--rounds", "2"));
const DURATION = Number(arg("--duration", "5"));
const BURST_MS = Number(arg("--burst-ms", "3.5"));
const WARMUP = Number(arg("--warmup", "3"));
const AGENT = !process.argv.includes("--no-agent");
const BIN = resolve(import.meta.dir, "../dist/ebpf-tracer");
if (AGENT && process.getuid?.() !== 0) {
  console.error("bench/cpu-share.ts needs root for its capture rows (BPF); --no-agent runs the rest");
  process.exit(1);
}

/** A burst of `burst` ms, then a sleep so that bursts take about `share` of the time. */
const HOG = `const burst = Number(process.argv[1]), share = Number(process.argv[2]) / 100;
function tick() { const t = performance.now(); while (performance.now() - t < burst) {} setTimeout(tick, burst / share - burst); }
tick();`;

const server = await startJsonServer();
const url = `http://127.0.0.1:${server.port}/`;
const procs: Subprocess[] = [];
process.on("exit", () => {
  for (const p of procs) p.kill("SIGKILL");
  try {
    process.kill(server.pid, "SIGKILL");
  } catch {
    /* stopped already */
  }
});

async function extra(mode: string): Promise<Subprocess | undefined> {
  if (mode === "off") return undefined;
  if (mode === "capture") {
    const { proc } = await spawnReady([BIN, "capture", "--json", "--pid", String(server.pid)], "capturing", { env: agentEnv() });
    procs.push(proc);
    return proc;
  }
  const p = Bun.spawn(["bun", "-e", HOG, String(BURST_MS), mode.slice(4)], { stdout: "ignore", stderr: "inherit" });
  procs.push(p);
  await Bun.sleep(200);
  return p;
}

const modes = ["off", ...SHARES.map((s) => `hog:${s}`), ...(AGENT ? ["capture"] : [])];
console.log(`Node keep-alive server, wrk -t1 -c16 -d${DURATION}s after ${WARMUP} s of the same load, ${ROUNDS} rounds of ${modes.join(" / ")}; hog bursts of ${BURST_MS} ms`);
await wrk(url, 2);
const rows: { mode: string; rps: number; share: number }[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const mode of modes) {
    const p = await extra(mode);
    if (WARMUP > 0) await wrk(url, WARMUP);
    const c0 = p ? cpuTicks(p.pid) : 0;
    const t0 = performance.now();
    const { rps } = await wrk(url, DURATION);
    const wall = (performance.now() - t0) / 1000;
    const share = p ? ((cpuTicks(p.pid) - c0) / CLK_TCK / wall) * 100 : 0;
    if (p) {
      p.kill("SIGINT");
      await p.exited;
    }
    rows.push({ mode, rps, share });
    const offs = rows.filter((r) => r.mode === "off").map((r) => r.rps);
    console.log(`round ${round} ${mode.padEnd(8)} ${rps.toFixed(0).padStart(6)} req/s  ratio ${(rps / median(offs)).toFixed(2)}${p ? `  took ${share.toFixed(1)} % of a core` : ""}`);
    await Bun.sleep(300);
  }
}
const off = median(rows.filter((r) => r.mode === "off").map((r) => r.rps));
console.log("\nmedians:");
for (const mode of modes) {
  const rs = rows.filter((r) => r.mode === mode);
  const rps = median(rs.map((r) => r.rps));
  console.log(`  ${mode.padEnd(8)} ${rps.toFixed(0).padStart(6)} req/s  ratio ${(rps / off).toFixed(2)}${mode !== "off" ? `  ${median(rs.map((r) => r.share)).toFixed(1)} % of a core` : ""}`);
}
process.exit(0);
