/**
 * The agent's resident memory, at its start and under saturating load: a keep-alive Node server
 * selected by pid, `wrk -t1 -c16`, the agent as `capture --json > /dev/null` and/or `run`
 * exporting OTLP (protobuf + gzip over HTTPS) to a loopback receiver that counts spans. Builds
 * and modes alternate in every round (the machine is noisy). Per run it prints
 *   startHwm   VmHWM once the agent is ready (2 s after spawn, no traffic yet): the start's peak
 *   hwm        VmHWM after the load: the peak of the whole run (what the issue's 120 MB is about)
 *   anon max / mean   RssAnon sampled every 200 ms under load (the JS heap's sawtooth)
 *   file       RssFile after the load: the executable's resident pages + the ring buffer
 *   CPU        agent CPU per 1k req/s (for scale; bench/overhead.ts measures CPU properly)
 *
 *   sudo bun bench/memory.ts [--modes capture,run] [--rounds 2] [--duration 15] [--bins a=PATH,b=PATH] [--no-unit-env]
 *                            [--budget-mb N] [--collector-down]
 *
 * The agent runs with the systemd unit's Environment= lines (bench/common.ts unitEnv), as
 * deployed; --no-unit-env without them.
 * --budget-mb sets budget.memory_mb (a collection near it, then shedding: docs/operations.md);
 * the row then also says how many collections ran and the sampling ratio at the end.
 * --collector-down points `run` at a port nothing listens on: every batch goes to the spool; the
 * row then says how many spans were spooled and dropped and how many kernel events were lost.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { makeTestCerts } from "../test/support/certs.ts";
import { OtlpReceiver } from "../test/support/otlp-receiver.ts";
import { exitStats } from "../test/support/http-kit.ts";
import { agentEnv, arg, binsArg, median, startJsonServer } from "./common.ts";
import { CLK_TCK, cpuTicks, statusMb } from "./procstat.ts";
import { runConfigYaml } from "./run-config.ts";

const MODES = arg("--modes", "capture,run").split(",");
const ROUNDS = Number(arg("--rounds", "2"));
const DURATION = Number(arg("--duration", "15"));
const BUDGET_MB = Number(arg("--budget-mb", "0"));
const COLLECTOR_DOWN = process.argv.includes("--collector-down");
const BINS = binsArg();
if (process.getuid?.() !== 0) {
  console.error("bench/memory.ts needs root (BPF)");
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), "et-memory-"));
const children: Subprocess[] = [];
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

const certs = makeTestCerts();
const rx = await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key }, countOnly: true });
const server = await startJsonServer();
const url = `http://127.0.0.1:${server.port}/`;
/** a loopback port that was free a moment ago: connections to it are refused */
const closedEndpoint = await (async () => {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return `127.0.0.1:${port}`;
})();

interface Row { label: string; startHwm: number; hwm: number; anonMax: number; anonMean: number; file: number; rps: number; cpuPer1k: number; stats?: string }

async function once(mode: string, bin: string, label: string): Promise<Row> {
  const cfg = join(dir, "run.yaml");
  rmSync(join(dir, "spool"), { recursive: true, force: true });
  const budget = BUDGET_MB ? `\nbudget:\n  memory_mb: ${BUDGET_MB}\n` : "\n";
  writeFileSync(cfg, runConfigYaml({ pid: server.pid, caCert: certs.ca.cert, endpoint: COLLECTOR_DOWN ? closedEndpoint : rx.endpoint, spoolDir: join(dir, "spool") }) + budget);
  const capCfg = join(dir, "capture.yaml");
  writeFileSync(capCfg, "stats_interval: 1s\nlogging:\n  level: info\n" + budget);
  const cmd = mode === "run" ? [bin, "run", "-c", cfg] : [bin, "capture", "-c", capCfg, "--json", "--pid", String(server.pid)];
  const agent = Bun.spawn(cmd, { stdout: "ignore", stderr: "pipe", env: agentEnv() });
  let stderr = "";
  void (async () => {
    for await (const c of agent.stderr) stderr += new TextDecoder().decode(c);
  })();
  children.push(agent);
  await Bun.sleep(2000);
  const startHwm = statusMb(agent.pid, "VmHWM");
  const cpu0 = cpuTicks(agent.pid);
  const wrk = Bun.spawn(["wrk", "-t1", "-c16", `-d${DURATION}s`, url], { stdout: "pipe", stderr: "ignore" });
  let anonMax = 0, anonSum = 0, n = 0;
  while (wrk.exitCode === null) {
    const a = statusMb(agent.pid, "RssAnon");
    anonMax = Math.max(anonMax, a);
    anonSum += a;
    n++;
    await Bun.sleep(200);
  }
  const out = await new Response(wrk.stdout).text();
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const cpuS = (cpuTicks(agent.pid) - cpu0) / CLK_TCK;
  const row: Row = {
    label, startHwm, hwm: statusMb(agent.pid, "VmHWM"), anonMax, anonMean: anonSum / Math.max(1, n),
    file: statusMb(agent.pid, "RssFile"), rps, cpuPer1k: ((cpuS / DURATION) * 100) / (rps / 1000),
  };
  agent.kill("SIGINT");
  await agent.exited;
  const spooling = COLLECTOR_DOWN && mode === "run";
  const st = BUDGET_MB || spooling ? exitStats(stderr) : undefined;
  const parts: string[] = [];
  if (BUDGET_MB) parts.push(st ? `collections ${st.BudgetCollections}, ratio ${st.SamplingRatio}, shed ${st.ShedConnections}` : "no stats line");
  if (spooling) parts.push(st ? `spooled ${st.SpansSpooled}, dropped ${st.SpansDropped}, events lost ${st.EventLost}` : "no stats line");
  if (parts.length) row.stats = parts.join("; ");
  return row;
}

const fmt = (r: Row) =>
  `${r.label.padEnd(16)} start ${r.startHwm.toFixed(0).padStart(4)} MB  peak ${r.hwm.toFixed(0).padStart(4)} MB  anon max ${r.anonMax.toFixed(0).padStart(4)} mean ${r.anonMean.toFixed(0).padStart(4)} MB  file ${r.file.toFixed(0).padStart(3)} MB  ${r.rps.toFixed(0).padStart(6)} req/s  CPU ${r.cpuPer1k.toFixed(2)} %/1k req/s${r.stats ? `  (${r.stats})` : ""}`;

console.log(`Node keep-alive server, wrk -t1 -c16 -d${DURATION}s,${BUDGET_MB ? ` budget.memory_mb ${BUDGET_MB},` : ""}${COLLECTOR_DOWN ? " collector down," : ""} ${ROUNDS} rounds of ${MODES.join(" / ")} x ${BINS.map(([n]) => n || "dist").join(" / ")}`);
const rows: Row[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const mode of MODES) {
    for (const [name, bin] of BINS) {
      const r = await once(mode, bin, name ? `${mode}[${name}]` : mode);
      rows.push(r);
      console.log(`round ${round} ${fmt(r)}`);
    }
  }
}
console.log("\nmedians:");
for (const label of [...new Set(rows.map((r) => r.label))]) {
  const rs = rows.filter((r) => r.label === label);
  const m = (k: keyof Row) => median(rs.map((r) => r[k] as number));
  console.log(`  ${fmt({ label, startHwm: m("startHwm"), hwm: m("hwm"), anonMax: m("anonMax"), anonMean: m("anonMean"), file: m("file"), rps: m("rps"), cpuPer1k: m("cpuPer1k") })}`);
}
await rx.close();
await server.stop();
