/**
 * Live overhead of the agent on a real server: nginx (private config, 1 worker, access_log off,
 * a small static JSON file) on loopback, loaded with wrk, alternately WITHOUT the agent and WITH
 * `dist/ebpf-tracer capture --exe nginx --json > /dev/null`.
 *
 *   sudo bun bench/live-nginx.ts [--rounds 3] [--duration 10] [--connections 50] [--threads 1]
 *                                [--delay-ms 0] [--port 18480] [--record FILE]
 *
 * Per run: wrk requests/s and p50/p99 latency (wrk --latency), total requests; for runs with the
 * agent also its CPU % (utime+stime from /proc/PID/stat over the wrk run), VmRSS at the end and
 * VmHWM (peak), spans printed vs requests made, and kernel ring-buffer records lost. nginx's
 * worker CPU % is reported for both, since in-kernel probe cost is charged to it.
 *
 * Events lost: the agent is started with a config that logs its `stats` line every second
 * (stats_interval: 1s); EventLost is taken from the last periodic line. (The line logged on exit
 * reads the kernel counters after the BPF maps are closed and always shows 0 for them.)
 *
 * `--record FILE`: afterwards, one short extra run with `capture --record FILE` that saves the raw
 * records for `bun bench/replay.ts --file FILE` (not part of the table: recording is slow).
 *
 * Debian's wrk is not wrk2 (no -R rate limit): by default runs are at maximum rate, so the table
 * shows the throughput cost at saturation. `--delay-ms N` paces the load instead with a wrk Lua
 * script whose delay() makes every connection wait N ms before each request: the rate is then
 * about connections x 1000 / (N + latency), e.g. `--connections 120 --delay-ms 5` ≈ 20,000 req/s
 * on an idle machine, and the table shows the CPU and latency cost at that rate.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { CLK_TCK, cpuTicks, statusMb } from "./procstat.ts";
import { tmpdir } from "node:os";
import { benchNginxConf } from "./nginx-conf.ts";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

const ROOT = resolve(import.meta.dir, "..");
const BIN = resolve(ROOT, "dist/ebpf-tracer");

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
}
const ROUNDS = Number(arg("--rounds", "3"));
const DURATION = Number(arg("--duration", "10"));
const CONNS = Number(arg("--connections", "50"));
const THREADS = Number(arg("--threads", "1"));
const PORT = Number(arg("--port", "18480"));
const DELAY_MS = Number(arg("--delay-ms", "0"));
const RECORD = arg("--record", "");

function die(msg: string): never {
  console.error(`live-nginx: ${msg}`);
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  process.exit(1);
}
if (process.getuid?.() !== 0) die("needs root (the agent loads BPF programs)");
for (const f of [BIN, "/usr/sbin/nginx", "/usr/bin/wrk"]) if (!existsSync(f)) die(`${f} is missing`);

const NCPU = navigator.hardwareConcurrency;

// ------------------------------------------------------------------ nginx

const dir = mkdtempSync(join(tmpdir(), "et-bench-nginx-"));
chmodSync(dir, 0o755); // the worker runs as nobody
mkdirSync(join(dir, "www"));
mkdirSync(join(dir, "logs"));
const json = JSON.stringify({ id: 12345, name: "widget", price: 9.99, tags: ["a", "b", "c"], stock: { warehouse: "north", count: 42 } });
writeFileSync(join(dir, "www", "item.json"), json);
writeFileSync(join(dir, "nginx.conf"), benchNginxConf(dir, [`  server { listen 127.0.0.1:${PORT}; root ${dir}/www; }`]));

const children: Subprocess[] = [];
let workerPid = 0;
/** Stops what we started. nginx gets SIGTERM (a SIGKILLed master leaves its workers running). */
async function cleanup(): Promise<void> {
  for (const c of children) if (c !== nginx && c.exitCode === null) c.kill("SIGKILL");
  if (nginx.exitCode === null) {
    nginx.kill("SIGTERM");
    const t = setTimeout(() => nginx.kill("SIGKILL"), 3000);
    await nginx.exited;
    clearTimeout(t);
  }
  if (workerPid > 0) {
    try {
      process.kill(workerPid, "SIGKILL");
    } catch {
      /* exited with the master */
    }
  }
  rmSync(dir, { recursive: true, force: true });
}
process.on("SIGINT", async () => {
  await cleanup();
  process.exit(130);
});

const nginx = Bun.spawn(["/usr/sbin/nginx", "-p", dir, "-c", join(dir, "nginx.conf")], { stdout: "ignore", stderr: "inherit" });
children.push(nginx);
const URL = `http://127.0.0.1:${PORT}/item.json`;
for (let i = 0; ; i++) {
  const r = Bun.spawnSync(["curl", "-sf", URL], { stdout: "pipe" });
  if (r.exitCode === 0 && r.stdout.toString() === json) break;
  if (i > 100) {
    await cleanup();
    die(`nginx did not serve ${URL}`);
  }
  await Bun.sleep(50);
}
workerPid = Number(Bun.spawnSync(["pgrep", "-P", String(nginx.pid)]).stdout.toString().trim().split("\n")[0]);

// ------------------------------------------------------------------ helpers



function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60000 }[m[2] as "us" | "ms" | "s" | "m"];
}

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: string;
}

function parseWrk(out: string): WrkResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const errors = [/Socket errors:[^\n]*/.exec(out)?.[0], /Non-2xx or 3xx responses:[^\n]*/.exec(out)?.[0]].filter(Boolean).join("; ");
  return { rps, p50, p99, requests, errors };
}

async function wrk(seconds: number, conns = CONNS): Promise<{ res: WrkResult; wallS: number; raw: string }> {
  const t0 = performance.now();
  const pace = DELAY_MS > 0 ? ["-s", PACE] : [];
  const p = Bun.spawn(["/usr/bin/wrk", `-t${THREADS}`, `-c${conns}`, `-d${seconds}s`, "--latency", ...pace, URL], { stdout: "pipe", stderr: "pipe" });
  const raw = await new Response(p.stdout).text();
  await p.exited;
  const wallS = (performance.now() - t0) / 1000;
  if (p.exitCode !== 0) die(`wrk failed: ${raw} ${await new Response(p.stderr).text()}`);
  return { res: parseWrk(raw), wallS, raw };
}

interface Agent {
  proc: Subprocess<"ignore", "ignore", "pipe">;
  stderr: () => string;
}

const PACE = join(dir, "pace.lua");
writeFileSync(PACE, `function delay() return ${DELAY_MS} end\n`);

const agentCfg = join(dir, "agent.yaml");
writeFileSync(agentCfg, "stats_interval: 1s\nlogging:\n  level: info\n");

async function startAgent(extra: string[] = []): Promise<Agent> {
  const proc = Bun.spawn([BIN, "capture", "-c", agentCfg, "--exe", "nginx", "--json", ...extra], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  children.push(proc);
  let err = "";
  (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) err += dec.decode(chunk, { stream: true });
  })();
  const deadline = Date.now() + 20_000;
  while (!err.includes("capturing")) {
    if (proc.exitCode !== null || Date.now() > deadline) die(`agent did not start: ${err}`);
    await Bun.sleep(20);
  }
  return { proc, stderr: () => err };
}

async function stopAgent(a: Agent): Promise<void> {
  a.proc.kill("SIGINT");
  const t = setTimeout(() => a.proc.kill("SIGKILL"), 15_000);
  await a.proc.exited;
  clearTimeout(t);
  await Bun.sleep(50); // let the stderr reader finish
}

function statsLines(err: string): Record<string, number>[] {
  return err.split("\n").filter((l) => l.startsWith("{") && l.includes('"msg":"stats"')).map((l) => JSON.parse(l));
}

// ------------------------------------------------------------------ runs

interface Run {
  mode: "off" | "on";
  round: number;
  wrk: WrkResult;
  nginxCpu: number;
  agentCpu?: number;
  rssMb?: number;
  hwmMb?: number;
  spans?: number;
  eventLost?: number;
  lostBytes?: number;
  partial?: number;
}

console.log(`nginx 1 worker (pid ${workerPid}) on 127.0.0.1:${PORT}, ${json.length}-byte JSON; wrk -t${THREADS} -c${CONNS} -d${DURATION}s --latency${DELAY_MS ? ` paced (delay ${DELAY_MS} ms per request per connection)` : " at max rate"}; ${ROUNDS} rounds off/on; ${NCPU} CPUs`);
await wrk(2); // warm-up

const runs: Run[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const mode of ["off", "on"] as const) {
    const agent = mode === "on" ? await startAgent() : undefined;
    if (agent) await Bun.sleep(1200); // first periodic stats line, steady state
    const n0 = cpuTicks(workerPid);
    const a0 = agent ? cpuTicks(agent.proc.pid) : 0;
    const t0 = performance.now();
    const { res } = await wrk(DURATION);
    const wallS = (performance.now() - t0) / 1000;
    const run: Run = { mode, round, wrk: res, nginxCpu: ((cpuTicks(workerPid) - n0) / CLK_TCK / wallS) * 100 };
    if (agent) {
      run.agentCpu = ((cpuTicks(agent.proc.pid) - a0) / CLK_TCK / wallS) * 100;
      run.rssMb = statusMb(agent.proc.pid, "VmRSS");
      run.hwmMb = statusMb(agent.proc.pid, "VmHWM");
      await Bun.sleep(1500); // one more periodic stats line after the load
      await stopAgent(agent);
      const lines = statsLines(agent.stderr());
      const periodic = lines.slice(0, -1); // the last one is the exit line
      const last = lines.at(-1);
      run.eventLost = Math.max(0, ...periodic.map((l) => l.EventLost ?? 0));
      run.spans = last?.SpansEmitted;
      run.lostBytes = last?.LostBytes;
      run.partial = last?.PartialSpans;
    }
    runs.push(run);
    const w = run.wrk;
    console.log(
      `round ${round} ${mode.padEnd(3)} ${w.rps.toFixed(0).padStart(7)} req/s  p50 ${w.p50.toFixed(3)} ms  p99 ${w.p99.toFixed(3)} ms  ` +
      `nginx ${run.nginxCpu.toFixed(0)}% CPU` +
      (mode === "on" ? `  agent ${run.agentCpu!.toFixed(0)}% CPU, RSS ${run.rssMb!.toFixed(0)} MB (peak ${run.hwmMb!.toFixed(0)}), spans ${run.spans}/${w.requests} requests, EventLost ${run.eventLost}, LostBytes ${run.lostBytes}, partial ${run.partial}` : "") +
      (w.errors ? `  [${w.errors}]` : ""),
    );
    await Bun.sleep(500);
  }
}

// ------------------------------------------------------------------ table

function mmm(xs: number[], digits: number): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return `${s[0]!.toFixed(digits)} / ${med.toFixed(digits)} / ${s.at(-1)!.toFixed(digits)}`;
}
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const off = runs.filter((r) => r.mode === "off");
const on = runs.filter((r) => r.mode === "on");
const rows: [string, string, string][] = [
  ["requests/s", mmm(off.map((r) => r.wrk.rps), 0), mmm(on.map((r) => r.wrk.rps), 0)],
  ["p50 latency ms", mmm(off.map((r) => r.wrk.p50), 3), mmm(on.map((r) => r.wrk.p50), 3)],
  ["p99 latency ms", mmm(off.map((r) => r.wrk.p99), 3), mmm(on.map((r) => r.wrk.p99), 3)],
  ["nginx worker CPU %", mmm(off.map((r) => r.nginxCpu), 0), mmm(on.map((r) => r.nginxCpu), 0)],
  ["agent CPU %", "-", mmm(on.map((r) => r.agentCpu!), 0)],
  ["agent VmRSS MB (end)", "-", mmm(on.map((r) => r.rssMb!), 0)],
  ["agent VmHWM MB (peak)", "-", mmm(on.map((r) => r.hwmMb!), 0)],
  ["spans / requests %", "-", mmm(on.map((r) => (100 * (r.spans ?? 0)) / r.wrk.requests), 2)],
  ["kernel EventLost", "-", mmm(on.map((r) => r.eventLost ?? 0), 0)],
  ["LostBytes / partial spans", "-", `${Math.max(...on.map((r) => r.lostBytes ?? 0))} / ${Math.max(...on.map((r) => r.partial ?? 0))} (max)`],
];
console.log("");
console.log(`${"min / median / max".padEnd(26)} ${"agent off".padEnd(28)} agent on`);
for (const [k, a, b] of rows) console.log(`${k.padEnd(26)} ${a.padEnd(28)} ${b}`);
const cost = 1 - median(on.map((r) => r.wrk.rps)) / median(off.map((r) => r.wrk.rps));
const agentCpuPer10k = median(on.map((r) => r.agentCpu! / (r.wrk.rps / 10_000)));
console.log("");
console.log(DELAY_MS ? `throughput difference at paced load (median): ${(cost * 100).toFixed(1)}%` : `throughput cost at saturation (median): ${(cost * 100).toFixed(1)}%`);
console.log(`agent CPU per 10,000 req/s (median): ${agentCpuPer10k.toFixed(1)}% of one core → at 20,000 req/s ≈ ${(agentCpuPer10k * 2).toFixed(0)}%`);

if (RECORD) {
  const agent = await startAgent(["--record", RECORD]);
  const { res } = await wrk(3, 10);
  await stopAgent(agent);
  const last = statsLines(agent.stderr()).at(-1);
  console.log(`\nrecorded ${RECORD}: ${res.requests} requests, ${last?.SpansEmitted} spans (bun bench/replay.ts --file ${RECORD})`);
}

await cleanup();
