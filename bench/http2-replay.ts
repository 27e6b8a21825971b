/**
 * HTTP/2 replay: recorded connection bytes → Http2Session → exchanges → attributes, no kernel.
 * Prints HTTP/2 streams per second on one core for typical API calls (8–20 request/response
 * headers, small JSON bodies; every 4th stream a unary gRPC call with trailers).
 *
 *   bun bench/http2-replay.ts [--seconds 5] [--connections 200] [--per-conn 100] [--no-pin]
 *
 * Each connection is built once with real HPACK encoders (dynamic table, Huffman) and frames as a
 * client and server would write them (one syscall per HEADERS / DATA group); each pass replays
 * every connection through a fresh session and writes every exchange's attributes.
 */
import { spawnSync } from "node:child_process";
import type { Attributes } from "../src/spans/span.ts";
import type { Exchange, Sender, SessionEnv } from "../src/protocols/session.ts";
import { Http2Session } from "../src/protocols/http2/session.ts";
import { concat, dataFrame, grpcMessage, headersFrames, HpackEncoder, PREFACE, settingsFrame } from "../src/protocols/http2/encoder.ts";

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
if (!process.argv.includes("--no-pin") && !process.env.H2_BENCH_PINNED) {
  const r = spawnSync("taskset", ["-c", "0", process.execPath, ...process.argv.slice(1)], { stdio: "inherit", env: { ...process.env, H2_BENCH_PINNED: "1" } });
  process.exit(r.status ?? 1);
}
const seconds = arg("seconds", 5);
const connections = arg("connections", 200);
const perConn = arg("per-conn", 100);

interface Ev { from: Sender; bytes: Uint8Array; ts: bigint; }

function buildConnection(c: number): Ev[] {
  const evs: Ev[] = [];
  let ts = 1_000_000n;
  const send = (from: Sender, bytes: Uint8Array): void => { evs.push({ from, bytes, ts: (ts += 50_000n) }); };
  const ce = new HpackEncoder();
  const se = new HpackEncoder();
  send("client", concat([PREFACE, settingsFrame([[3, 100], [4, 1 << 20]])]));
  send("server", concat([settingsFrame([[3, 250]]), settingsFrame([], true)]));
  send("client", settingsFrame([], true));
  const paths = ["/api/v1/users", "/api/v1/orders", "/api/v1/items", "/api/v1/carts"];
  for (let i = 0; i < perConn; i++) {
    const sid = 1 + 2 * i;
    const id = `${c}-${i}`;
    if (i % 4 === 3) {
      send("client", concat([
        headersFrames(sid, ce.encode([[":method", "POST"], [":scheme", "http"], [":path", "/shop.Orders/Get"], [":authority", "orders:50051"],
          ["content-type", "application/grpc"], ["te", "trailers"], ["grpc-timeout", "1S"], ["user-agent", "grpc-go/1.60.0"],
          ["x-request-id", id], ["traceparent", `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`]])),
        dataFrame(sid, grpcMessage("\x0a\x04" + id.padEnd(4, "x").slice(0, 4)), { endStream: true }),
      ]));
      send("server", concat([
        headersFrames(sid, se.encode([[":status", "200"], ["content-type", "application/grpc"], ["grpc-accept-encoding", "gzip"]])),
        dataFrame(sid, grpcMessage("x".repeat(120))),
        headersFrames(sid, se.encode([["grpc-status", "0"], ["grpc-message", ""]]), { endStream: true }),
      ]));
      continue;
    }
    const post = i % 2 === 1;
    const req: [string, string][] = [[":method", post ? "POST" : "GET"], [":scheme", "https"], [":authority", "api.example.com"],
      [":path", `${paths[i % 4]}/${i}?expand=true&page=${i % 7}`], ["accept", "application/json"], ["accept-encoding", "gzip, deflate"],
      ["user-agent", "okhttp/4.12.0"], ["authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"], ["x-request-id", id],
      ["traceparent", `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`], ["cookie", "session=s3cr3t"], ["accept-language", "en-US"]];
    if (post) req.push(["content-type", "application/json"], ["content-length", "90"]);
    const body = JSON.stringify({ id, name: "widget", qty: i % 9, tags: ["a", "b"], note: "x".repeat(30) });
    send("client", post ? concat([headersFrames(sid, ce.encode(req)), dataFrame(sid, body, { endStream: true })]) : headersFrames(sid, ce.encode(req), { endStream: true }));
    const res: [string, string][] = [[":status", post ? "201" : "200"], ["content-type", "application/json"], ["date", "Fri, 27 Nov 2026 10:00:00 GMT"],
      ["server", "envoy"], ["x-request-id", id], ["cache-control", "no-store"], ["vary", "Accept-Encoding"], ["x-envoy-upstream-service-time", String(i % 50)]];
    const rbody = JSON.stringify({ id, ok: true, items: [1, 2, 3], pad: "y".repeat(120) });
    send("server", concat([headersFrames(sid, se.encode(res)), dataFrame(sid, rbody, { endStream: true })]));
  }
  return evs;
}

class CountingEnv implements SessionEnv {
  bodyMaxSize = 128 * 1024;
  exchanges = 0;
  attrs = 0;
  errors = 0;
  keepBody(ct: string | undefined): boolean { return ct !== undefined && ct.includes("json"); }
  emit(x: Exchange): void {
    const a: Attributes = {};
    x.writeAttributes(a, false);
    this.exchanges++;
    for (const _ in a) this.attrs++;
  }
  error(): void { this.errors++; }
  count(): void {}
  handoff(): never { throw new Error("no handoff"); }
}

const conns = Array.from({ length: connections }, (_, c) => buildConnection(c));
const bytes = conns.reduce((a, evs) => a + evs.reduce((b, e) => b + e.bytes.length, 0), 0);

function pass(env: CountingEnv): void {
  for (const evs of conns) {
    const s = new Http2Session(env);
    for (const e of evs) s.data(e.from, e.bytes, e.ts, true);
    s.close(1n << 50n);
  }
}

pass(new CountingEnv()); // warm-up
const env = new CountingEnv();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
let passes = 0;
while (performance.now() - t0 < seconds * 1000) { pass(env); passes++; }
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const streams = env.exchanges;
console.log(`http2 replay: ${connections} connections x ${perConn} streams, ${(bytes / 1e6).toFixed(1)} MB per pass, ${passes} passes`);
const cpuS = (cpu.user + cpu.system) / 1e6;
console.log(`  ${Math.round(streams / (ms / 1000)).toLocaleString("en-US")} streams/s (wall), ${Math.round(streams / cpuS).toLocaleString("en-US")} streams per CPU-second, ${((bytes * passes) / 1e6 / (ms / 1000)).toFixed(0)} MB/s, ` +
  `${(env.attrs / streams).toFixed(1)} attributes/stream, errors ${env.errors}, CPU/wall ${((cpu.user + cpu.system) / 1000 / ms).toFixed(2)}`);
