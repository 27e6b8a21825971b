/**
 * Real HTTP/2 traffic: Node's http2 module (nghttp2) as client and server, recorded through a
 * TCP relay on 127.0.0.1 (each read = one chunk ending a call), then replayed through
 * Http2Session. Covers maximal padding, headers big enough for CONTINUATION both ways, a POST body,
 * server push, gRPC-style trailers and a trailers-only error, a cancelled stream (RST_STREAM) and
 * GOAWAY at the end; then the same capture attached at every chunk, with every chunk lost, and
 * split at arbitrary points: values are right or reported missing, never wrong.
 * Skipped, saying why, when `node` is not installed.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import type { Attributes } from "../../src/spans/span.ts";
import type { Exchange, Sender, SessionEnv } from "../../src/protocols/session.ts";
import { Http2Session } from "../../src/protocols/http2/session.ts";
import { HpackMemory } from "../../src/protocols/http2/hpack.ts";

/** Collects what a session reports (importing the session test's helper would run its tests too). */
class FakeEnv implements SessionEnv {
  bodyMaxSize = 1024;
  exchanges: Exchange[] = [];
  errors: string[] = [];
  keepBody(ct: string | undefined): boolean { return ct !== undefined && /json|text/.test(ct); }
  emit(x: Exchange): void { this.exchanges.push(x); }
  error(from: Sender, reason: string): void { this.errors.push(`${from}: ${reason}`); }
  count(): void {}
  handoff(): never { throw new Error("no handoff here"); }
  attrs(i: number, client = false): Attributes {
    const a: Attributes = {};
    this.exchanges[i]!.writeAttributes(a, client);
    return a;
  }
}

const RECORDER = String.raw`
// Records both directions of real HTTP/2 connections (Node's nghttp2) through a TCP relay.
const http2 = require("node:http2");
const net = require("node:net");
const events = [];
const t0 = process.hrtime.bigint();
const server = http2.createServer({ paddingStrategy: http2.constants.PADDING_STRATEGY_MAX, maxHeaderListSize: 1 << 20, settings: { maxHeaderListSize: 1 << 20 } });
server.on("stream", (stream, headers) => {
  const path = headers[":path"];
  let body = "";
  stream.on("data", (d) => { body += d; });
  stream.on("error", () => {});
  stream.on("end", () => {
    if (path === "/big") {
      stream.respond({ ":status": 200, "content-type": "text/plain", "x-big": "b".repeat(40000) });
      stream.end("big ok");
    } else if (path === "/push") {
      stream.pushStream({ ":path": "/pushed.css" }, (err, ps) => {
        if (!err) { ps.respond({ ":status": 200, "content-type": "text/css" }); ps.end("body{}"); }
        stream.respond({ ":status": 200, "content-type": "text/html" });
        stream.end("<html></html>");
      });
    } else if (path === "/pkg.Svc/Unary") {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "" }));
      const msg = Buffer.from("hello " + body.length);
      const pre = Buffer.alloc(5); pre.writeUInt32BE(msg.length, 1);
      stream.end(Buffer.concat([pre, msg]));
    } else if (path === "/pkg.Svc/Missing") {
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "5", "grpc-message": "not%20found" }, { endStream: true });
    } else if (path === "/slow") {
      // never answers; the client cancels
    } else {
      stream.respond({ ":status": 200, "content-type": "application/json", "x-path": path });
      stream.end(JSON.stringify({ path, got: body.length }));
    }
  });
});
server.listen(0, "127.0.0.1", () => {
  const relay = net.createServer((c) => {
    const s = net.connect(server.address().port, "127.0.0.1");
    const rec = (from) => (d) => events.push({ from, hex: d.toString("hex"), t: String(process.hrtime.bigint() - t0) });
    c.on("data", (d) => { rec("client")(d); s.write(d); });
    s.on("data", (d) => { rec("server")(d); c.write(d); });
    c.on("close", () => s.destroy()); s.on("close", () => c.destroy());
    c.on("error", () => {}); s.on("error", () => {});
  });
  relay.listen(0, "127.0.0.1", async () => {
    const client = http2.connect("http://127.0.0.1:" + relay.address().port, { paddingStrategy: http2.constants.PADDING_STRATEGY_MAX });
    client.on("error", () => {});
    const req = (headers, body) => new Promise((resolve) => {
      const r = client.request(headers, { endStream: body === undefined });
      r.on("response", () => {}); r.on("push", () => {});
      r.on("data", () => {}); r.on("end", resolve); r.on("close", resolve); r.on("error", resolve);
      if (body !== undefined) r.end(body);
    });
    client.on("stream", (ps) => { ps.on("data", () => {}); ps.on("error", () => {}); });
    await req({ ":path": "/a?x=1", "user-agent": "rec/1", "x-dup": "1" });
    await Promise.all([req({ ":path": "/m1" }), req({ ":path": "/m2" }), req({ ":method": "POST", ":path": "/post", "content-type": "application/json" }, JSON.stringify({ k: "v".repeat(100) }))]);
    await req({ ":path": "/big", "x-req-big": "q".repeat(30000) });
    await req({ ":path": "/push" });
    const m = Buffer.from("ping"); const p = Buffer.alloc(5); p.writeUInt32BE(m.length, 1);
    await req({ ":method": "POST", ":path": "/pkg.Svc/Unary", "content-type": "application/grpc", te: "trailers" }, Buffer.concat([p, m]));
    await req({ ":method": "POST", ":path": "/pkg.Svc/Missing", "content-type": "application/grpc", te: "trailers" }, Buffer.concat([p, m]));
    const slow = client.request({ ":path": "/slow" });
    slow.on("error", () => {});
    await new Promise((r) => setTimeout(r, 50));
    slow.close(http2.constants.NGHTTP2_CANCEL);
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 20; i++) await req({ ":path": "/seq/" + i, "x-request-id": "id-" + i, cookie: "c=" + (i % 3) });
    client.close();
    await new Promise((r) => setTimeout(r, 100));
    process.stdout.write(JSON.stringify(events));
    process.exit(0);
  });
});
`;

const MEM = new HpackMemory(1 << 30);
const node = spawnSync("node", ["--version"], { encoding: "utf8" });
const skip = node.status !== 0 ? "node is not installed (scripts/install-deps.sh installs nodejs)" : "";

interface Ev { from: Sender; bytes: Uint8Array; ts: bigint }
let captured: Ev[] | undefined;
function capture(): Ev[] {
  if (captured) return captured;
  const r = spawnSync("node", ["-e", RECORDER], { encoding: "utf8", timeout: 30_000, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`recorder failed: ${r.stderr}`);
  const raw = JSON.parse(r.stdout) as { from: Sender; hex: string; t: string }[];
  captured = raw.map((e) => ({ from: e.from, bytes: Uint8Array.from(Buffer.from(e.hex, "hex")), ts: BigInt(e.t) + 1n }));
  return captured;
}

type Feed = (s: Http2Session, ev: Ev, i: number) => void;
function replay(evs: Ev[], feed?: Feed, midStream = false): FakeEnv {
  const env = new FakeEnv();
  const s = new Http2Session(env, { hpackMemory: MEM, midStream });
  evs.forEach((ev, i) => (feed ? feed(s, ev, i) : s.data(ev.from, ev.bytes, ev.ts, true)));
  s.close(1n << 62n);
  return env;
}

/** Attributes of `part` agree with `full` for the same stream, except what is flagged missing. */
function agree(full: FakeEnv, part: FakeEnv): number {
  const byId = new Map<number, Attributes>();
  full.exchanges.forEach((_, i) => { const a = full.attrs(i, true); byId.set(a["ebpf.http2.stream_id"] as number, a); });
  let flagged = 0;
  part.exchanges.forEach((x, i) => {
    const a = part.attrs(i, true);
    const want = byId.get(a["ebpf.http2.stream_id"] as number);
    expect(want).toBeDefined();
    for (const [k, v] of Object.entries(a)) {
      if (k.startsWith("ebpf.") || k === "error.type" || k.includes(".body") || k.includes("message_")) continue;
      expect([a["ebpf.http2.stream_id"], k, v]).toEqual([a["ebpf.http2.stream_id"], k, want![k]!]);
    }
    if (a["ebpf.http2.headers_incomplete"]) { flagged++; expect(x.partial).toBe(true); }
  });
  return flagged;
}

describe.skipIf(skip !== "")(`Node http2 capture${skip ? ` (skipped: ${skip})` : ""}`, () => {
  test("every stream becomes one exact exchange", () => {
    const env = replay(capture());
    expect(env.errors).toEqual([]);
    const names = env.exchanges.map((x) => x.name);
    expect(names.slice(0, 11)).toEqual(["GET /a", "GET /m1", "GET /m2", "POST /post", "GET /big", "GET /push", "GET /pushed.css",
      "pkg.Svc/Unary", "pkg.Svc/Missing", "GET /slow", "GET /seq/0"]);
    expect(names.length).toBe(30);
    const at = (name: string): Attributes => env.attrs(names.indexOf(name), true);
    expect(at("GET /a")["url.query"]).toBe("x=1");
    expect(at("POST /post")["http.request.body"]).toBe(JSON.stringify({ k: "v".repeat(100) }));
    expect(at("POST /post")["http.response.body"]).toBe('{"path":"/post","got":108}');
    expect(at("GET /big")["http.request.header.x-req-big"]).toBe("q".repeat(30000));
    expect(at("GET /big")["http.response.header.x-big"]).toBe("b".repeat(40000));
    expect(at("GET /pushed.css")["ebpf.http2.pushed_by_stream"]).toBe(at("GET /push")["ebpf.http2.stream_id"]);
    expect(at("GET /pushed.css")["http.response.body"]).toBe("body{}");
    const unary = at("pkg.Svc/Unary");
    expect([unary["rpc.grpc.status_code"], unary["rpc.grpc.request.message_count"], unary["rpc.grpc.response.message_count"], unary["rpc.grpc.response.message_bytes"]]).toEqual([0, 1, 1, 7]);
    const missing = at("pkg.Svc/Missing");
    expect([missing["rpc.grpc.status_code"], missing["rpc.grpc.status_message"], missing["error.type"]]).toEqual([5, "not found", "NOT_FOUND"]);
    const slow = at("GET /slow");
    expect([slow["ebpf.http2.rst_stream"], slow["error.type"]]).toEqual([true, "CANCEL"]);
    expect(slow["http.response.status_code"]).toBeUndefined();
    for (let i = 0; i < 20; i++) expect(at(`GET /seq/${i}`)["http.request.header.x-request-id"]).toBe(`id-${i}`);
    expect(env.exchanges.filter((x) => x.partial).map((x) => x.name)).toEqual(["GET /slow"]);
  }, 40_000);

  test("split at arbitrary points: the same exchanges", () => {
    const evs = capture();
    const full = replay(evs);
    const want = full.exchanges.map((_, i) => full.attrs(i));
    for (const step of [1, 2, 3, 5, 7, 13, 64, 1000]) {
      const env = replay(evs, (s, ev) => {
        for (let p = 0; p < ev.bytes.length; p += step) s.data(ev.from, ev.bytes.subarray(p, p + step), ev.ts, p + step >= ev.bytes.length);
      });
      expect(env.exchanges.map((_, i) => env.attrs(i))).toEqual(want);
    }
  }, 40_000);

  test("attached at every chunk, and with every chunk lost: right or reported missing", () => {
    const evs = capture();
    const full = replay(evs);
    let flagged = 0;
    let seen = 0;
    for (let k = 1; k < evs.length; k++) {
      const env = replay(evs.slice(k), undefined, true);
      flagged += agree(full, env);
      seen += env.exchanges.length;
    }
    for (let k = 0; k < evs.length; k++) {
      const env = replay(evs, (s, ev, i) => (i === k ? s.gap(ev.from, ev.bytes.length, ev.ts, true) : s.data(ev.from, ev.bytes, ev.ts, true)));
      flagged += agree(full, env);
      seen += env.exchanges.length;
    }
    expect(seen).toBeGreaterThan(500);
    expect(flagged).toBeGreaterThan(0);
  }, 40_000);
});
