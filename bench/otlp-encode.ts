/**
 * OTLP encoding throughput on one core: typical API spans (20 headers, 1 KiB request and
 * response bodies, ~15 other attributes), batches of 512, protobuf and JSON, gzip or not. Every
 * header value of these changes from span to span (the worst case for the encoder's cache of
 * repeated entries). The "agent-shaped" rows encode what the agent exports for the Node server of
 * bench/overhead.ts: 16 keep-alive connections in turn, the attributes buildSpan writes (peers,
 * process, the server's headers and 237-byte JSON body; the Date header changes every 1,000).
 * Run: bun bench/otlp-encode.ts [seconds-per-case]   (goal: >= 50,000 spans/s protobuf+gzip)
 */
import type { Attributes, Span } from "../src/spans/span.ts";
import { encodeSpans, type EncodeOptions } from "../src/export/otlp/batch.ts";

const WORDS = ["alpha", "beta", "gamma", "delta", "order", "item", "price", "user", "status", "active", "region", "eu-west"];

function jsonBody(seed: number, bytes: number): string {
  const parts: string[] = [];
  let n = seed;
  let len = 2;
  while (len < bytes - 40) {
    n = (n * 1103515245 + 12345) & 0x7fffffff;
    const p = `"${WORDS[n % WORDS.length]}_${n % 1000}":${n % 3 ? `"${WORDS[(n >> 4) % WORDS.length]}-${n % 99991}"` : n % 100000}`;
    parts.push(p);
    len += p.length + 1;
  }
  return `{${parts.join(",")}}`.padEnd(bytes, " ");
}

const resource: Attributes = {
  "service.name": "checkout", "host.name": "node-17", "deployment.environment": "prod",
  "process.pid": 31337, "process.executable.name": "java", "process.command_line": "java -jar /srv/checkout.jar",
};

export function typicalSpan(i: number): Span {
  const a: Attributes = {
    "http.method": "POST", "http.scheme": "https", "http.target": `/api/v1/orders/${i}`,
    "http.url": `https://checkout.internal/api/v1/orders/${i}?expand=items`, "http.host": "checkout.internal",
    "http.status_code": i % 50 ? 200 : 503, "http.flavor": "1.1", "net.peer.ip": "10.1.2.3", "net.peer.port": 40000 + (i % 20000),
    "net.host.ip": "10.1.2.4", "net.host.port": 8443, "http.request_content_length": 1024, "http.response_content_length": 1024,
    "http.request.body.truncated": false, "http.response.body.truncated": false,
  };
  const reqHeaders = ["content-type", "accept", "user-agent", "authorization", "x-request-id", "x-b3-traceid", "accept-encoding", "host", "content-length", "cookie"];
  const resHeaders = ["content-type", "content-length", "date", "server", "cache-control", "x-request-id", "vary", "etag", "set-cookie", "strict-transport-security"];
  for (const h of reqHeaders) a[`http.request.header.${h}`] = `${h}-value-${i % 97}-${"v".repeat(20)}`;
  for (const h of resHeaders) a[`http.response.header.${h}`] = `${h}-value-${i % 89}-${"w".repeat(16)}`;
  a["http.request.body"] = jsonBody(i, 1024);
  a["http.response.body"] = jsonBody(i * 7 + 1, 1024);
  return {
    traceId: (0x1000 + i).toString(16).padStart(32, "a"), spanId: (0x2000 + i).toString(16).padStart(16, "b"),
    name: "POST /api/v1/orders/{id}", kind: i % 2 ? "client" : "server",
    startTimeUnixNano: 1_700_000_000_000_000_000n + BigInt(i) * 1_000_000n, endTimeUnixNano: 1_700_000_000_004_000_000n + BigInt(i) * 1_000_000n,
    error: i % 50 === 0, attributes: a, resource,
  };
}

const agentResource: Attributes = Object.freeze({ "service.name": "node", "host.name": "vm", "process.pid": 4725, "process.executable.name": "node" });
const agentBody = JSON.stringify({ ok: true, items: [1, 2, 3], note: "x".repeat(200) });

/** What buildSpan makes of one exchange with the Node server (cf. `capture --json` of it). */
export function agentSpan(i: number): Span {
  const conn = i % 16;
  const a: Attributes = {
    "http.request.method": "GET", "url.path": "/api/items", "url.query": "id=3", "http.response.status_code": 200,
    "network.protocol.version": "1.1", "http.request.header.host": "127.0.0.1:18777", "http.request.header.user-agent": "wrk",
    "http.response.header.content-type": "application/json",
    "http.response.header.date": `Sat, 28 Nov 2026 00:${String(Math.floor(i / 1000) % 60).padStart(2, "0")}:10 GMT`,
    "http.response.header.connection": "keep-alive", "http.response.header.keep-alive": "timeout=5",
    "http.response.header.transfer-encoding": "chunked", "user_agent.original": "wrk", "http.request.body.size": 0,
    "http.response.body": agentBody, "http.response.body.size": agentBody.length, "url.scheme": "http", "network.transport": "tcp",
    "server.address": "127.0.0.1", "server.port": 18777, "client.address": "127.0.0.1", "client.port": 48700 + conn,
    "network.peer.address": "127.0.0.1", "network.peer.port": 48700 + conn, "process.pid": 4725, "process.executable.name": "node",
    "process.executable.path": "/usr/bin/node", "process.command_line": "node /tmp/js.js", "traceableai.module.name": "ebpf",
    "ebpf.sampling.ratio": 1, "http.route": "/api/items",
  };
  return {
    traceId: (0x1000 + i).toString(16).padStart(32, "0"), spanId: (0x2000 + i).toString(16).padStart(16, "0"),
    name: "GET /api/items", kind: "server",
    startTimeUnixNano: 1_764_291_550_000_000_000n + BigInt(i) * 30_000n, endTimeUnixNano: 1_764_291_550_000_400_000n + BigInt(i) * 30_000n,
    error: false, attributes: a, resource: agentResource,
  };
}

function run(label: string, spans: Span[], o: EncodeOptions, seconds: number): void {
  const batch = 512;
  let done = 0;
  let bytes = 0;
  for (let i = 0; i < 5; i++) encodeSpans(spans.slice(0, batch), o); // warm-up
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const start = (done / batch) % (spans.length / batch) * batch;
    bytes += encodeSpans(spans.slice(start, start + batch), o).length;
    done += batch;
  }
  const s = (performance.now() - t0) / 1000;
  const perSec = Math.round(done / s);
  console.log(`${label.padEnd(18)} ${perSec.toLocaleString("en-US").padStart(9)} spans/s  ${(bytes / done).toFixed(0).padStart(5)} B/span on the wire  ${(bytes / s / 1e6).toFixed(1)} MB/s out`);
}

if (import.meta.main) {
  const seconds = Number(process.argv[2] ?? 2);
  const spans = Array.from({ length: 512 * 8 }, (_, i) => typicalSpan(i));
  const rawSize = encodeSpans(spans.slice(0, 512), { encoding: "protobuf", compression: "none", fallbackService: "x" }).length / 512;
  console.log(`bun ${Bun.version}, one core, batches of 512 typical spans (${rawSize.toFixed(0)} B/span protobuf before gzip)`);
  run("protobuf + gzip", spans, { encoding: "protobuf", compression: "gzip", fallbackService: "x" }, seconds);
  run("protobuf", spans, { encoding: "protobuf", compression: "none", fallbackService: "x" }, seconds);
  run("protobuf + zstd", spans, { encoding: "protobuf", compression: "zstd", fallbackService: "x" }, seconds);
  run("json + gzip", spans, { encoding: "json", compression: "gzip", fallbackService: "x" }, seconds);
  run("json", spans, { encoding: "json", compression: "none", fallbackService: "x" }, seconds);
  const agent = Array.from({ length: 512 * 8 }, (_, i) => agentSpan(i));
  const agentSize = encodeSpans(agent.slice(0, 512), { encoding: "protobuf", compression: "none", fallbackService: "x" }).length / 512;
  console.log(`agent-shaped spans (${agentSize.toFixed(0)} B/span protobuf before gzip):`);
  run("protobuf + gzip", agent, { encoding: "protobuf", compression: "gzip", fallbackService: "x" }, seconds);
  run("protobuf + zstd", agent, { encoding: "protobuf", compression: "zstd", fallbackService: "x" }, seconds);
  run("protobuf", agent, { encoding: "protobuf", compression: "none", fallbackService: "x" }, seconds);
}
