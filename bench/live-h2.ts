/**
 * Live cost of the agent on HTTP/2: Debian's nginx with `listen … http2` (h2c prior knowledge,
 * 1 worker, access_log off, a 103-byte JSON file) on loopback, loaded with h2load, alternately
 * WITHOUT the agent and WITH `dist/ebpf-tracer capture --pid NGINX --json > /dev/null`.
 *
 *   sudo bun bench/live-h2.ts [--rounds 3] [--requests 100000] [--clients 4] [--streams 10] [--port 18490]
 *
 * Per run: h2load req/s and succeeded requests; nginx worker CPU %; with the agent also its CPU
 * time per 1,000 requests (utime+stime from /proc/PID/stat over the h2load run), VmHWM, spans
 * printed vs requests, and ring-buffer records lost (EventLost, from the periodic stats lines the
 * agent logs every second: the exit line reads the kernel counters after the maps are closed).
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { CLK_TCK, cpuTicks, statusMb } from "./procstat.ts";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { benchNginxConf } from "./nginx-conf.ts";

const BIN = resolve(import.meta.dir, "../dist/ebpf-tracer");
function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
}
const ROUNDS = Number(arg("--rounds", "3"));
const REQUESTS = Number(arg("--requests", "100000"));
const CLIENTS = Number(arg("--clients", "4"));
const STREAMS = Number(arg("--streams", "10"));
const PORT = Number(arg("--port", "18490"));

if (process.getuid?.() !== 0) throw new Error("live-h2: needs root (the agent loads BPF programs)");
for (const f of [BIN, "/usr/sbin/nginx", "/usr/bin/h2load"]) if (!existsSync(f)) throw new Error(`live-h2: ${f} is missing`);

const dir = mkdtempSync(join(tmpdir(), "et-bench-h2-"));
chmodSync(dir, 0o755);
mkdirSync(join(dir, "www"));
mkdirSync(join(dir, "logs"));
const json = JSON.stringify({ id: 12345, name: "widget", price: 9.99, tags: ["a", "b", "c"], stock: { warehouse: "north", count: 42 } });
writeFileSync(join(dir, "www", "item.json"), json);
writeFileSync(join(dir, "nginx.conf"), benchNginxConf(dir, [`  server { listen 127.0.0.1:${PORT} http2; root ${dir}/www; }`]));
writeFileSync(join(dir, "agent.yaml"), "stats_interval: 1s\nlogging:\n  level: info\n");

const nginx = Bun.spawn(["/usr/sbin/nginx", "-p", dir, "-c", join(dir, "nginx.conf")], { stdout: "ignore", stderr: "inherit" });
const URL = `http://127.0.0.1:${PORT}/item.json`;
let workerPid = 0;
async function cleanup(): Promise<void> {
  nginx.kill("SIGTERM");
  await Promise.race([nginx.exited, Bun.sleep(3000)]);
  nginx.kill("SIGKILL");
  if (workerPid > 0) try { process.kill(workerPid, "SIGKILL"); } catch { /* gone with the master */ }
  rmSync(dir, { recursive: true, force: true });
}
for (let i = 0; ; i++) {
  const r = Bun.spawnSync(["curl", "-sf", "--http2-prior-knowledge", URL], { stdout: "pipe" });
  if (r.exitCode === 0 && r.stdout.toString() === json) break;
  if (i > 100) { await cleanup(); throw new Error(`live-h2: nginx did not serve ${URL}`); }
  await Bun.sleep(50);
}
workerPid = Number(Bun.spawnSync(["pgrep", "-P", String(nginx.pid)]).stdout.toString().trim().split("\n")[0]);


function h2load(n: number): { rps: number; ok: number; raw: string } {
  const r = Bun.spawnSync(["h2load", "-n", String(n), "-c", String(CLIENTS), "-m", String(STREAMS), URL], { stdout: "pipe", stderr: "pipe" });
  const raw = r.stdout.toString();
  const ok = Number(/(\d+) succeeded/.exec(raw)?.[1]);
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(raw)?.[1]);
  if (r.exitCode !== 0 || !ok) throw new Error(`h2load failed: ${raw} ${r.stderr.toString()}`);
  return { rps, ok, raw };
}

interface Run { mode: "off" | "on"; rps: number; ok: number; nginxCpu: number; agentMsPer1k?: number; agentCpu?: number; hwm?: number; spans?: number; lost?: number }

console.log(`nginx 1 worker (pid ${workerPid}) h2c on 127.0.0.1:${PORT}, ${json.length}-byte JSON; h2load -n ${REQUESTS} -c ${CLIENTS} -m ${STREAMS}; ${ROUNDS} rounds off/on; ${navigator.hardwareConcurrency} CPUs`);
h2load(Math.min(20000, REQUESTS)); // warm-up
const runs: Run[] = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of ["off", "on"] as const) {
      let agent: ReturnType<typeof Bun.spawn> | undefined;
      let err = "";
      if (mode === "on") {
        agent = Bun.spawn([BIN, "capture", "-c", join(dir, "agent.yaml"), "--pid", String(nginx.pid), "--json"], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
        (async () => { for await (const c of agent!.stderr as ReadableStream<Uint8Array>) err += new TextDecoder().decode(c); })();
        const deadline = Date.now() + 20_000;
        while (!err.includes("capturing")) {
          if (agent.exitCode !== null || Date.now() > deadline) throw new Error(`agent did not start: ${err}`);
          await Bun.sleep(20);
        }
        await Bun.sleep(1200);
      }
      const n0 = cpuTicks(workerPid);
      const a0 = agent ? cpuTicks(agent.pid) : 0;
      const t0 = performance.now();
      const h = h2load(REQUESTS);
      const wallS = (performance.now() - t0) / 1000;
      const run: Run = { mode, rps: h.rps, ok: h.ok, nginxCpu: ((cpuTicks(workerPid) - n0) / CLK_TCK / wallS) * 100 };
      if (agent) {
        await Bun.sleep(1500); // the agent drains, one more periodic stats line
        const cpuS = (cpuTicks(agent.pid) - a0) / CLK_TCK;
        run.agentMsPer1k = (cpuS * 1000) / (h.ok / 1000);
        run.agentCpu = (cpuS / (wallS + 1.5)) * 100;
        run.hwm = statusMb(agent.pid, "VmHWM");
        agent.kill("SIGINT");
        await agent.exited;
        await Bun.sleep(50);
        const lines = err.split("\n").filter((l) => l.includes('"msg":"stats"')).map((l) => JSON.parse(l));
        run.lost = Math.max(0, ...lines.slice(0, -1).map((l) => l.EventLost ?? 0));
        run.spans = lines.at(-1)?.SpansEmitted;
      }
      runs.push(run);
      console.log(`round ${round} ${mode.padEnd(3)} ${run.rps.toFixed(0).padStart(7)} req/s  ${run.ok} ok  nginx ${run.nginxCpu.toFixed(0)}% CPU` +
        (agent ? `  agent ${run.agentMsPer1k!.toFixed(1)} ms CPU / 1k req (${run.agentCpu!.toFixed(0)}% incl. 1.5 s drain), peak RSS ${run.hwm!.toFixed(0)} MB, spans ${run.spans}/${run.ok}, EventLost ${run.lost}` : ""));
      await Bun.sleep(500);
    }
  }
} finally {
  await cleanup();
}
const med = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };
const off = runs.filter((r) => r.mode === "off");
const on = runs.filter((r) => r.mode === "on");
console.log(`median req/s off ${med(off.map((r) => r.rps)).toFixed(0)}, on ${med(on.map((r) => r.rps)).toFixed(0)} (${((med(on.map((r) => r.rps)) / med(off.map((r) => r.rps))) * 100).toFixed(0)}%); ` +
  `agent CPU ${med(on.map((r) => r.agentMsPer1k!)).toFixed(1)} ms per 1k requests; spans ${on.map((r) => `${r.spans}/${r.ok}`).join(", ")}; EventLost ${on.map((r) => r.lost).join(", ")}`);
