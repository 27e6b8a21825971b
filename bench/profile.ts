/**
 * Where the agent's user-space CPU goes under load: the agent runs from source under Bun's
 * sampling profiler (`bun --cpu-prof`) while `wrk -t1 -c16` drives a keep-alive Node server it
 * captures; prints the functions with the most self time (share of samples, file:line) and the
 * agent's CPU per 1k req/s in that run. The profile file is kept for a closer look (Chrome
 * DevTools, speedscope).
 *
 *   sudo bun bench/profile.ts [--mode capture|run] [--duration 10] [--top 25] [--out DIR]
 *
 * capture: `capture --json > /dev/null`; run: OTLP protobuf+gzip over HTTPS to a loopback
 * receiver. The profiler itself costs a little; compare profiles with each other, and CPU
 * figures with bench/overhead.ts.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { makeTestCerts } from "../test/support/certs.ts";
import { OtlpReceiver } from "../test/support/otlp-receiver.ts";
import { agentEnv, arg, startJsonServer } from "./common.ts";
import { runConfigYaml } from "./run-config.ts";
import { CLK_TCK, cpuTicks } from "./procstat.ts";

const ROOT = resolve(import.meta.dir, "..");
const MODE = arg("--mode", "capture");
const DURATION = Number(arg("--duration", "10"));
const TOP = Number(arg("--top", "25"));
if (process.getuid?.() !== 0) {
  console.error("bench/profile.ts needs root (BPF)");
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), "et-profile-"));
const outDir = resolve(arg("--out", join(dir, "prof")));
mkdirSync(outDir, { recursive: true });

const server = await startJsonServer();
process.on("exit", () => {
  try {
    process.kill(server.pid, "SIGKILL");
  } catch {
    /* stopped already */
  }
});

let rx: OtlpReceiver | undefined;
const args = ["capture", "--json", "--pid", String(server.pid)];
if (MODE === "run") {
  const certs = makeTestCerts();
  rx = await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key }, countOnly: true });
  writeFileSync(join(dir, "run.yaml"), runConfigYaml({ pid: server.pid, caCert: certs.ca.cert, endpoint: rx.endpoint, spoolDir: join(dir, "spool") }));
  args.splice(0, args.length, "run", "-c", join(dir, "run.yaml"));
}
// The profiler samples by signalling the JS thread, and a signal pending during BPF verification
// fails the load (EAGAIN; libbpf retries a few times): a sampling interval well above one
// program's verification time.
const tSpawn = performance.now();
const agent = Bun.spawn(["bun", "--cpu-prof", "--cpu-prof-interval", arg("--interval-us", "5000"), "--cpu-prof-dir", outDir, join(ROOT, "src/cli/main.ts"), ...args], {
  stdout: "ignore", stderr: "pipe", env: agentEnv(),
});
process.on("exit", () => agent.kill("SIGKILL"));
let err = "";
(async () => {
  for await (const c of agent.stderr) err += new TextDecoder().decode(c);
})();
for (let i = 0; i < 300 && !/capturing|capture started/.test(err); i++) await Bun.sleep(50);
if (!/capturing|capture started/.test(err)) throw new Error(`agent did not start: ${err}`);

const t0 = cpuTicks(agent.pid);
const tLoad0 = performance.now();
// Not spawnSync: the receiver lives in this process, and a blocked event loop would leave the
// agent's requests unanswered, so it would spool (and profile its spool) instead of exporting.
const w = Bun.spawn(["wrk", "-t1", "-c16", `-d${DURATION}s`, `http://127.0.0.1:${server.port}/`], { stdout: "pipe" });
const out = await new Response(w.stdout).text();
await w.exited;
const ticks = cpuTicks(agent.pid) - t0;
const tLoad1 = performance.now();
const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
agent.kill("SIGINT");
await agent.exited;
rx?.close();
await server.stop();

const file = readdirSync(outDir).filter((f) => f.endsWith(".cpuprofile")).map((f) => join(outDir, f)).sort().pop();
if (!file) throw new Error(`no profile written in ${outDir}`);
interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; }
const prof = JSON.parse(readFileSync(file, "utf8")) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
let total = 0;
// Only the samples taken while wrk ran: the profile also covers the start (BPF load) and the
// stop (detaching every link), which are not what a request costs. Sample times count from the
// profile's start, which follows the spawn by the runtime's own start (milliseconds): the
// window is that much late at worst.
const from = (tLoad0 - tSpawn) * 1000, to = (tLoad1 - tSpawn) * 1000;
let at = 0;
let outside = 0;
for (let i = 0; i < prof.samples.length; i++) {
  at += prof.timeDeltas[i] ?? 0;
  const n = byId.get(prof.samples[i]!)!;
  const dt = prof.timeDeltas[i + 1] ?? prof.timeDeltas[i] ?? 0;
  if (at < from || at > to) {
    outside += dt;
    continue;
  }
  const f = n.callFrame;
  const where = f.url ? `${f.url.replace(ROOT + "/", "")}:${f.lineNumber + 1}` : "";
  const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
}
const cpuPct = (ticks / CLK_TCK / DURATION) * 100;
console.log(`mode ${MODE}: ${rps.toFixed(0)} req/s under wrk -t1 -c16 for ${DURATION}s; agent ${cpuPct.toFixed(1)} % of a core = ${(cpuPct / (rps / 1000)).toFixed(2)} % per 1k req/s (with the profiler)`);
console.log(`profile: ${file} (${(outside / 1e6).toFixed(1)} s of start and stop left out)`);
if (rx && rx.bodies > 0) console.log(`export: ${rx.bodies} requests, ${(rx.bodyBytes / rx.bodies / 1024).toFixed(1)} KiB per body, ${(rx.bodyBytes / Math.max(1, rx.spanCount)).toFixed(0)} B per span (as sent)`);
console.log("self time, top entries:");
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, TOP)) {
  console.log(`  ${((v / total) * 100).toFixed(1).padStart(5)} %  ${k}`);
}
if (!process.argv.includes("--out")) rmSync(dir, { recursive: true, force: true });
