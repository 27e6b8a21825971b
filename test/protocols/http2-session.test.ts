/**
 * Http2Session end to end on synthetic connections: frames built with the encoder module, fed as
 * the pipeline would (per sender, in chunks, with gaps), exchanges checked attribute by attribute.
 */
import { describe, expect, test } from "bun:test";
import type { Attributes } from "../../src/spans/span.ts";
import type { Exchange, Sender, SessionEnv } from "../../src/protocols/session.ts";
import { Http2Session, type Http2SessionOptions } from "../../src/protocols/http2/session.ts";
import {
  concat, dataFrame, frame, goawayFrame, grpcMessage, headersFrames, HpackEncoder, pingFrame, PREFACE, rstFrame,
  settingsFrame, windowUpdateFrame,
} from "../../src/protocols/http2/encoder.ts";
import { HpackMemory } from "../../src/protocols/http2/hpack.ts";

/** This file's own HPACK budget (sessions left open here must not count against other files). */
const MEM = new HpackMemory(1 << 30);

export interface Ev { from: Sender; bytes: Uint8Array; ts: bigint }

export class FakeEnv implements SessionEnv {
  bodyMaxSize = 1024;
  exchanges: Exchange[] = [];
  errors: string[] = [];
  counts: Record<string, number> = {};
  keepBody(ct: string | undefined): boolean { return ct !== undefined && /json|text/.test(ct); }
  emit(x: Exchange): void { this.exchanges.push(x); }
  error(from: Sender, reason: string): void { this.errors.push(`${from}: ${reason}`); }
  count(name: string, n = 1): void { this.counts[name] = (this.counts[name] ?? 0) + n; }
  handoff(): never { throw new Error("no handoff in these tests"); }
  attrs(i: number, client = false): Attributes {
    const a: Attributes = {};
    this.exchanges[i]!.writeAttributes(a, client);
    return a;
  }
}

/** Builds both directions of a connection. */
export class Conn {
  events: Ev[] = [];
  c = new HpackEncoder();
  s = new HpackEncoder();
  private ts = 1000n;
  constructor(preface = true) {
    if (preface) this.send("client", concat([PREFACE, settingsFrame([[3, 100], [4, 65535]])]));
    if (preface) this.send("server", concat([settingsFrame([[3, 250]]), settingsFrame([], true)]));
    if (preface) this.send("client", settingsFrame([], true));
  }
  send(from: Sender, bytes: Uint8Array): this {
    this.events.push({ from, bytes, ts: (this.ts += 1000n) });
    return this;
  }
  req(sid: number, fields: [string, string][], o: { endStream?: boolean; pad?: number; priority?: boolean; maxFragment?: number } = {}): this {
    return this.send("client", headersFrames(sid, this.c.encode(fields), o));
  }
  res(sid: number, fields: [string, string][], o: { endStream?: boolean; pad?: number; maxFragment?: number } = {}): this {
    return this.send("server", headersFrames(sid, this.s.encode(fields), o));
  }
  data(from: Sender, sid: number, d: Uint8Array | string, o: { endStream?: boolean; pad?: number } = {}): this {
    return this.send(from, dataFrame(sid, d, o));
  }
  get(sid: number, path: string, extra: [string, string][] = []): this {
    this.req(sid, [[":method", "GET"], [":scheme", "http"], [":authority", "api.local:8080"], [":path", path], ["user-agent", "t/1"], ...extra], { endStream: true });
    this.res(sid, [[":status", "200"], ["content-type", "application/json"], ["x-id", String(sid)]]);
    return this.data("server", sid, `{"id":${sid}}`, { endStream: true });
  }
}

export function run(conn: Conn, opts: Http2SessionOptions = {}, env = new FakeEnv(), split?: (ev: Ev) => number[]): FakeEnv {
  const s = new Http2Session(env, { hpackMemory: MEM, ...opts });
  for (const ev of conn.events) {
    const cuts = split ? split(ev) : [];
    let p = 0;
    for (const c of [...cuts, ev.bytes.length]) {
      s.data(ev.from, ev.bytes.subarray(p, c), ev.ts, c === ev.bytes.length);
      p = c;
    }
  }
  s.close(999_999_999n);
  return env;
}

const grpcReq = (path: string): [string, string][] => [
  [":method", "POST"], [":scheme", "http"], [":path", path], [":authority", "svc:50051"], ["content-type", "application/grpc"], ["te", "trailers"],
];

describe("HTTP/2 exchanges", () => {
  test("a GET becomes one exchange with method, path, query, status, headers and body", () => {
    const conn = new Conn();
    conn.req(1, [[":method", "GET"], [":scheme", "https"], [":authority", "api.local"], [":path", "/users/7?x=1&y=2"],
      ["accept", "application/json"], ["cookie", "a=1"], ["cookie", "b=2"], ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]], { endStream: true });
    conn.res(1, [[":status", "404"], ["content-type", "application/json"]]);
    conn.data("server", 1, '{"err":', {}).data("server", 1, '"nope"}', { endStream: true });
    const env = run(conn);
    expect(env.exchanges.length).toBe(1);
    const x = env.exchanges[0]!;
    expect([x.name, x.authority, x.partial, x.responseMissing]).toEqual(["GET /users/7", "api.local", false, false]);
    expect(x.traceparent).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    expect(x.isError(false)).toBe(false);
    expect(x.isError(true)).toBe(true);
    expect(env.attrs(0)).toEqual({
      "network.protocol.version": "2",
      "http.request.method": "GET",
      "url.path": "/users/7",
      "url.query": "x=1&y=2",
      "url.scheme": "https",
      "http.response.status_code": 404,
      "http.request.header.accept": "application/json",
      "http.request.header.cookie": "a=1,b=2",
      "http.request.header.traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "http.response.header.content-type": "application/json",
      "http.request.body.size": 0,
      "http.response.body": '{"err":"nope"}',
      "http.response.body.size": 14,
      "ebpf.http2.stream_id": 1,
      "ebpf.http2.time_to_first_response_ns": 1000,
    });
    expect(env.errors).toEqual([]);
  });

  test("compressed bodies are not kept as text; a header block on stream 0 makes its table unknown", () => {
    const conn = new Conn();
    conn.req(1, [[":method", "GET"], [":scheme", "http"], [":path", "/z"], [":authority", "a"]], { endStream: true });
    conn.res(1, [[":status", "200"], ["content-type", "application/json"], ["content-encoding", "gzip"]]);
    conn.data("server", 1, "\x1f\x8b\x08binary", { endStream: true });
    conn.send("client", headersFrames(0, conn.c.encode([["x-inserted", "on stream 0"]])));
    conn.req(3, [[":method", "GET"], [":scheme", "http"], [":path", "/after"], [":authority", "a"], ["x-inserted", "on stream 0"]], { endStream: true });
    conn.res(3, [[":status", "200"]], { endStream: true });
    const env = run(conn);
    const a = env.attrs(0);
    expect(a["http.response.body"]).toBeUndefined();
    expect(a["http.response.body.size"]).toBe(10);
    expect(env.counts.Http2FramesMalformed).toBe(1);
    const b = env.attrs(1);
    expect(b["http.request.header.x-inserted"]).toBeUndefined();
    expect(b["ebpf.http2.unresolved_headers"]).toBe(2); // x-inserted, and :authority from the earlier request
  });

  test("non-standard methods become _OTHER with the original kept", () => {
    const conn = new Conn();
    conn.req(1, [[":method", "PURGE"], [":scheme", "http"], [":path", "/c"], [":authority", "a"]], { endStream: true });
    conn.res(1, [[":status", "200"]], { endStream: true });
    const env = run(conn);
    const a = env.attrs(0);
    expect([a["http.request.method"], a["http.request.method_original"], env.exchanges[0]!.name]).toEqual(["_OTHER", "PURGE", "HTTP /c"]);
  });

  test("multiplexed streams, padding, priority and CONTINUATION", () => {
    const conn = new Conn();
    const big: [string, string][] = Array.from({ length: 40 }, (_, i) => [`x-big-${i}`, "v".repeat(500)]);
    conn.req(1, [[":method", "POST"], [":scheme", "http"], [":path", "/a"], [":authority", "h"], ["content-type", "text/plain"], ...big], { pad: 17, priority: true, maxFragment: 1000 });
    conn.req(3, [[":method", "GET"], [":scheme", "http"], [":path", "/b"], [":authority", "h"]], { endStream: true, pad: 0 });
    conn.data("client", 1, "hello ", { pad: 30 });
    conn.res(3, [[":status", "200"]], { endStream: true });
    conn.data("client", 1, "world", { endStream: true, pad: 1 });
    conn.res(1, [[":status", "201"], ["content-type", "text/plain"]], { pad: 5 });
    conn.send("server", concat([pingFrame(true), windowUpdateFrame(0, 1000), windowUpdateFrame(1, 10)]));
    conn.data("server", 1, "created", { endStream: true });
    const env = run(conn);
    expect(env.exchanges.map((x) => x.name)).toEqual(["GET /b", "POST /a"]);
    const a = env.attrs(1);
    expect(a["http.request.body"]).toBe("hello world");
    expect(a["http.response.body"]).toBe("created");
    expect(a["http.request.header.x-big-39"]).toBe("v".repeat(500));
    expect(env.errors).toEqual([]);
  });

  test("every split of every chunk gives the same exchanges", () => {
    const conn = new Conn();
    conn.get(1, "/one");
    conn.req(3, grpcReq("/pkg.Svc/Call"));
    conn.data("client", 3, grpcMessage("abc"), { endStream: true, pad: 3 });
    conn.res(3, [[":status", "200"], ["content-type", "application/grpc"]]);
    conn.data("server", 3, concat([grpcMessage("x"), grpcMessage("yz")]));
    conn.res(3, [["grpc-status", "0"]], { endStream: true, maxFragment: 4 });
    const whole = run(conn);
    const want = whole.exchanges.map((_, i) => whole.attrs(i));
    expect(want.length).toBe(2);
    const total = conn.events.reduce((a, e) => a + e.bytes.length, 0);
    for (let at = 1; at < total; at++) {
      // cut the whole byte sequence once at `at` (within whichever event holds it) and also
      // into single bytes around it
      let seen = 0;
      const env = run(conn, {}, new FakeEnv(), (ev) => {
        const start = seen;
        seen += ev.bytes.length;
        if (at <= start || at >= seen) return [];
        const k = at - start;
        return [...new Set([Math.max(1, k - 1), k, Math.min(ev.bytes.length - 1, k + 1)])].filter((c) => c > 0 && c < ev.bytes.length);
      });
      expect(env.exchanges.map((_, i) => env.attrs(i))).toEqual(want);
    }
    // and every event cut into single bytes
    const bytes = run(conn, {}, new FakeEnv(), (ev) => Array.from({ length: ev.bytes.length - 1 }, (_, i) => i + 1));
    expect(bytes.exchanges.map((_, i) => bytes.attrs(i))).toEqual(want);
  });
});

describe("gRPC", () => {
  test("unary call: service, method, status, message counts", () => {
    const conn = new Conn();
    conn.req(1, grpcReq("/helloworld.Greeter/SayHello"));
    conn.data("client", 1, grpcMessage("\x0a\x05world"), { endStream: true });
    conn.res(1, [[":status", "200"], ["content-type", "application/grpc"]]);
    conn.data("server", 1, grpcMessage("\x0a\x0bHello world"));
    conn.res(1, [["grpc-status", "0"], ["grpc-message", ""]], { endStream: true });
    const env = run(conn);
    const x = env.exchanges[0]!;
    expect(x.name).toBe("helloworld.Greeter/SayHello");
    const a = env.attrs(0);
    expect(a["rpc.system"]).toBe("grpc");
    expect(a["rpc.service"]).toBe("helloworld.Greeter");
    expect(a["rpc.method"]).toBe("SayHello");
    expect(a["rpc.grpc.status_code"]).toBe(0);
    expect(a["rpc.grpc.request.message_count"]).toBe(1);
    expect(a["rpc.grpc.request.message_bytes"]).toBe(7);
    expect(a["rpc.grpc.response.message_count"]).toBe(1);
    expect(a["rpc.grpc.response.message_bytes"]).toBe(13);
    expect(a["http.request.body"]).toBeUndefined();
    expect(a["http.response.body"]).toBeUndefined();
    expect(x.isError(true)).toBe(false);
  });

  test("trailers-only error: status from the response headers; server error only for the listed codes", () => {
    for (const [code, serverErr] of [[5, false], [13, true], [2, true], [16, false]] as const) {
      const conn = new Conn();
      conn.req(1, grpcReq("/a.B/C"));
      conn.data("client", 1, grpcMessage(""), { endStream: true });
      conn.res(1, [[":status", "200"], ["content-type", "application/grpc"], ["grpc-status", String(code)], ["grpc-message", "no%20such%20thing"]], { endStream: true });
      const env = run(conn);
      const a = env.attrs(0);
      expect(a["rpc.grpc.status_code"]).toBe(code);
      expect(a["rpc.grpc.status_message"]).toBe("no such thing");
      expect(env.exchanges[0]!.isError(false)).toBe(serverErr);
      expect(env.exchanges[0]!.isError(true)).toBe(true);
    }
  });

  test("streaming both ways: counts, compressed flag, one exchange at the last END_STREAM", () => {
    const conn = new Conn();
    conn.req(1, grpcReq("/chat.Chat/Talk"));
    conn.res(1, [[":status", "200"], ["content-type", "application/grpc+proto"], ["grpc-encoding", "gzip"]]);
    for (let i = 0; i < 5; i++) {
      conn.data("client", 1, grpcMessage("m" + i));
      conn.data("server", 1, concat([grpcMessage("r" + i, true), grpcMessage("s" + i)]).subarray(0, 7));
      conn.data("server", 1, concat([grpcMessage("r" + i, true), grpcMessage("s" + i)]).subarray(7));
    }
    conn.data("client", 1, new Uint8Array(0), { endStream: true });
    expect(run(conn).exchanges.length).toBe(0 + 1); // emitted at close only if not finished: check below
    conn.res(1, [["grpc-status", "0"]], { endStream: true });
    const env = run(conn);
    expect(env.exchanges.length).toBe(1);
    const a = env.attrs(0);
    expect([a["rpc.grpc.request.message_count"], a["rpc.grpc.response.message_count"], a["rpc.grpc.response.compressed_messages"]]).toEqual([5, 10, 5]);
    expect(a["ebpf.http2.incomplete"]).toBeUndefined();
  });

  test("an unreadable trailer never yields status 0", () => {
    const conn = new Conn();
    conn.req(1, grpcReq("/a.B/C"));
    conn.data("client", 1, grpcMessage("q"), { endStream: true });
    conn.res(1, [[":status", "200"], ["content-type", "application/grpc"]]);
    conn.data("server", 1, grpcMessage("r"));
    const trailers = headersFrames(1, conn.s.encode([["grpc-status", "14"]]), { endStream: true });
    conn.send("server", trailers);
    // lose the trailer block's payload
    const env = new FakeEnv();
    const s = new Http2Session(env, { hpackMemory: MEM });
    for (const ev of conn.events) {
      if (ev.bytes === trailers) {
        s.data("server", ev.bytes.subarray(0, 10), ev.ts, false);
        s.gap("server", ev.bytes.length - 10, ev.ts, true);
      } else s.data(ev.from, ev.bytes, ev.ts, true);
    }
    expect(env.exchanges.length).toBe(1);
    const a = env.attrs(0);
    expect(a["rpc.grpc.status_code"]).toBeUndefined();
    expect(a["ebpf.http2.headers_incomplete"]).toBe(true);
    expect(env.exchanges[0]!.partial).toBe(true);
  });
});

describe("stream endings", () => {
  test("RST_STREAM ends the stream as an error; GOAWAY ends unprocessed streams", () => {
    const conn = new Conn();
    conn.req(1, grpcReq("/a.B/Slow"));
    conn.send("client", rstFrame(1, 8));
    conn.req(3, [[":method", "GET"], [":scheme", "http"], [":path", "/late"], [":authority", "h"]], { endStream: true });
    conn.req(5, [[":method", "GET"], [":scheme", "http"], [":path", "/later"], [":authority", "h"]], { endStream: true });
    conn.send("server", goawayFrame(3, 0, "bye"));
    conn.res(3, [[":status", "200"]], { endStream: true });
    const env = run(conn);
    expect(env.exchanges.map((x) => x.name)).toEqual(["a.B/Slow", "GET /later", "GET /late"]);
    const a0 = env.attrs(0);
    expect([a0["ebpf.http2.rst_stream"], a0["error.type"], env.exchanges[0]!.isError(false)]).toEqual([true, "CANCEL", true]);
    const a1 = env.attrs(1);
    expect([a1["ebpf.http2.goaway"], a1["error.type"]]).toEqual([true, "GOAWAY"]);
    expect(env.exchanges[2]!.isError(false)).toBe(false);
  });

  test("a stream reset or refused by GOAWAY ends at that frame, not at its last HEADERS", () => {
    const conn = new Conn();
    conn.req(1, [[":method", "GET"], [":scheme", "http"], [":path", "/hang"], [":authority", "h"]], { endStream: true });
    conn.req(3, [[":method", "GET"], [":scheme", "http"], [":path", "/late"], [":authority", "h"]], { endStream: true });
    conn.send("client", rstFrame(1, 8)); // CANCEL, 2 µs of fake time after stream 1's HEADERS
    conn.send("server", goawayFrame(1, 0)); // stream 3 was not processed
    const env = run(conn);
    expect(env.exchanges.map((x) => x.name)).toEqual(["GET /hang", "GET /late"]);
    const [rst, refused] = env.exchanges;
    expect(rst!.endNs - rst!.startNs).toBe(2000n);
    expect(refused!.endNs - refused!.startNs).toBe(2000n);
    expect(env.attrs(1)["error.type"]).toBe("GOAWAY");
  });

  test("server push is its own exchange linked to the pushing stream", () => {
    const conn = new Conn();
    conn.req(1, [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "h"]], { endStream: true });
    conn.send("server", headersFrames(1, conn.s.encode([[":method", "GET"], [":scheme", "http"], [":path", "/style.css"], [":authority", "h"]]), { promised: 2 }));
    conn.res(1, [[":status", "200"], ["content-type", "text/html"]]);
    conn.res(2, [[":status", "200"], ["content-type", "text/css"]]);
    conn.data("server", 2, "body{}", { endStream: true });
    conn.data("server", 1, "<html>", { endStream: true });
    const env = run(conn);
    expect(env.exchanges.map((x) => x.name)).toEqual(["GET /style.css", "GET /"]);
    expect(env.attrs(0)["ebpf.http2.pushed_by_stream"]).toBe(1);
    expect(env.attrs(0)["http.response.body"]).toBe("body{}");
  });

  test("close and max age emit open streams incomplete; more than maxStreams evicts the least recent", () => {
    const conn = new Conn();
    for (let sid = 1; sid <= 7; sid += 2) conn.req(sid, grpcReq("/s.S/Stream" + sid));
    conn.data("client", 1, grpcMessage("keepalive"));
    conn.req(9, grpcReq("/s.S/Stream9"));
    const env = run(conn, { maxStreams: 4 });
    expect(env.counts.Http2StreamsEvicted).toBe(1);
    const names = env.exchanges.map((x) => x.name);
    expect(names[0]).toBe("s.S/Stream3");
    expect(env.attrs(0)["ebpf.http2.end_reason"]).toBe("evicted");
    expect(env.exchanges.length).toBe(5);
    expect(env.attrs(4)["ebpf.http2.end_reason"]).toBe("close");

    const env2 = new FakeEnv();
    const s = new Http2Session(env2, { streamMaxAgeNs: 1_000_000n, hpackMemory: MEM });
    for (const ev of conn.events) s.data(ev.from, ev.bytes, ev.ts, true);
    s.tick(500_000n);
    expect(env2.exchanges.length).toBe(0);
    s.tick(5_000_000n);
    expect(env2.exchanges.length).toBe(5);
    expect(env2.attrs(0)["ebpf.http2.end_reason"]).toBe("max_age");
    expect(env2.exchanges[0]!.partial).toBe(true);
    // a stream emitted by age is not opened again by its later frames
    s.data("client", dataFrame(1, grpcMessage("x"), { endStream: true }), 6_000_000n, true);
    s.data("server", headersFrames(1, conn.s.encode([[":status", "200"]]), { endStream: true }), 6_000_000n, true);
    s.close(7_000_000n);
    expect(env2.exchanges.length).toBe(5);
  });
});

describe("h2c upgrade hand-off", () => {
  test("the upgrade request is stream 1 and HTTP2-Settings apply", () => {
    const conn = new Conn(false);
    conn.send("client", concat([PREFACE, settingsFrame()]));
    conn.send("server", settingsFrame());
    conn.res(1, [[":status", "200"], ["content-type", "text/plain"]]);
    conn.data("server", 1, "upgraded", { endStream: true });
    const env = run(conn, {
      handoff: {
        upgradeRequest: { method: "GET", target: "/up?q=1", headers: [["Host", "h:80"], ["Upgrade", "h2c"], ["HTTP2-Settings", "AAMAAABkAAQAAP__"]], startNs: 10n, endNs: 20n },
        settings: settingsFrame([[1, 0], [3, 100]]).subarray(9),
      },
    });
    expect(env.exchanges.length).toBe(1);
    const x = env.exchanges[0]!;
    expect([x.name, x.authority, x.startNs]).toEqual(["GET /up", "h:80", 10n]);
    const a = env.attrs(0);
    expect([a["url.query"], a["http.response.body"], a["http.request.header.upgrade"]]).toEqual(["q=1", "upgraded", "h2c"]);
    expect(env.errors).toEqual([]);
  });
});

describe("gaps and attaching mid-connection", () => {
  function busy(n: number): Conn {
    const conn = new Conn();
    for (let i = 0; i < n; i++) {
      const sid = 1 + 2 * i;
      conn.req(sid, [...grpcReq("/bank.Accounts/Get"), ["x-request-id", `req-${i}`], ["authorization", "Bearer t0k3n"]]);
      conn.data("client", sid, grpcMessage(`q${i}`), { endStream: true });
      conn.res(sid, [[":status", "200"], ["content-type", "application/grpc"], ["x-served-by", `node-${i % 3}`]]);
      conn.data("server", sid, grpcMessage(`answer ${i}`));
      conn.res(sid, [["grpc-status", String(i % 5 === 4 ? 14 : 0)], ["grpc-message", i % 5 === 4 ? "down" : ""]], { endStream: true });
    }
    return conn;
  }

  /** Every exchange's attributes must equal the full capture's, except fields reported missing. */
  function consistent(full: FakeEnv, part: FakeEnv): { checked: number; incomplete: number } {
    const byId = new Map<number, Attributes>();
    full.exchanges.forEach((_, i) => byId.set(full.attrs(i)["ebpf.http2.stream_id"] as number, full.attrs(i)));
    let incomplete = 0;
    part.exchanges.forEach((x, i) => {
      const a = part.attrs(i);
      const want = byId.get(a["ebpf.http2.stream_id"] as number)!;
      expect(want).toBeDefined();
      for (const [k, v] of Object.entries(a)) {
        if (k.startsWith("ebpf.") || k.startsWith("rpc.grpc.request.") || k.startsWith("rpc.grpc.response.") || k === "error.type") continue;
        if (k.endsWith(".body.size") || k.endsWith(".body.truncated")) continue;
        expect([a["ebpf.http2.stream_id"], k, v]).toEqual([a["ebpf.http2.stream_id"], k, want[k]!]);
      }
      if (a["ebpf.http2.headers_incomplete"]) { incomplete++; expect(x.partial).toBe(true); }
      // a status is either right or absent
      if (want["rpc.grpc.status_code"] !== a["rpc.grpc.status_code"]) expect(a["rpc.grpc.status_code"]).toBeUndefined();
    });
    return { checked: part.exchanges.length, incomplete };
  }

  test("attached at every event boundary: every value right or reported missing", () => {
    const conn = busy(12);
    const full = run(conn);
    expect(full.exchanges.length).toBe(12);
    let exchanges = 0;
    let incomplete = 0;
    for (let k = 1; k < conn.events.length; k++) {
      const tail = new Conn(false);
      tail.events = conn.events.slice(k);
      const env = run(tail, { midStream: true });
      const r = consistent(full, env);
      exchanges += r.checked;
      incomplete += r.incomplete;
    }
    expect(exchanges).toBeGreaterThan(50);
    expect(incomplete).toBeGreaterThan(0);
  });

  test("attached mid-connection with the role unknown: learned from :method / :status", () => {
    const conn = busy(6);
    const tail = new Conn(false);
    tail.events = conn.events.slice(9).map((e) => ({ ...e, from: e.from === "client" ? "server" : "client" }));
    let role: Sender | undefined;
    const env = run(tail, { midStream: true, roleKnown: false, onRole: (c) => { role = c; } });
    expect(role).toBe("server");
    expect(env.exchanges.length).toBeGreaterThan(2);
    consistent(run(conn), env);
  });

  test("a lost header block makes its direction's table unknown, never wrong", () => {
    const conn = busy(12);
    const full = run(conn);
    for (let k = 0; k < conn.events.length; k++) {
      const ev = conn.events[k]!;
      if (ev.bytes[3] !== 1) continue; // HEADERS frames only
      const env = new FakeEnv();
      const s = new Http2Session(env, { hpackMemory: MEM });
      conn.events.forEach((e, i) => {
        if (i === k) {
          s.data(e.from, e.bytes.subarray(0, 11), e.ts, false);
          s.gap(e.from, e.bytes.length - 11, e.ts, true);
        } else s.data(e.from, e.bytes, e.ts, true);
      });
      s.close(1n << 40n);
      consistent(full, env);
      expect(env.exchanges.length).toBe(12);
    }
  });

  test("trailers after a lost request header block are not taken for the request headers", () => {
    const conn = new Conn();
    const head = headersFrames(1, conn.c.encode(grpcReq("/a.B/Up")));
    conn.send("client", head);
    conn.data("client", 1, grpcMessage("m"));
    conn.req(1, [["x-checksum", "abc"]], { endStream: true });
    conn.res(1, [[":status", "200"], ["content-type", "application/grpc"], ["grpc-status", "0"]], { endStream: true });
    const env = new FakeEnv();
    const s = new Http2Session(env, { hpackMemory: MEM });
    for (const e of conn.events) {
      if (e.bytes === head) {
        s.data("client", e.bytes.subarray(0, 12), e.ts, false);
        s.gap("client", e.bytes.length - 12, e.ts, true);
      } else s.data(e.from, e.bytes, e.ts, true);
    }
    expect(env.exchanges.length).toBe(1);
    const a = env.attrs(0);
    expect(a["http.request.method"]).toBeUndefined();
    expect(a["http.request.header.x-checksum"]).toBe("abc");
    expect(a["ebpf.http2.lost_header_blocks"]).toBe(1);
    expect(env.exchanges[0]!.partial).toBe(true);
  });

  test("a gap inside DATA truncates the body and parsing goes on", () => {
    const conn = new Conn();
    conn.req(1, [[":method", "POST"], [":scheme", "http"], [":path", "/up"], [":authority", "h"], ["content-type", "application/json"]]);
    const body = dataFrame(1, '{"k":"' + "x".repeat(100) + '"}', { endStream: true });
    conn.send("client", body);
    conn.res(1, [[":status", "204"]], { endStream: true });
    conn.get(3, "/next");
    const env = new FakeEnv();
    const s = new Http2Session(env, { hpackMemory: MEM });
    for (const e of conn.events) {
      if (e.bytes === body) {
        s.data("client", e.bytes.subarray(0, 20), e.ts, false);
        s.gap("client", 50, e.ts, true);
        s.data("client", e.bytes.subarray(70), e.ts, true);
      } else s.data(e.from, e.bytes, e.ts, true);
    }
    expect(env.exchanges.length).toBe(2);
    const a = env.attrs(0);
    expect([a["http.request.body.size"], a["http.request.body.truncated"], a["ebpf.http2.gap"]]).toEqual([108, true, true]);
    expect(env.attrs(1)["http.response.body"]).toBe('{"id":3}');
    expect(env.exchanges[1]!.partial).toBe(false);
  });

  test("a syscall cut by the capture cap: the next syscall is parsed again at once", () => {
    const conn = new Conn();
    const big = concat([
      headersFrames(1, conn.c.encode([[":method", "POST"], [":scheme", "http"], [":path", "/up"], [":authority", "h"], ["content-type", "application/json"]])),
      dataFrame(1, "x".repeat(5000)), dataFrame(1, "y".repeat(100), { endStream: true }),
    ]);
    const env = new FakeEnv();
    const s = new Http2Session(env, { hpackMemory: MEM });
    for (const e of conn.events) s.data(e.from, e.bytes, e.ts, true);
    s.data("client", big.subarray(0, 1000), 5n, true);
    s.gap("client", big.length - 1000, 5n, false);
    s.data("client", headersFrames(3, conn.c.encode([[":method", "GET"], [":scheme", "http"], [":path", "/next"], [":authority", "h"]]), { endStream: true }), 6n, true);
    s.data("server", headersFrames(3, conn.s.encode([[":status", "200"]]), { endStream: true }), 7n, true);
    s.close(8n);
    expect(env.exchanges.map((x) => x.name)).toEqual(["GET /next", "POST /up"]);
    expect(env.counts.Http2ResyncSkippedBytes).toBe(big.length - 1000);
    const a = env.attrs(0);
    expect(a["ebpf.http2.unresolved_headers"]).toBe(1); // :authority was indexed by the first request
    expect(env.attrs(1)["ebpf.http2.end_reason"]).toBe("close");
  });

  test("a gap over frame headers resynchronises at a syscall boundary on a frame chain", () => {
    const conn = busy(8);
    const full = run(conn);
    const env = new FakeEnv();
    const s = new Http2Session(env, { hpackMemory: MEM });
    // lose client events 10..13 entirely, and cut event 14 in the middle
    conn.events.forEach((e, i) => {
      if (i >= 10 && i < 14 && e.from === "client") s.gap("client", e.bytes.length, e.ts, true);
      else s.data(e.from, e.bytes, e.ts, true);
    });
    s.close(1n << 40n);
    expect(env.counts.Http2SyncLost).toBeGreaterThan(0);
    expect(env.counts.Http2Resyncs).toBeGreaterThan(0);
    const r = consistent(full, env);
    expect(r.checked).toBeGreaterThan(4);
  });
});

describe("hostile input: counted, never thrown, memory bounded", () => {
  function feed(chunks: Uint8Array[], opts: Http2SessionOptions = {}): FakeEnv {
    const env = new FakeEnv();
    const s = new Http2Session(env, opts);
    for (const c of chunks) s.data("client", c, 1n, true);
    s.close(2n);
    return env;
  }

  test("absurd lengths, unknown types, bad flags, CONTINUATION without HEADERS", () => {
    const env = feed([
      PREFACE,
      Uint8Array.of(0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 1, 2, 3), // 16 MiB DATA announced
    ]);
    expect(env.counts.Http2FrameTooLarge).toBe(1);
    const env2 = feed([PREFACE, frame(9, 4, 1, Uint8Array.of(0x82)), frame(0xee, 0xff, 0, new Uint8Array(10)),
      frame(1, 0x08, 1, Uint8Array.of(200)), frame(4, 0, 0, new Uint8Array(5)), frame(3, 0, 1, new Uint8Array(2)),
      frame(0, 0, 0, new Uint8Array(3))]);
    expect(env2.counts.Http2FramesMalformed).toBeGreaterThanOrEqual(4);
  });

  test("Huffman garbage, bad integers, index 0, table size abuse", () => {
    const blocks = [
      Uint8Array.of(0x82, 0x84, 0x86, 0x41, 0x84, 0xff, 0xff, 0xff, 0xff),    // Huffman EOS in :authority
      Uint8Array.of(0x80),                                                  // index 0
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),              // integer overflow
      Uint8Array.of(0x3f, 0xe1, 0xff, 0xff, 0x0f),                          // size update to 4 GiB-ish
      Uint8Array.of(0x82, 0x3f, 0xe1, 0x1f),                                // size update after a field
      Uint8Array.of(0x40, 0x7f, 0xff, 0xff, 0xff, 0x0f),                    // string length past the block
    ];
    let sid = 1;
    const env = feed([PREFACE, ...blocks.map((b) => headersFrames((sid += 2), b, { endStream: true }))]);
    expect(env.counts.Http2HuffmanErrors).toBe(1);
    expect(env.counts.Http2HpackErrors).toBeGreaterThanOrEqual(4);
  });

  test("random bytes and random frames never throw and hold little memory", () => {
    let seed = 42;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    const mem = new HpackMemory(1 << 20);
    for (let round = 0; round < 300; round++) {
      const env = new FakeEnv();
      const s = new Http2Session(env, { hpackMemory: mem, midStream: round % 3 === 0 });
      if (round % 3 !== 0) s.data("client", PREFACE, 1n, true);
      for (let k = 0; k < 30; k++) {
        const len = rnd() % 64;
        const payload = Uint8Array.from({ length: len }, rnd);
        const f = round % 2 ? frame(rnd() % 11, rnd(), rnd() % 8, payload) : payload;
        s.data(rnd() & 1 ? "client" : "server", f, BigInt(k), rnd() % 4 !== 0);
        if (rnd() % 7 === 0) s.gap("server", rnd(), BigInt(k), true);
        if (rnd() % 11 === 0) s.tick(BigInt(k) * 10n ** 12n);
      }
      s.close(100n);
      expect(mem.used).toBe(0);
    }
  });

  test("bodies of all open streams together stay within the connection's body budget", () => {
    const conn = new Conn();
    for (let sid = 1; sid <= 19; sid += 2) {
      conn.req(sid, [[":method", "POST"], [":scheme", "http"], [":path", "/u"], [":authority", "a"], ["content-type", "application/json"]]);
      conn.data("client", sid, "x".repeat(800));
    }
    for (let sid = 1; sid <= 19; sid += 2) conn.data("client", sid, "", { endStream: true }).res(sid, [[":status", "200"]], { endStream: true });
    const env = run(conn, { maxBodyBytes: 3000 });
    const kept = env.exchanges.map((_, i) => String(env.attrs(i)["http.request.body"] ?? "").length);
    expect(kept).toEqual([800, 800, 800, 600, 0, 0, 0, 0, 0, 0]);
    expect(env.attrs(3)["http.request.body.truncated"]).toBe(true);
    expect(env.attrs(9)["http.request.body.size"]).toBe(800);
    expect(env.counts.Http2BodyBudgetExceeded).toBe(7);
    // budget comes back when streams end
    const conn2 = new Conn();
    for (let sid = 1; sid <= 19; sid += 2) {
      conn2.req(sid, [[":method", "POST"], [":scheme", "http"], [":path", "/u"], [":authority", "a"], ["content-type", "application/json"]]);
      conn2.data("client", sid, "x".repeat(800), { endStream: true }).res(sid, [[":status", "200"]], { endStream: true });
    }
    const env2 = run(conn2, { maxBodyBytes: 3000 });
    expect(env2.exchanges.every((_, i) => env2.attrs(i)["http.request.body"] === "x".repeat(800))).toBe(true);
  });

  test("a flood of table insertions stays within the table cap", () => {
    const enc = new HpackEncoder();
    enc.setMaxSize(1 << 20);
    const mem = new HpackMemory(1 << 30);
    const env = new FakeEnv();
    const s = new Http2Session(env, { hpackMemory: mem });
    s.data("client", PREFACE, 1n, true);
    for (let i = 0; i < 200; i++) {
      const block = enc.encode([[":method", "GET"], [":path", "/"], [`x-${i}`, "y".repeat(3000)]]);
      s.data("client", headersFrames(1 + 2 * i, block, { endStream: true }), 2n, true);
    }
    expect(mem.used).toBeLessThanOrEqual(65536);
    expect(env.exchanges.length).toBe(0);
    s.close(3n);
    expect(env.exchanges.length).toBe(200);
    expect(mem.used).toBe(0);
    // entries evicted only by our cap are unknown, never wrong
    for (let i = 0; i < env.exchanges.length; i++) {
      const a = env.attrs(i);
      const v = a[`http.request.header.x-${i}`];
      if (v !== undefined) expect(v).toBe("y".repeat(3000));
    }
  });
});
