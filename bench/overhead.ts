/**
 * What the agent costs per request, interleaved with runs without it (the machine is noisy):
 * a keep-alive Node http server under `wrk -t1 -cN`, in rounds of
 *   off      — no agent
 *   capture  — `ebpf-tracer capture --json --pid PID > /dev/null`
 *   run      — `ebpf-tracer run` exporting OTLP (protobuf + gzip) over HTTPS to a loopback receiver
 *   tshark   — tshark capturing the same port (a packet-capture peer), when installed
 * printing per run: requests/s and its ratio to the median "off" run, agent CPU per 1k req/s,
 * BPF run time per request (kernel.bpf_stats_enabled; every program the agent loaded, and the
 * costliest programs by name), peak RSS (VmHWM), and the share of requests that became spans.
 *
 *   sudo bun bench/overhead.ts [--rounds 3] [--duration 10] [--connections 16] [--modes off,capture,run,tshark] [--tls]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { makeTestCerts } from "../test/support/certs.ts";
import { CLK_TCK, cpuTicks, statusMb } from "./procstat.ts";
import { bpfStats } from "../test/support/bpf-progs.ts";
import { OtlpReceiver } from "../test/support/otlp-receiver.ts";

const ROOT = resolve(import.meta.dir, "..");
const BIN = resolve(ROOT, "dist/ebpf-tracer");
const arg = (n: string, d: string): string => {
  const i = process.argv.indexOf(n);
  return i >= 0 ? process.argv[i + 1]! : d;
};
const ROUNDS = Number(arg("--rounds", "3"));
const DURATION = Number(arg("--duration", "10"));
const CONNS = Number(arg("--connections", "16"));
const MODES = arg("--modes", "off,capture,run,tshark").split(",");

if (process.getuid?.() !== 0) {
  console.error("bench/overhead.ts needs root (BPF, tshark)");
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), "et-overhead-"));
const children: Subprocess[] = [];
const cleanup = () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
};
process.on("exit", cleanup);


// ------------------------------------------------------------------ the traced server
// --tls: the same server over HTTPS (nodesource's node exports OpenSSL's SSL_* symbols, so the
// agent decrypts it through uprobes); wrk speaks TLS too. Compare BPF ns/request with a plain run.
const TLS = process.argv.includes("--tls");
const certs = makeTestCerts();
const port = 18500 + (process.pid % 400);
writeFileSync(join(dir, "server.js"), `
const ${TLS ? "https" : "http"} = require("${TLS ? "https" : "http"}");
const fs = require("fs");
const body = JSON.stringify({ ok: true, items: [1, 2, 3], note: "x".repeat(200) });
const handler = (req, res) => { res.writeHead(200, { "content-type": "application/json" }); res.end(body); };
${TLS ? `https.createServer({ cert: fs.readFileSync(${JSON.stringify(certs.server.cert)}), key: fs.readFileSync(${JSON.stringify(certs.server.key)}) }, handler)` : "http.createServer(handler)"}
  .listen(${port}, "127.0.0.1");
`);
const server = Bun.spawn(["node", join(dir, "server.js")], { stdout: "ignore", stderr: "inherit" });
children.push(server);
await Bun.sleep(500);
const URL = `${TLS ? "https" : "http"}://127.0.0.1:${port}/api/items?id=1`;

// ------------------------------------------------------------------ the OTLP receiver for `run`
const rx = await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key } });
const runCfg = join(dir, "run.yaml");
writeFileSync(runCfg, [
  `agent_config:`,
  `  ca_cert_file: ${certs.ca.cert}`,
  `  reporting:`,
  `    endpoint: ${rx.endpoint}`,
  `capture:`,
  `  pids: [${server.pid}]`,
  `spool:`,
  `  path: ${join(dir, "spool")}`,
  `stats_interval: 1s`,
  `logging:`,
  `  level: info`,
].join("\n"));
const capCfg = join(dir, "capture.yaml");
writeFileSync(capCfg, "stats_interval: 1s\nlogging:\n  level: info\n");

interface Started {
  proc: Subprocess;
  stderr: () => string;
}

async function startAgent(mode: string): Promise<Started | undefined> {
  let cmd: string[];
  if (mode === "capture") cmd = [BIN, "capture", "-c", capCfg, "--pid", String(server.pid), "--json"];
  else if (mode === "run") cmd = [BIN, "run", "-c", runCfg];
  else if (mode === "tshark") cmd = ["tshark", "-i", "lo", "-f", `tcp port ${port}`, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri", "-l"];
  else return undefined;
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: mode === "tshark" ? "pipe" : "ignore", stderr: "pipe" });
  children.push(proc);
  let err = "";
  (async () => {
    const dec = new TextDecoder();
    for await (const c of proc.stderr as ReadableStream<Uint8Array>) err += dec.decode(c, { stream: true });
  })();
  const ready = mode === "tshark" ? "Capturing on" : "capture started";
  const deadline = Date.now() + 20_000;
  while (!err.includes(ready)) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`${mode} did not start: ${err}`);
    await Bun.sleep(20);
  }
  return { proc, stderr: () => err };
}

async function wrk(seconds: number): Promise<{ rps: number; requests: number }> {
  const p = Bun.spawn(["wrk", "-t1", `-c${CONNS}`, `-d${seconds}s`, URL], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), requests: Number(/(\d+) requests in/.exec(out)?.[1]) };
}

function lastStats(err: string): Record<string, number> | undefined {
  const lines = err.split("\n").filter((l) => l.includes('"msg":"stats"'));
  return lines.length ? JSON.parse(lines.at(-1)!) : undefined;
}

Bun.spawnSync(["sysctl", "-q", "-w", "kernel.bpf_stats_enabled=1"]);
const hasTshark = Bun.which("tshark") !== null;
const modes = MODES.filter((m) => m !== "tshark" || hasTshark);
if (MODES.includes("tshark") && !hasTshark) console.log("(tshark not installed: its rounds are skipped; apt-get install tshark)");
console.log(`Node keep-alive ${TLS ? "HTTPS" : "HTTP"} server pid ${server.pid}, wrk -t1 -c${CONNS} -d${DURATION}s, ${ROUNDS} rounds of ${modes.join(" / ")}`);
await wrk(2);

interface Row { mode: string; rps: number; cpuPer1k?: number; bpfNsPerReq?: number; hwm?: number; seen?: number; delivered?: string; top?: string }
const rows: Row[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const mode of modes) {
    const a = await startAgent(mode);
    if (a) await Bun.sleep(1200);
    const bpf0 = a && mode !== "tshark" ? bpfStats(a.proc.pid) : undefined;
    const c0 = a ? cpuTicks(a.proc.pid) : 0;
    const t0 = performance.now();
    const spansBefore = rx.spans.length;
    const w = await wrk(DURATION);
    const wall = (performance.now() - t0) / 1000;
    const row: Row = { mode, rps: w.rps };
    if (a) {
      const cpu = ((cpuTicks(a.proc.pid) - c0) / CLK_TCK / wall) * 100;
      row.cpuPer1k = cpu / (w.rps / 1000);
      row.hwm = statusMb(a.proc.pid, "VmHWM");
      if (bpf0) {
        const bpf1 = bpfStats(a.proc.pid);
        let ns = 0;
        const per: [string, number, number][] = [];
        for (const [name, [t, n]] of bpf1) {
          const [t0_, n0] = bpf0.get(name) ?? [0, 0];
          ns += t - t0_;
          if (n - n0 > 0) per.push([name, (t - t0_) / w.requests, (t - t0_) / (n - n0)]);
        }
        row.bpfNsPerReq = ns / w.requests;
        row.top = per.sort((x, y) => y[1] - x[1]).slice(0, 4).map(([n, perReq, perCall]) => `${n} ${perReq.toFixed(0)} ns/req (${perCall.toFixed(0)} ns/call)`).join(", ");
      }
      await Bun.sleep(1200);
      if (mode === "tshark") {
        a.proc.kill("SIGINT");
        const out = await new Response(a.proc.stdout as ReadableStream).text();
        row.seen = out.split("\n").filter((l) => l.includes("/api/items")).length / w.requests;
      } else {
        a.proc.kill("SIGINT");
        await a.proc.exited;
        await Bun.sleep(50);
        const st = lastStats(a.stderr());
        // spans the agent made; for run also what the receiver decoded by the time the agent
        // exited (the rest is in its spool, sent at its next start, or counted as dropped)
        row.seen = (st?.SpansEmitted ?? 0) / w.requests;
        if (mode === "run") row.delivered = `delivered ${(((rx.spans.length - spansBefore) / w.requests) * 100).toFixed(1)}%, spooled ${st?.SpansSpooled ?? "?"}, dropped ${st?.SpansDropped ?? "?"}`;
      }
      await a.proc.exited;
    }
    rows.push(row);
    const off = rows.filter((r) => r.mode === "off").map((r) => r.rps).sort((x, y) => x - y);
    const base = off[Math.floor(off.length / 2)] ?? row.rps;
    console.log(
      `round ${round} ${mode.padEnd(8)} ${row.rps.toFixed(0).padStart(7)} req/s  ratio ${(row.rps / base).toFixed(2)}` +
      (row.cpuPer1k !== undefined ? `  CPU ${row.cpuPer1k.toFixed(2)} %/1k req/s` : "") +
      (row.bpfNsPerReq !== undefined ? `  BPF ${row.bpfNsPerReq.toFixed(0)} ns/req` : "") +
      (row.hwm !== undefined ? `  peak RSS ${row.hwm.toFixed(0)} MB` : "") +
      (row.seen !== undefined ? `  seen ${(row.seen * 100).toFixed(1)}%` : "") +
      (row.delivered ? ` (${row.delivered})` : "") +
      (row.top ? `\n    top BPF programs: ${row.top}` : ""),
    );
  }
}

const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const offMed = med(rows.filter((r) => r.mode === "off").map((r) => r.rps));
console.log("\nmedians:");
for (const m of modes) {
  const rs = rows.filter((r) => r.mode === m);
  console.log(`  ${m.padEnd(8)} ${med(rs.map((r) => r.rps)).toFixed(0).padStart(7)} req/s  ratio ${(med(rs.map((r) => r.rps)) / offMed).toFixed(2)}` +
    (m !== "off" ? `  CPU ${med(rs.map((r) => r.cpuPer1k!)).toFixed(2)} %/1k req/s  peak RSS ${med(rs.map((r) => r.hwm!)).toFixed(0)} MB  seen ${(med(rs.map((r) => r.seen!)) * 100).toFixed(1)}%` : "") +
    (m === "capture" || m === "run" ? `  BPF ${med(rs.map((r) => r.bpfNsPerReq!)).toFixed(0)} ns/req` : ""));
}
await rx.close();
cleanup();
process.exit(0);
