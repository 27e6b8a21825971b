import { describe, expect, test } from "bun:test";
import { Pipeline, type PipelineOptions } from "../../src/agent/pipeline.ts";
import { allAttributes, attr, type Span, type SpanSink } from "../../src/spans/span.ts";
import { DIR_RECV, DIR_SEND, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, MODE_BOTH, MODE_INGRESS, LAYER_TLS, DATA_FLAG_TLS_INFERRED } from "../../src/kernel/event-layout.ts";
import { TlsCoverageBook } from "../../src/kernel/tls/coverage.ts";
import { connRecord, dataRecord, execRecord, exitRecord } from "../support/records.ts";
import { Http2Session } from "../../src/protocols/http2/session.ts";
import { concat, headersFrames, HpackEncoder, PREFACE, settingsFrame } from "../../src/protocols/http2/encoder.ts";
import { clockNs } from "../../src/kernel/libbpf-ffi.ts";
import { OverheadBudget } from "../../src/agent/budget.ts";

class Collect implements SpanSink {
  spans: Span[] = [];
  export(s: Span) { this.spans.push(s); }
  async shutdown() {}
  stats() { return {}; }
}

function pipeline(over: Partial<PipelineOptions> = {}) {
  const sink = new Collect();
  const p = new Pipeline({
    bodyMaxSize: 1024,
    allowedContentTypes: ["json", "text"],
    span: { hostName: "h", serviceName: "", environment: "test", customAttributes: { team: "t" }, toWallNs: (n) => n + 1_000_000_000_000_000_000n },
    modeOf: () => MODE_BOTH,
    classify: () => ROLE_SERVER,
    ...over,
  }, sink);
  return { p, sink };
}

const REQ = "POST /api/items?id=3 HTTP/1.1\r\nHost: shop:8080\r\nUser-Agent: t/1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":123}";
const RES = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"ok\":1}";

describe("pipeline", () => {
  test("server exchange becomes a span with the documented attributes", () => {
    const { p, sink } = pipeline();
    p.handle(execRecord(10, "/usr/bin/node", ["node", "server.js"]));
    p.handle(connRecord("open", { connId: 1, tgid: 10, localPort: 8080, remotePort: 40000 }));
    p.handle(dataRecord(1, 10, DIR_RECV, 0, REQ, { tsNs: 100 }));
    p.handle(dataRecord(1, 10, DIR_SEND, 0, RES, { tsNs: 300 }));
    expect(sink.spans.length).toBe(1);
    const s = sink.spans[0]!;
    expect(s.kind).toBe("server");
    expect(s.name).toBe("POST /api/items");
    expect(s.endTimeUnixNano - s.startTimeUnixNano).toBe(200n);
    expect(allAttributes(s)).toMatchObject({
      "http.request.method": "POST", "url.path": "/api/items", "url.query": "id=3", "url.scheme": "http",
      "http.response.status_code": 201, "network.protocol.version": "1.1", "server.address": "shop", "server.port": 8080,
      "client.address": "127.0.0.1", "client.port": 40000, "network.peer.address": "127.0.0.1", "network.peer.port": 40000,
      "user_agent.original": "t/1", "http.request.header.content-type": "application/json",
      "http.request.body": "{\"a\":123}", "http.response.body": "{\"ok\":1}", "http.request.body.size": 9, "http.response.body.size": 8,
      "process.pid": 10, "process.executable.name": "node", "process.executable.path": "/usr/bin/node", "process.command_line": "node server.js",
      "traceableai.module.name": "ebpf", team: "t",
    });
    expect(s.resource).toMatchObject({ "service.name": "node", "host.name": "h", "deployment.environment": "test" });
    expect(p.counters.TotalRequestsParsed).toBe(1);
  });

  test("client connection: sent bytes are the request", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 2, tgid: 11, role: ROLE_CLIENT, localPort: 5000, remotePort: 80 }));
    p.handle(dataRecord(2, 11, DIR_SEND, 0, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    p.handle(dataRecord(2, 11, DIR_RECV, 0, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
    expect(sink.spans[0]).toMatchObject({ kind: "client", error: true });
    expect(sink.spans[0]!.attributes["server.port"]).toBe(80);
  });

  test("lost bytes inside a body make the span partial; cap cuts only truncate", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 3, tgid: 12 }));
    const head = "POST /u HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n";
    p.handle(dataRecord(3, 12, DIR_RECV, 0, head + "x".repeat(10), { skipped: 90 })); // cap: 90 bytes not copied
    p.handle(dataRecord(3, 12, DIR_SEND, 0, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    expect(sink.spans.length).toBe(1);
    expect(sink.spans[0]!.attributes["http.request.body.size"]).toBe(100);
    expect(sink.spans[0]!.attributes["http.request.body.truncated"]).toBe(true);
    expect(sink.spans[0]!.attributes["ebpf.partial"]).toBeUndefined();

    const hl = head.length;
    p.handle(dataRecord(3, 12, DIR_RECV, hl + 100, head + "y".repeat(20))); // next request
    p.handle(dataRecord(3, 12, DIR_RECV, 2 * hl + 100 + 50, "z".repeat(50))); // 30 bytes lost before this
    p.handle(dataRecord(3, 12, DIR_SEND, 40, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    expect(p.counters.LostBytes).toBe(30);
    expect(sink.spans.length).toBe(2);
    expect(sink.spans[1]!.attributes["ebpf.partial"]).toBe(true);
  });

  test("overlapping bytes are not fed twice", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 4, tgid: 13 }));
    const req = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    p.handle(dataRecord(4, 13, DIR_RECV, 0, req));
    p.handle(dataRecord(4, 13, DIR_RECV, 0, req));
    p.handle(dataRecord(4, 13, DIR_SEND, 0, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    expect(sink.spans.length).toBe(1);
    expect(p.counters.ReqParsingErrors).toBe(0);
  });

  test("close reveals lost tail bytes and flushes a close-delimited response", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 5, tgid: 14 }));
    const req = "GET / HTTP/1.0\r\n\r\n";
    const res = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello";
    p.handle(dataRecord(5, 14, DIR_RECV, 0, req));
    p.handle(dataRecord(5, 14, DIR_SEND, 0, res));
    expect(sink.spans.length).toBe(0);
    p.handle(connRecord("close", { connId: 5, tgid: 14 }, 9, res.length, req.length));
    expect(sink.spans.length).toBe(1);
    expect(sink.spans[0]!.attributes["http.response.body"]).toBe("hello");
    expect(p.conns.size).toBe(0);
  });

  test("pre-existing sockets are classified and filtered by mode", () => {
    const ignored: number[] = [];
    const { p, sink } = pipeline({ classify: () => ROLE_CLIENT, modeOf: () => MODE_INGRESS, ignore: (_t, fd) => ignored.push(fd) });
    p.handle(connRecord("open", { connId: 6, tgid: 15, role: ROLE_UNKNOWN, fd: 9 }));
    p.handle(dataRecord(6, 15, DIR_SEND, 0, "GET / HTTP/1.1\r\n\r\n"));
    expect(ignored).toEqual([9]);
    expect(p.counters.FilteredByMode).toBe(1);
    expect(p.counters.TotalEventsDroppedAtParsing).toBe(1);
    expect(sink.spans.length).toBe(0);
  });

  test("garbage is counted, never thrown", () => {
    const { p } = pipeline();
    p.handle(new Uint8Array([1, 2, 3]));
    p.handle(connRecord("open", { connId: 7, tgid: 16 }));
    p.handle(dataRecord(7, 16, DIR_RECV, 0, Uint8Array.of(0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5)));
    expect(p.counters.DecodeErrors).toBe(1);
    expect(p.counters.ReqParsingErrors).toBe(0); // a TLS record: not a parse error, a TLS connection
    expect(p.counters.TlsConnections).toBe(1);
  });

  test("traceparent joins the caller's trace", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 8, tgid: 17 }));
    p.handle(dataRecord(8, 17, DIR_RECV, 0, "GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"));
    p.handle(dataRecord(8, 17, DIR_SEND, 0, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    expect(sink.spans[0]).toMatchObject({ traceId: "0af7651916cd43dd8448eb211c80319c", parentSpanId: "b7ad6b7169203331" });
    expect(sink.spans[0]!.spanId).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe("TLS coverage from the event stream", () => {
  test("the report hears of a connection's plaintext once per correlation (inferred, then exact), not per record", () => {
    const book = new TlsCoverageBook(true);
    const calls: string[] = [];
    const { p, sink } = pipeline({
      tls: {
        library: () => "openssl",
        flagged: (tgid, comm, id) => void book.tlsConnection(tgid, comm, BigInt(id)),
        plaintext: (tgid, comm, id, inferred) => {
          calls.push(`${id}:${inferred ? "inferred" : "exact"}`);
          book.plaintext(tgid, comm, BigInt(id), inferred);
        },
        closed: (tgid, id) => void book.closed(tgid, BigInt(id)),
        mapped: () => {},
      },
    });
    p.handle(connRecord("open", { connId: 21, tgid: 30, localPort: 8443, remotePort: 40001 }));
    p.handle(connRecord("open", { connId: 22, tgid: 30, localPort: 8443, remotePort: 40002 }));
    const req = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const res = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const tls = (conn: number, dir: number, pos: number, text: string, inferred = false) =>
      p.handle(dataRecord(conn, 30, dir, pos, text, { layer: LAYER_TLS, flags: inferred ? DATA_FLAG_TLS_INFERRED : 0 }));
    // connection 21: three exchanges, the first request inferred, everything after exact
    tls(21, DIR_RECV, 0, req, true);
    for (let i = 0; i < 3; i++) {
      if (i > 0) tls(21, DIR_RECV, i * req.length, req);
      tls(21, DIR_SEND, i * res.length, res);
    }
    // connection 22: exact only
    tls(22, DIR_RECV, 0, req);
    tls(22, DIR_SEND, 0, res);
    expect(sink.spans.length).toBe(4);
    expect(calls).toEqual(["21:inferred", "21:exact", "22:exact"]);
    expect(book.snapshot()[0]!.connections).toEqual({ tls: 2, decrypted: 2, inferred: 0, notDecrypted: 0 });
    expect(sink.spans.map((s) => attr(s, "ebpf.tls.correlation"))).toEqual(["exact", "exact", "exact", "exact"]);
  });
});

describe("protocol seam", () => {
  test("an odd method becomes a span: http.request.method _OTHER, the original kept", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 20, tgid: 30 }));
    p.handle(dataRecord(20, 30, DIR_RECV, 0, "MOOO /x HTTP/1.1\r\nHost: a\r\n\r\n"));
    p.handle(dataRecord(20, 30, DIR_SEND, 0, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    expect(sink.spans.length).toBe(1);
    expect(sink.spans[0]!.name).toBe("HTTP /x");
    expect(sink.spans[0]!.attributes).toMatchObject({ "http.request.method": "_OTHER", "http.request.method_original": "MOOO", "url.path": "/x" });
  });

  test("a connection that speaks no supported protocol stops costing: the kernel is told, it is counted and dropped", () => {
    const ignored: number[] = [];
    const { p, sink } = pipeline({ ignore: (_t, fd) => ignored.push(fd) });
    p.handle(connRecord("open", { connId: 21, tgid: 31, fd: 9 }));
    p.handle(dataRecord(21, 31, DIR_RECV, 0, "*1\r\n$4\r\nPING\r\n")); // Redis
    p.handle(dataRecord(21, 31, DIR_RECV, 14, "GET / HTTP/1.1\r\n\r\n"));
    expect(ignored).toEqual([9]);
    expect(p.counters.UnsupportedProtocolConnections).toBe(1);
    expect(p.conns.get(21)).toBeUndefined();
    expect(sink.spans.length).toBe(0);
    expect(p.counters.ReqParsingErrors).toBe(0);
  });

  test("a request line split over two writes is detected once whole", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 22, tgid: 32 }));
    p.handle(dataRecord(22, 32, DIR_RECV, 0, "GE"));
    p.handle(dataRecord(22, 32, DIR_RECV, 2, "T /split HTTP/1.1\r\n\r\n"));
    p.handle(dataRecord(22, 32, DIR_SEND, 0, "HTTP/1.1 204 No Content\r\n\r\n"));
    expect(sink.spans.map((s) => s.name)).toEqual(["GET /split"]);
  });

  test("a connection first seen mid-message waits for a syscall that starts a request", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 23, tgid: 33, syscall: 16 }));
    p.handle(dataRecord(23, 33, DIR_RECV, 100, "rest of some body}"));
    p.handle(dataRecord(23, 33, DIR_SEND, 50, "tail of a response"));
    p.handle(dataRecord(23, 33, DIR_RECV, 118, "GET /next HTTP/1.1\r\n\r\n"));
    p.handle(dataRecord(23, 33, DIR_SEND, 68, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    expect(sink.spans.map((s) => [s.name, s.attributes["http.response.status_code"]])).toEqual([["GET /next", 200]]);
    expect(p.counters.UnsupportedProtocolConnections).toBe(0);
  });

  test("HTTP/1 Upgrade: h2c + 101 hands the connection to HTTP/2 with the upgrade request and the bytes after the switch", () => {
    const seen: { handoff?: unknown; bytes: string[] } = { bytes: [] };
    const { p, sink } = pipeline({
      protocols: {
        http2: (_env, init) => {
          seen.handoff = init.handoff;
          return { protocol: "http2", data: (from, b) => seen.bytes.push(`${from}:${Buffer.from(b).toString("latin1")}`), gap() {}, close() {} };
        },
      },
    });
    p.handle(connRecord("open", { connId: 24, tgid: 34 }));
    p.handle(dataRecord(24, 34, DIR_RECV, 0, "GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"));
    p.handle(dataRecord(24, 34, DIR_SEND, 0, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nSERVERFRAMES"));
    p.handle(dataRecord(24, 34, DIR_RECV, 132, "PRI * HTTP/2.0"));
    expect(sink.spans.length).toBe(0); // the upgrade request is HTTP/2's stream 1, not an HTTP/1 span
    expect(seen.handoff).toMatchObject({ upgradeRequest: { method: "GET", target: "/up" } });
    expect([...(seen.handoff as { settings: Uint8Array }).settings]).toEqual([0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 255, 255]);
    expect(seen.bytes).toEqual(["server:SERVERFRAMES", "client:PRI * HTTP/2.0"]);
  });

  test("sweep ages HTTP/2 streams on the kernel's clock: a stream older than stream_max_age is emitted", () => {
    const { p, sink } = pipeline({ protocols: { http2: (env, init) => new Http2Session(env, { midStream: init.midstream, streamMaxAgeNs: 1_000_000_000n }) } });
    const fiveSecondsAgo = Number(clockNs(1) - 5_000_000_000n); // event timestamps are CLOCK_MONOTONIC
    const req = headersFrames(1, new HpackEncoder().encode([[":method", "GET"], [":scheme", "http"], [":path", "/slow"], [":authority", "a"]]), { endStream: true });
    p.handle(connRecord("open", { connId: 26, tgid: 36 }));
    p.handle(dataRecord(26, 36, DIR_RECV, 0, concat([PREFACE, settingsFrame(), req]), { tsNs: fiveSecondsAgo }));
    expect(sink.spans.length).toBe(0);
    p.sweep();
    expect(sink.spans.map((s) => [s.name, s.attributes["ebpf.http2.end_reason"]])).toEqual([["GET /slow", "max_age"]]);
  });

  test("a WebSocket upgrade stays an HTTP/1 span and parsing stops", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 25, tgid: 35 }));
    p.handle(dataRecord(25, 35, DIR_RECV, 0, "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
    p.handle(dataRecord(25, 35, DIR_SEND, 0, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"));
    expect(sink.spans.map((s) => [s.name, s.attributes["http.response.status_code"]])).toEqual([["GET /ws", 101]]);
    expect(p.counters.ResParsingErrors).toBe(0);
  });
});

describe("connections dropped without a close event", () => {
  test("an evicted connection's waiting request is emitted, flagged, not lost", () => {
    const { p, sink } = pipeline({ maxConnections: 1 });
    p.handle(connRecord("open", { connId: 40, tgid: 50 }));
    p.handle(dataRecord(40, 50, DIR_RECV, 0, "GET /waiting HTTP/1.1\r\n\r\n"));
    p.handle(connRecord("open", { connId: 41, tgid: 50 }));
    expect(sink.spans.map((s) => [s.name, s.attributes["ebpf.response.missing"], s.attributes["ebpf.partial"]])).toEqual([["GET /waiting", true, true]]);
    expect(p.counters.ConnectionsEndedWithoutClose).toBe(1);
  });
});

describe("API-security signals", () => {
  test("a malformed request that has a method and target becomes a flagged span, paired with the 400", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 80, tgid: 90 }));
    p.handle(dataRecord(80, 90, DIR_RECV, 0, "POST /admin?x=1 HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"));
    p.handle(dataRecord(80, 90, DIR_SEND, 0, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
    expect(sink.spans.length).toBe(1);
    const a = sink.spans[0]!.attributes;
    expect(a).toMatchObject({ "http.request.method": "POST", "url.path": "/admin", "url.query": "x=1", "http.response.status_code": 400, "ebpf.partial": true, "http.request.header.host": "a" });
    expect(typeof a["ebpf.http.malformed"]).toBe("string");
    expect(p.counters.ReqParsingErrors).toBe(1);
  });

  test("a gzip response body is decoded before it is kept; the wire size stays", () => {
    const { p, sink } = pipeline();
    const json = JSON.stringify({ items: Array.from({ length: 20 }, (_, i) => ({ id: i })) });
    const gz = Bun.gzipSync(new TextEncoder().encode(json));
    const head = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${gz.length}\r\n\r\n`;
    const res = new Uint8Array([...new TextEncoder().encode(head), ...gz]);
    p.handle(connRecord("open", { connId: 81, tgid: 91 }));
    p.handle(dataRecord(81, 91, DIR_RECV, 0, "GET /items HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"));
    p.handle(dataRecord(81, 91, DIR_SEND, 0, res));
    const a = sink.spans[0]!.attributes;
    expect(a["http.response.body"]).toBe(json);
    expect(a["http.response.body.size"]).toBe(gz.length);
    expect(a["http.response.header.content-encoding"]).toBe("gzip");
  });

  test("a body that does not decode in its declared coding is not kept as text", () => {
    const { p, sink } = pipeline();
    const head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\n\r\n";
    p.handle(connRecord("open", { connId: 82, tgid: 92 }));
    p.handle(dataRecord(82, 92, DIR_RECV, 0, "GET /x HTTP/1.1\r\n\r\n"));
    p.handle(dataRecord(82, 92, DIR_SEND, 0, head + "not gzip!!"));
    const a = sink.spans[0]!.attributes;
    expect(a["http.response.body"]).toBeUndefined();
    expect(typeof a["http.response.body.decode_error"]).toBe("string");
  });
});

describe("process exit", () => {
  test("a Unix-socket connection of an exited process ends: its waiting request is emitted flagged", () => {
    const { p, sink } = pipeline();
    p.handle(connRecord("open", { connId: 60, tgid: 70, family: 1 }));
    p.handle(dataRecord(60, 70, DIR_RECV, 0, "GET /unix HTTP/1.1\r\n\r\n"));
    p.handle(exitRecord(70));
    expect(sink.spans.map((s) => [s.name, s.attributes["ebpf.response.missing"]])).toEqual([["GET /unix", true]]);
    expect(p.conns.get(60)).toBeUndefined();
  });
});

describe("unix sockets of unknown origin", () => {
  test("a first-seen Unix socket (socketpair, inherited stdio) is left alone", () => {
    const ignored: number[] = [];
    const { p, sink } = pipeline({ ignore: (_t, fd) => ignored.push(fd) });
    p.handle(connRecord("open", { connId: 9, tgid: 18, role: ROLE_UNKNOWN, family: 1, fd: 1 }));
    p.handle(dataRecord(9, 18, DIR_SEND, 0, "hello from stdout\n"));
    expect(ignored).toEqual([1]);
    expect(p.counters.IgnoredSockets).toBe(1);
    expect(p.counters.ReqParsingErrors + p.counters.ResParsingErrors).toBe(0);
    expect(sink.spans.length).toBe(0);
  });
});

describe("shedding open connections", () => {
  test("when the ratio falls, the share of open connections kept follows it exactly, per process, the kept ones carry that share, and the shed ones stop", () => {
    const budget = new OverheadBudget({ cpuPercent: 10, memoryMb: 0 });
    const ignored: number[] = [];
    const { p, sink } = pipeline({ budget, ignore: (_t, _fd, id) => { ignored.push(id); } });
    // 16 keep-alive connections of process 10 and 4 of process 11, all admitted at ratio 1
    for (let id = 1; id <= 20; id++) p.handle(connRecord("open", { connId: id, tgid: id <= 16 ? 10 : 11, localPort: 8080, remotePort: 40000 + id }));
    budget.sample({ cpuPercent: 40, rssMb: 0 }); // 4x over: ratio 0.225
    expect(budget.ratio).toBeCloseTo(0.225, 5);
    p.applySampling();
    // n·ratio rounded: 16 · 0.225 = 3.6 → 4 of process 10, 4 · 0.225 = 0.9 → 1 of process 11
    expect(p.counters.ShedConnections).toBe(20 - 5);
    expect(ignored.length).toBe(15);
    expect(budget.total.connections).toBe(15);
    const kept = [...Array(20)].map((_, i) => i + 1).filter((id) => !ignored.includes(id));
    expect(kept.filter((id) => id <= 16).length).toBe(4);
    expect(kept.filter((id) => id > 16).length).toBe(1);
    // a kept connection's spans carry the ratio it now stands for; a shed one's bytes make no span
    for (const id of [kept[0]!, ignored[0]!]) {
      p.handle(dataRecord(id, id <= 16 ? 10 : 11, DIR_RECV, 0, REQ, { tsNs: 100 }));
      p.handle(dataRecord(id, id <= 16 ? 10 : 11, DIR_SEND, 0, RES, { tsNs: 300 }));
    }
    expect(sink.spans.length).toBe(1);
    // the share actually kept, 4 of 16, not the 0.225 asked for: 1/ratio is what each span stands for
    expect(attr(sink.spans[0]!, "ebpf.sampling.ratio")).toBeCloseTo(0.25, 10);
    // the ratio falls again: of the 4 kept at 0.225, 4 · (0.05 / 0.225) = 0.9 → 1 stays
    budget.sample({ cpuPercent: 40, rssMb: 0 });
    p.applySampling();
    expect(p.counters.ShedConnections).toBe(15 + 3 + 1);
    // the one of process 10 still captured (of 16) stands for all 16
    const last = kept.filter((id) => id <= 16 && !ignored.includes(id));
    expect(last.length).toBe(1);
    p.handle(dataRecord(last[0]!, 10, DIR_RECV, 0, REQ, { tsNs: 500 }));
    p.handle(dataRecord(last[0]!, 10, DIR_SEND, 0, RES, { tsNs: 600 }));
    expect(attr(sink.spans.at(-1)!, "ebpf.sampling.ratio")).toBeCloseTo(1 / 16, 10);
  });
});

describe("re-admitting shed connections", () => {
  test("as the ratio recovers, shed connections still open are captured again from the kernel's positions, and all of them at 1", () => {
    const budget = new OverheadBudget({ cpuPercent: 10, memoryMb: 0 });
    const readmitted: number[] = [];
    const everShed = new Set<number>();
    // the kernel's positions of a shed connection: they stood still while it was ignored
    const kernelPos = (id: number) => [1000 * id, 2000 * id, 0, 0];
    const { p, sink } = pipeline({
      budget,
      ignore: (_t, _fd, id) => { everShed.add(id); },
      readmit: (_tgid, _fd, id) => {
        readmitted.push(id);
        return id === 15 ? undefined : kernelPos(id); // 15 closed while it was shed
      },
    });
    for (let id = 1; id <= 16; id++) p.handle(connRecord("open", { connId: id, tgid: 10, localPort: 8080, remotePort: 40000 + id }));
    budget.sample({ cpuPercent: 40, rssMb: 0 }); // ratio 0.225
    p.applySampling();
    expect(p.counters.ShedConnections).toBe(12); // 16 · 0.225 = 3.6 → 4 stay
    p.readmit();
    expect(readmitted).toEqual([]); // the ratio has not risen
    budget.sample({ cpuPercent: 1, rssMb: 0 }); // 0.225 · 1.25 + 0.01 = 0.29125
    p.readmit();
    // (0.29125 − 0.225) / (1 − 0.225) of the 12 shed: 1.03 → 1 comes back
    expect(readmitted.length).toBe(1);
    const back = readmitted[0]!;
    // its next exchange, at the kernel's positions, becomes a span carrying the ratio now in force
    p.handle(dataRecord(back, 10, DIR_RECV, 1000 * back, REQ, { tsNs: 100 }));
    p.handle(dataRecord(back, 10, DIR_SEND, 2000 * back, RES, { tsNs: 300 }));
    expect(sink.spans.length).toBe(1);
    expect(attr(sink.spans[0]!, "ebpf.sampling.ratio")).toBeCloseTo(0.29125, 5);
    expect(p.counters.LostBytes).toBe(0);
    expect(p.counters.ReadmittedConnections).toBe(1);
    // one kept all along (at the 4 of 16 kept, 0.25) carries the ratio now in force once the
    // connections follow it again
    p.applySampling();
    p.handle(dataRecord(3, 10, DIR_RECV, 0, REQ, { tsNs: 400 }));
    p.handle(dataRecord(3, 10, DIR_SEND, 0, RES, { tsNs: 450 }));
    expect(sink.spans.length).toBe(2);
    expect(attr(sink.spans[1]!, "ebpf.sampling.ratio")).toBeCloseTo(0.29125, 5);
    // a fall below the ratio they were shed at counts from the lower ratio: 0.29125 → 0.0655…
    // (4.4x over) sheds more, and the way back up to 0.29125 brings back the share of all of them
    budget.sample({ cpuPercent: 44, rssMb: 0 });
    p.applySampling();
    p.readmit();
    const shedNow = p.counters.ShedConnections - p.counters.ReadmittedConnections;
    const before = readmitted.length;
    budget.sample({ cpuPercent: 1, rssMb: 0 });
    p.readmit();
    const share = (budget.ratio - 0.0655) / (1 - 0.0655);
    expect(Math.abs(readmitted.length - before - shedNow * share)).toBeLessThanOrEqual(1.5);
    // back at 1: every shed connection still open comes back (15 is gone: asked once, then forgotten)
    for (let s = 0; s < 10 && budget.ratio < 1; s++) { budget.sample({ cpuPercent: 1, rssMb: 0 }); p.readmit(); }
    expect(budget.ratio).toBe(1);
    // every connection ever shed was asked for once it was shed last, 15 only once (then forgotten)
    expect(new Set(readmitted)).toEqual(everShed);
    expect(readmitted.filter((id) => id === 15).length).toBe(1);
    expect(p.counters.ReadmittedConnections).toBe(readmitted.length - 1);
    const all = readmitted.length;
    p.readmit();
    expect(readmitted.length).toBe(all);
  });
});
