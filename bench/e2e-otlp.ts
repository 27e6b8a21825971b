#!/usr/bin/env bun
/**
 * End-to-end export benchmark: nginx under wrk on loopback, `dist/ebpf-tracer run` capturing it
 * and exporting OTLP (protobuf + gzip, the defaults) over HTTPS to a loopback collector that
 * accepts everything. Prints requests made, spans the collector accepted (the agent's
 * TotalRequestsSent), delivery rate, agent CPU and RSS, and events lost.
 *
 *   sudo bun bench/e2e-otlp.ts [--seconds 10] [--connections 50] [--delay-ms 0]
 *
 * --delay-ms N paces each wrk connection (a Lua delay per request) for a steady rate below max.
 */
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, chmodSync } from "node:fs";
import { CLK_TCK, cpuTicks, statusMb } from "./procstat.ts";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { makeTestCerts } from "../test/support/certs.ts";

const args = process.argv.slice(2);
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const SECONDS = opt("seconds", 10);
const CONNS = opt("connections", 50);
const DELAY = opt("delay-ms", 0);
const BIN = resolve(import.meta.dir, "../dist/ebpf-tracer");

const dir = mkdtempSync(join(tmpdir(), "et-e2e-"));
chmodSync(dir, 0o755);
const certs = makeTestCerts();

let accepted = 0, requests = 0, bytes = 0;
const collector = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  tls: { cert: readFileSync(certs.server.cert, "utf8"), key: readFileSync(certs.server.key, "utf8") },
  async fetch(req) {
    const body = await req.arrayBuffer();
    requests++;
    bytes += body.byteLength;
    accepted++;
    return new Response(new Uint8Array(0), { headers: { "content-type": "application/x-protobuf" } });
  },
});

const NGINX_PORT = 18500 + (process.pid % 1000);
mkdirSync(join(dir, "www"));
mkdirSync(join(dir, "logs"));
writeFileSync(join(dir, "www", "item.json"), JSON.stringify({ id: 42, name: "widget", tags: ["a", "b"], price: 9.99 }));
chmodSync(join(dir, "www"), 0o755);
chmodSync(join(dir, "www", "item.json"), 0o644);
writeFileSync(join(dir, "nginx.conf"), `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/logs/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; types { application/json json; }
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server { listen 127.0.0.1:${NGINX_PORT}; root ${dir}/www; } }
`);
const nginx = Bun.spawn(["/usr/sbin/nginx", "-p", dir, "-c", join(dir, "nginx.conf")], { stdout: "ignore", stderr: "inherit" });
await Bun.sleep(300);

const cfg = join(dir, "agent.yaml");
writeFileSync(cfg, `exporter: otlp
agent_config:
  ca_cert_file: ${certs.ca.cert}
  reporting:
    endpoint: https://localhost:${collector.port}
targets:
  - exe: nginx
spool:
  path: ${dir}/spool
stats_interval: 1s
admin:
  enabled: false
`);
const agent = Bun.spawn([BIN, "run", "-c", cfg], { stdout: "ignore", stderr: "pipe" });
let err = "";
(async () => {
  for await (const c of agent.stderr) err += new TextDecoder().decode(c);
})();
while (!err.includes("capture started")) {
  if (agent.exitCode !== null) throw new Error(err);
  await Bun.sleep(20);
}


const lua = join(dir, "pace.lua");
writeFileSync(lua, `function delay() return ${DELAY} end\n`);
const t0 = performance.now();
const c0 = cpuTicks(agent.pid);
const w = Bun.spawn(["/usr/bin/wrk", "-t1", `-c${CONNS}`, `-d${SECONDS}s`, ...(DELAY ? ["-s", lua] : []), `http://127.0.0.1:${NGINX_PORT}/item.json`], { stdout: "pipe" });
const out = await new Response(w.stdout).text();
const made = Number(/(\d+) requests in/.exec(out)?.[1]);
const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
// Wait until the collector has everything (or stops making progress for 5 s).
let last = -1, still = 0;
while (still < 50) {
  const sent = lastStats().TotalRequestsSent ?? 0;
  if (sent >= made) break;
  if (sent === last) still++;
  else still = 0;
  last = sent;
  await Bun.sleep(100);
}
const wall = (performance.now() - t0) / 1000;
const cpu = ((cpuTicks(agent.pid) - c0) / CLK_TCK / wall) * 100;
const rss = statusMb(agent.pid, "VmRSS"), hwm = statusMb(agent.pid, "VmHWM");
const s = lastStats();
agent.kill("SIGTERM");
await agent.exited;
nginx.kill("SIGTERM");
collector.stop(true);

function lastStats(): Record<string, number> {
  const lines = err.split("\n").filter((l) => l.includes('"msg":"stats"'));
  return lines.length ? JSON.parse(lines[lines.length - 1]!) : {};
}

console.log(`wrk -t1 -c${CONNS} -d${SECONDS}s${DELAY ? ` paced ${DELAY} ms` : ""}: ${made} requests, ${rps} req/s`);
console.log(`spans accepted by the collector  ${s.TotalRequestsSent} (${((s.TotalRequestsSent! / made) * 100).toFixed(2)}% of requests) in ${requests} export requests, ${(bytes / 1e6).toFixed(1)} MB`);
console.log(`delivery rate                    ${(s.TotalRequestsSent! / wall).toFixed(0)} spans/s over ${wall.toFixed(1)} s (wrk + drain)`);
console.log(`agent CPU                        ${cpu.toFixed(0)}% of one core`);
console.log(`agent RSS                        ${rss.toFixed(0)} MB now, ${hwm.toFixed(0)} MB peak`);
console.log(`EventLost ${s.EventLost} LostBytes ${s.LostBytes} PartialSpans ${s.PartialSpans} SpansDropped ${s.SpansDropped ?? 0} SpansSpooled ${s.SpansSpooled ?? 0}`);
process.exit(0);
