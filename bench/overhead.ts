/**
 * What the agent costs per request, interleaved with runs without it (the machine is noisy):
 * a keep-alive server (Node, or nginx with one worker serving a static JSON) over HTTP and/or
 * HTTPS under `wrk -t1 -cN`, in rounds of
 *   off      — no agent
 *   capture  — `ebpf-tracer capture --json --pid PID > /dev/null`
 *   run      — `ebpf-tracer run` exporting OTLP (protobuf + gzip) over HTTPS to a loopback receiver
 *   run-zstd — the same with `compression: zstd` (not in the default modes)
 *   tshark   — tshark capturing the same port (a packet-capture peer), when installed
 *   idle     — the agent attached but selecting only a sleeping process (not in the default
 *              modes): what the load pays for probes it does not need (the syscall tracepoint
 *              path, the programs' early exits)
 * printing per run: requests/s and its ratio to the median "off" run, the server's own CPU time
 * per request (user + system of the server and its children, which includes the BPF programs
 * run in its syscalls: what tracing makes each request cost it), agent CPU per 1k req/s,
 * BPF run time per request (kernel.bpf_stats_enabled; every program the agent loaded, and the
 * costliest programs by name), peak RSS (VmHWM), and the share of requests that became spans;
 * at the end the medians, and per BPF program its ns/call and calls/request.
 *
 *   sudo bun bench/overhead.ts [--server node|nginx|go] [--tls | --schemes http,https] [--rounds 3]
 *                              [--duration 10] [--connections 16] [--modes off,capture,run,run-zstd,tshark,idle]
 *                              [--warmup S] [--bins base=PATH,new=PATH] [--private-client-ssl] [--no-unit-env] [--as-unit] [--perf] [--budget-cpu N]
 *
 * The agent runs with the systemd unit's Environment= lines (bench/common.ts unitEnv), as
 * deployed; --no-unit-env without them. --as-unit also holds it to the unit's CPUQuota= and
 * Nice= (a cpu cgroup and nice, bench/common.ts asUnit): what a deployed agent gets under a load
 * that needs more. A row says EventLost when ring records were lost (any mode).
 *
 * --schemes http,https runs both in every round (plain, then TLS): the TLS path's extra BPF time
 * per request is the difference of the two BPF ns/req medians. E.g. the issue's Speed check:
 *   sudo bun bench/overhead.ts --server nginx --schemes http,https --modes off,capture --rounds 3 --duration 5
 */
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { Subprocess } from "bun";
import { makeTestCerts } from "../test/support/certs.ts";
import { CLK_TCK, cpuTicks, statusMb, treeTicks } from "./procstat.ts";
import { bpfStats, bpfStatsOnUntilExit } from "../test/support/bpf-progs.ts";
import { OtlpReceiver } from "../test/support/otlp-receiver.ts";
import { benchNginxConf } from "./nginx-conf.ts";
import { runConfigYaml } from "./run-config.ts";
import { agentEnv, arg, asUnit, binsArg, median as med, spawnReady, type Started, wrk as wrkRun } from "./common.ts";
import { exitStats } from "../test/support/http-kit.ts";
import { buildGo } from "../test/fixtures/go/build.ts";

/** --bins base=PATH,new=PATH: every agent mode runs once per binary in each round (labels in
 * the table), to compare two builds under the same load; default the checkout's build. */
const BINS = binsArg();
const ROUNDS = Number(arg("--rounds", "3"));
const DURATION = Number(arg("--duration", "10"));
const CONNS = Number(arg("--connections", "16"));
const MODES = arg("--modes", "off,capture,run,tshark").split(",");
/** --warmup S: every run (agent or not) first serves S seconds of the same load, unmeasured: the
 * engine's JIT compiles the agent's hot path in its first ~2 s of load (its JITWorker threads,
 * ~0.3 s of CPU once per start), which a short run would add to its steady per-request figure.
 * Printed apart: the agent's CPU during the warm-up. */
const WARMUP = Number(arg("--warmup", "0"));
/** --perf: the agent writes to its per-CPU perf buffers (bpf.buffer: perf), the path of kernels
 * without BPF ring buffers */
const BUFFER_YAML = process.argv.includes("--perf") ? "\nbpf:\n  buffer: perf\n" : "";
/** --budget-cpu N: the agent keeps budget.cpu_percent N (sheds connections over it) */
const BUDGET_CPU = Number(arg("--budget-cpu", "0"));
const BUDGET_YAML = BUDGET_CPU > 0 ? `\nbudget:\n  cpu_percent: ${BUDGET_CPU}\n` : "";

if (process.getuid?.() !== 0) {
  console.error("bench/overhead.ts needs root (BPF, tshark)");
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), "et-overhead-"));
const children: Subprocess[] = [];
let nginxProc: Subprocess | undefined;
const cleanup = () => {
  for (const c of children) c.kill("SIGKILL");
  if (nginxProc?.exitCode === null) nginxProc.kill("SIGTERM"); // SIGKILL would leave its worker
  rmSync(dir, { recursive: true, force: true });
};
process.on("exit", cleanup);


// ------------------------------------------------------------------ the traced servers
// --server node: a keep-alive Node http/https server per scheme (nodesource's node exports
// OpenSSL's SSL_* symbols, so the agent decrypts it through uprobes).
// --server nginx: one nginx (1 worker, its own config in the temp dir, access_log and sendfile off)
// serving a small static JSON with keep-alive on a plain and an HTTPS port; the agent selects its
// master by pid (workers are its children). wrk speaks TLS to the https ones.
// --tls runs only https; --schemes http,https interleaves both in every round, so BPF ns/request
// of the plain and the TLS path are compared under the same machine load.
// --server go: the Go 1.19 net/http TLS server of the tests (test/fixtures/go/httpsecho, built
// with Debian's golang-1.19-go; crypto/tls probed at its (*Conn).Read/Write), HTTPS only.
const SERVER = arg("--server", "node");
if (SERVER !== "node" && SERVER !== "nginx" && SERVER !== "go") {
  console.error("--server is node, nginx or go");
  process.exit(2);
}
const SCHEMES = SERVER === "go" ? ["https"] : arg("--schemes", process.argv.includes("--tls") ? "https" : "http").split(",");
if (SCHEMES.some((s) => s !== "http" && s !== "https")) {
  console.error("--schemes takes http and/or https");
  process.exit(2);
}
const certs = makeTestCerts();
const basePort = 18500 + (process.pid % 400) * 2;
const body = JSON.stringify({ ok: true, items: [1, 2, 3], note: "x".repeat(200) });

interface Target { scheme: string; port: number; pid: number; url: string }
const targets = new Map<string, Target>();

if (SERVER === "node") {
  for (const [i, scheme] of SCHEMES.entries()) {
    const tls = scheme === "https";
    const port = basePort + i;
    const js = join(dir, `server-${scheme}.js`);
    writeFileSync(js, `
const ${scheme} = require("${scheme}");
const fs = require("fs");
const body = ${JSON.stringify(body)};
const handler = (req, res) => { res.writeHead(200, { "content-type": "application/json" }); res.end(body); };
${tls ? `https.createServer({ cert: fs.readFileSync(${JSON.stringify(certs.server.cert)}), key: fs.readFileSync(${JSON.stringify(certs.server.key)}) }, handler)` : "http.createServer(handler)"}
  .listen(${port}, "127.0.0.1");
`);
    const p = Bun.spawn(["node", js], { stdout: "ignore", stderr: "inherit" });
    children.push(p);
    targets.set(scheme, { scheme, port, pid: p.pid, url: `${scheme}://127.0.0.1:${port}/api/items?id=1` });
  }
} else if (SERVER === "go") {
  const p = Bun.spawn([buildGo("httpsecho"), "-serve"], { stdout: "pipe", stderr: "inherit" });
  children.push(p);
  const first = await p.stdout.getReader().read();
  const port = Number(/listening (\d+)/.exec(new TextDecoder().decode(first.value))?.[1]);
  if (!port) throw new Error("the Go server did not say its port");
  targets.set("https", { scheme: "https", port, pid: p.pid, url: `https://127.0.0.1:${port}/items` });
} else {
  chmodSync(dir, 0o755); // the worker runs as nobody
  mkdirSync(join(dir, "www"));
  mkdirSync(join(dir, "logs"));
  writeFileSync(join(dir, "www", "items.json"), body);
  const servers = SCHEMES.map((scheme, i) => {
    const port = basePort + i;
    const ssl = scheme === "https" ? ` ssl;\n    ssl_certificate ${certs.server.cert};\n    ssl_certificate_key ${certs.server.key}` : "";
    return `  server {\n    listen 127.0.0.1:${port}${ssl};\n    root ${dir}/www;\n  }`;
  });
  writeFileSync(join(dir, "nginx.conf"), benchNginxConf(dir, servers));
  nginxProc = Bun.spawn(["nginx", "-p", dir, "-c", join(dir, "nginx.conf")], { stdout: "ignore", stderr: "inherit" });
  for (const [i, scheme] of SCHEMES.entries()) {
    const port = basePort + i;
    targets.set(scheme, { scheme, port, pid: nginxProc.pid, url: `${scheme}://127.0.0.1:${port}/items.json` });
  }
}
for (const t of targets.values()) {
  for (let i = 0; ; i++) {
    const r = Bun.spawnSync(["curl", "-skf", t.url], { stdout: "pipe" });
    if (r.exitCode === 0 && (r.stdout.toString() === body || SERVER === "go")) break;
    if (i > 100) {
      console.error(`${SERVER} did not serve ${t.url}`);
      await stopServers();
      process.exit(1);
    }
    await Bun.sleep(50);
  }
}

/** nginx gets SIGTERM: a SIGKILLed master leaves its worker running. */
async function stopServers(): Promise<void> {
  if (!nginxProc || nginxProc.exitCode !== null) return;
  nginxProc.kill("SIGTERM");
  const t = setTimeout(() => nginxProc!.kill("SIGKILL"), 3000);
  await nginxProc.exited;
  clearTimeout(t);
}

// ------------------------------------------------------------------ the OTLP receiver for `run`
// countOnly: a collector that keeps up (decoding every span into objects here fell behind at
// 20k spans/s, and the agent spooled: its spool path, not its export, was measured).
const rx = await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key }, countOnly: true });
/** The `run` config selecting `pid` (and its children). */
function runConfig(pid: number, compression = "gzip"): string {
  const path = join(dir, `run-${pid}-${compression}.yaml`);
  writeFileSync(path, runConfigYaml({ pid, caCert: certs.ca.cert, endpoint: rx.endpoint, spoolDir: join(dir, "spool"), compression }) + BUFFER_YAML + BUDGET_YAML);
  return path;
}
const capCfg = join(dir, "capture.yaml");
writeFileSync(capCfg, "stats_interval: 1s\nlogging:\n  level: info\n" + BUFFER_YAML + BUDGET_YAML);

/** The modes that run `ebpf-tracer run` against the receiver. */
const isRun = (mode: string): boolean => mode === "run" || mode === "run-zstd";

/** `idle`: the agent runs with every probe attached but selects only a sleeping process, so the
 * load pays what unselected processes pay (the syscall tracepoint path and the programs' early
 * exits) and nothing of the capture itself. */
let sleeper: Subprocess | undefined;
function idlePid(): number {
  if (!sleeper) {
    sleeper = Bun.spawn(["sleep", "100000"]);
    children.push(sleeper);
  }
  return sleeper.pid;
}

async function startAgent(mode: string, bin: string, t: Target): Promise<Started | undefined> {
  let cmd: string[];
  if (mode === "capture") cmd = [bin, "capture", "-c", capCfg, "--pid", String(t.pid), "--json"];
  else if (mode === "idle") cmd = [bin, "capture", "-c", capCfg, "--pid", String(idlePid()), "--json"];
  else if (mode === "run") cmd = [bin, "run", "-c", runConfig(t.pid)];
  else if (mode === "run-zstd") cmd = [bin, "run", "-c", runConfig(t.pid, "zstd")];
  else if (mode === "tshark") cmd = ["tshark", "-i", "lo", "-f", `tcp port ${t.port}`, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri", "-l"];
  else return undefined;
  if (mode !== "tshark") cmd = asUnit(cmd);
  const a = await spawnReady(cmd, mode === "tshark" ? "Capturing on" : "capture started", { stdout: mode === "tshark" ? "pipe" : "ignore", env: mode === "tshark" ? process.env : agentEnv() });
  children.push(a.proc);
  return a;
}

// --private-client-ssl: wrk loads a copy of the system's libssl (another inode), so the agent's
// uprobes, which sit on the file nginx/node map, do not fire in the load generator: BPF ns/request
// is then the server's alone, as with a client on another host. Without it, wrk's own
// SSL_read/SSL_write run the TLS programs too (they leave at the tls_procs check).
const clientEnv: Record<string, string> = { ...process.env } as Record<string, string>;
if (process.argv.includes("--private-client-ssl")) {
  const lib = Bun.spawnSync(["sh", "-c", "ldd \"$(command -v wrk)\" | awk '/libssl/ {print $3}'"]).stdout.toString().trim();
  if (!lib) {
    console.error("--private-client-ssl: wrk links no libssl");
    process.exit(2);
  }
  mkdirSync(join(dir, "client-lib"));
  copyFileSync(lib, join(dir, "client-lib", basename(lib)));
  clientEnv.LD_LIBRARY_PATH = join(dir, "client-lib");
}

function wrk(url: string, seconds: number): Promise<{ rps: number; requests: number }> {
  return wrkRun(url, seconds, CONNS, clientEnv);
}

bpfStatsOnUntilExit();
const hasTshark = Bun.which("tshark") !== null;
/** A mode with the agent binary it runs ("capture[base]" when --bins names several). */
interface Variant { mode: string; label: string; bin: string }
const variants: Variant[] = MODES.filter((m) => m !== "tshark" || hasTshark).flatMap((mode) =>
  mode === "capture" || isRun(mode) || mode === "idle" ? BINS.map(([name, bin]) => ({ mode, bin, label: name ? `${mode}[${name}]` : mode })) : [{ mode, bin: "", label: mode }]);
const modes = variants.map((v) => v.label);
if (MODES.includes("tshark") && !hasTshark) console.log("(tshark not installed: its rounds are skipped; apt-get install tshark)");
console.log(`${SERVER === "node" ? "Node" : SERVER === "go" ? "Go net/http" : "nginx (1 worker)"} keep-alive ${SCHEMES.join(" + ")} server${SERVER === "nginx" ? ` pid ${nginxProc!.pid}` : "s"}, wrk -t1 -c${CONNS} -d${DURATION}s${WARMUP > 0 ? ` after ${WARMUP} s of the same load` : ""}, ${ROUNDS} rounds of ${SCHEMES.length > 1 ? `${SCHEMES.join(" / ")} x ` : ""}${modes.join(" / ")}`);
for (const t of targets.values()) await wrk(t.url, 2);

/** One program's share of a run: run time per request, per call, and calls per request. */
interface Prog { name: string; nsPerReq: number; nsPerCall: number; callsPerReq: number }
interface Row { scheme: string; mode: string; rps: number; serverUs: number; cpuPer1k?: number; warmupCpuPer1k?: number; bpfNsPerReq?: number; hwm?: number; seen?: number; lost?: number; delivered?: string; progs?: Prog[] }
const rows: Row[] = [];
const fmtProg = (p: Prog) => `${p.name} ${p.nsPerReq.toFixed(0)} ns/req (${p.nsPerCall.toFixed(0)} ns/call x ${p.callsPerReq.toFixed(2)})`;
for (let round = 1; round <= ROUNDS; round++) {
  for (const t of targets.values()) {
    for (const { mode, label, bin } of variants) {
      const a = await startAgent(mode, bin, t);
      if (a) await Bun.sleep(1200);
      let warm: { ticks: number; wall: number; rps: number; requests: number } | undefined;
      // spans and requests of the agent's whole life (the share seen), the warm-up's included
      const spansBefore = rx.spanCount;
      if (WARMUP > 0) {
        const w0 = a ? cpuTicks(a.proc.pid) : 0;
        const tw = performance.now();
        const ww = await wrk(t.url, WARMUP);
        warm = { ticks: a ? cpuTicks(a.proc.pid) - w0 : 0, wall: (performance.now() - tw) / 1000, rps: ww.rps, requests: ww.requests };
      }
      const bpf0 = a && mode !== "tshark" ? bpfStats(a.proc.pid) : undefined;
      const c0 = a ? cpuTicks(a.proc.pid) : 0;
      const s0 = treeTicks(t.pid);
      const t0 = performance.now();
      const lifeRequests = () => w.requests + (warm?.requests ?? 0);
      const w = await wrk(t.url, DURATION);
      const wall = (performance.now() - t0) / 1000;
      const row: Row = { scheme: t.scheme, mode: label, rps: w.rps, serverUs: ((treeTicks(t.pid) - s0) / CLK_TCK / w.requests) * 1e6 };
      if (a) {
        const cpu = ((cpuTicks(a.proc.pid) - c0) / CLK_TCK / wall) * 100;
        row.cpuPer1k = cpu / (w.rps / 1000);
        if (warm) row.warmupCpuPer1k = ((warm.ticks / CLK_TCK / warm.wall) * 100) / (warm.rps / 1000);
        row.hwm = statusMb(a.proc.pid, "VmHWM");
        if (bpf0) {
          const bpf1 = bpfStats(a.proc.pid);
          let ns = 0;
          row.progs = [];
          for (const [name, [t1, n1]] of bpf1) {
            const [t0_, n0] = bpf0.get(name) ?? [0, 0];
            ns += t1 - t0_;
            if (n1 - n0 > 0) row.progs.push({ name, nsPerReq: (t1 - t0_) / w.requests, nsPerCall: (t1 - t0_) / (n1 - n0), callsPerReq: (n1 - n0) / w.requests });
          }
          row.bpfNsPerReq = ns / w.requests;
          row.progs.sort((x, y) => y.nsPerReq - x.nsPerReq);
        }
        await Bun.sleep(1200);
        if (mode === "tshark") {
          a.proc.kill("SIGINT");
          const out = await new Response(a.proc.stdout as ReadableStream).text();
          row.seen = out.split("\n").filter((l) => l.includes(new URL(t.url).pathname)).length / lifeRequests();
        } else {
          a.proc.kill("SIGINT");
          await a.proc.exited;
          await Bun.sleep(50);
          const st = exitStats(a.stderr());
          // spans the agent made; for run also what the receiver decoded by the time the agent
          // exited (the rest is in its spool, sent at its next start, or counted as dropped)
          row.seen = (st?.SpansEmitted ?? 0) / lifeRequests();
          row.lost = st?.EventLost;
          if (isRun(mode)) row.delivered = `delivered ${(((rx.spanCount - spansBefore) / lifeRequests()) * 100).toFixed(1)}%, spooled ${st?.SpansSpooled ?? "?"}, dropped ${st?.SpansDropped ?? "?"}`;
        }
        await a.proc.exited;
      }
      rows.push(row);
      const off = rows.filter((r) => r.mode === "off" && r.scheme === t.scheme).map((r) => r.rps).sort((x, y) => x - y);
      const base = off[Math.floor(off.length / 2)];
      console.log(
        `round ${round} ${t.scheme.padEnd(5)} ${label.padEnd(8)} ${row.rps.toFixed(0).padStart(7)} req/s` + (base ? `  ratio ${(row.rps / base).toFixed(2)}` : "") +
        `  server ${row.serverUs.toFixed(1)} µs/req` +
        (row.cpuPer1k !== undefined ? `  CPU ${row.cpuPer1k.toFixed(2)} %/1k req/s` : "") +
        (row.warmupCpuPer1k !== undefined ? ` (warm-up ${row.warmupCpuPer1k.toFixed(2)})` : "") +
        (row.bpfNsPerReq !== undefined ? `  BPF ${row.bpfNsPerReq.toFixed(0)} ns/req` : "") +
        (row.hwm !== undefined ? `  peak RSS ${row.hwm.toFixed(0)} MB` : "") +
        (row.seen !== undefined ? `  seen ${(row.seen * 100).toFixed(1)}%` : "") +
        (row.lost ? `  EventLost ${row.lost}` : "") +
        (row.delivered ? ` (${row.delivered})` : "") +
        (row.progs?.length ? `\n    top BPF programs: ${row.progs.slice(0, 4).map(fmtProg).join(", ")}` : ""),
      );
    }
  }
}

console.log("\nmedians:");
for (const t of targets.values()) {
  const offMed = med(rows.filter((r) => r.mode === "off" && r.scheme === t.scheme).map((r) => r.rps));
  for (const m of modes) {
    const rs = rows.filter((r) => r.mode === m && r.scheme === t.scheme);
    console.log(`  ${t.scheme.padEnd(5)} ${m.padEnd(8)} ${med(rs.map((r) => r.rps)).toFixed(0).padStart(7)} req/s` + (offMed ? `  ratio ${(med(rs.map((r) => r.rps)) / offMed).toFixed(2)}` : "") +
      (m !== "off" ? `  CPU ${med(rs.map((r) => r.cpuPer1k!)).toFixed(2)} %/1k req/s  peak RSS ${med(rs.map((r) => r.hwm!)).toFixed(0)} MB  seen ${(med(rs.map((r) => r.seen!)) * 100).toFixed(1)}%` : "") +
      (/^(capture|run)\b/.test(m) ? `  BPF ${med(rs.map((r) => r.bpfNsPerReq!)).toFixed(0)} ns/req` : ""));
  }
}
// Per program, for each BPF mode: median ns/call and calls/request over the rounds.
for (const bpfMode of modes.filter((m) => /^(capture|run)\b/.test(m))) {
  console.log(`\nBPF programs (${bpfMode}, medians over rounds; ns/call x calls/request = ns/request):`);
  for (const t of targets.values()) {
    const rs = rows.filter((r) => r.mode === bpfMode && r.scheme === t.scheme && r.progs);
    const names = new Set(rs.flatMap((r) => r.progs!.map((p) => p.name)));
    const progs = [...names].map((name) => {
      const ps = rs.map((r) => r.progs!.find((p) => p.name === name) ?? { name, nsPerReq: 0, nsPerCall: 0, callsPerReq: 0 });
      return { name, nsPerReq: med(ps.map((p) => p.nsPerReq)), nsPerCall: med(ps.map((p) => p.nsPerCall)), callsPerReq: med(ps.map((p) => p.callsPerReq)) };
    }).sort((x, y) => y.nsPerReq - x.nsPerReq);
    console.log(`  ${t.scheme}: BPF ${med(rs.map((r) => r.bpfNsPerReq!)).toFixed(0)} ns/req`);
    for (const p of progs.filter((p) => p.nsPerReq >= 1)) {
      console.log(`    ${p.name.padEnd(16)} ${p.nsPerReq.toFixed(0).padStart(6)} ns/req  ${p.nsPerCall.toFixed(0).padStart(5)} ns/call  x ${p.callsPerReq.toFixed(2)}`);
    }
  }
}
await rx.close();
await stopServers();
cleanup();
process.exit(0);
