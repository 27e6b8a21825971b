/**
 * Root integration tests for HTTP/2 through the compiled binary: Debian's nginx with
 * `listen … http2` (h2c prior knowledge) under h2load and curl, Node's http2 module (CONTINUATION,
 * trailers, server push, a cancelled stream, GOAWAY, padding), and an h2c upgrade answered by a
 * python3-h2 server. Every test starts its own servers and tracer and stops them in afterEach.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { port, startNginx, startNode } from "../support/servers.ts";
import { Cleanups, curlOk, exitStats, logRecords, onPort, stopNginx } from "../support/http-kit.ts";
import { DIR_SEND } from "../../src/kernel/event-layout.ts";
import { BIG_HEADER_LEN, h2load, NODE_H2_APP, nodeH2Client, nodeH2ClientAsync, paddedFrames, startPythonH2, startSink, writeAndClose } from "../support/h2-kit.ts";
import { concat, frame, headersFrames, HpackEncoder, PREFACE, settingsFrame } from "../../src/protocols/http2/encoder.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/http2.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

const NGINX_H2C = (p: number) => `server {
    listen 127.0.0.1:${p} http2;
    root www;
    location / { }
    location = /teapot { return 418 "short and stout\\n"; }
    location = /moved { return 302 /data.json; }
  }`;

/** Waits for `n` spans on `port`, then a little longer to catch any extra one. */
async function exactly(t: TracerProcess, p: number, n: number, timeoutMs = 20_000): Promise<SpanJson[]> {
  await t.waitForSpans(n, onPort(p), timeoutMs);
  await Bun.sleep(500);
  return t.spans.filter(onPort(p));
}

describe.skipIf(!!SKIP)("HTTP/2 capture: nginx h2c (prior knowledge)", () => {
  test("http2_data_capture_enabled: false leaves HTTP/2 uncaptured (counted) and HTTP/1 captured", async () => {
    const h1 = port();
    const ng = c.add(await startNginx((p) => `${NGINX_H2C(p)}
  server { listen 127.0.0.1:${h1}; root www; location / { } }`), stopNginx);
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-h2cfg-")), (d) => rmSync(d, { recursive: true, force: true }));
    writeFileSync(join(dir, "c.yaml"), "http2_data_capture_enabled: false\n");
    const t = c.add(await TracerProcess.capture(["-c", join(dir, "c.yaml"), "--pid", String(ng.pid), "--log-level", "info"]), (x) => x.stop());
    curlOk(["--http2-prior-knowledge", `http://127.0.0.1:${ng.port}/data.json`]);
    curlOk([`http://127.0.0.1:${h1}/data.json`]);
    const [s1] = await t.waitForSpans(1, onPort(h1));
    if (!s1) {
      // Failed twice in CI over many runs, never here: say what the agent knew when it happens.
      const workers = Bun.spawnSync(["pgrep", "-P", String(ng.pid)]).stdout.toString().trim().split(/\s+/).join(",");
      const told = logRecords(t.stderr).filter((r) => /process|stats|connection/i.test(String(r.msg))).slice(-12).map((r) => JSON.stringify(r));
      throw new Error(`no span for the HTTP/1 request on port ${h1}; nginx master ${ng.pid}, workers ${workers}; spans ${JSON.stringify(t.spans.map((s) => s.name))}; agent log:\n${told.join("\n")}`);
    }
    expect(s1.attributes).toMatchObject({ "network.protocol.version": "1.1", "url.path": "/data.json", "http.response.status_code": 200 });
    await Bun.sleep(500);
    expect(t.spans.filter(onPort(ng.port))).toHaveLength(0);
    expect(await t.stop()).toBe(0);
    expect(exitStats(t.stderr)!.UnsupportedProtocolConnections).toBeGreaterThanOrEqual(1);
  }, 30_000);

  test("h2load multiplexed (-m 10): every request is exactly one span, method/path/status exact", async () => {
    const ng = c.add(await startNginx(NGINX_H2C), stopNginx);
    const t = c.add(await TracerProcess.capture(["--pid", String(ng.pid), "--log-level", "info"]), (x) => x.stop());
    const base = `http://127.0.0.1:${ng.port}`;
    // three paths with different statuses, spread over 4 connections × 10 concurrent streams
    const r = h2load(["-n", "300", "-c", "4", "-m", "10", `${base}/data.json`, `${base}/teapot`, `${base}/moved`]);
    // h2load counts 4xx responses (the teapot) as failed: done = succeeded + failed
    expect(r.succeeded + r.failed).toBe(300);
    expect(r.raw).toContain("status codes: 100 2xx, 100 3xx, 100 4xx, 0 5xx");
    const spans = await exactly(t, ng.port, 300);
    expect(spans).toHaveLength(300);
    const byPath: Record<string, SpanJson[]> = {};
    for (const s of spans) (byPath[String(s.attributes["url.path"])] ??= []).push(s);
    expect(Object.keys(byPath).sort()).toEqual(["/data.json", "/moved", "/teapot"]);
    expect(byPath["/data.json"]!.length + byPath["/teapot"]!.length + byPath["/moved"]!.length).toBe(300);
    const want: Record<string, number> = { "/data.json": 200, "/teapot": 418, "/moved": 302 };
    for (const s of spans) {
      const path = String(s.attributes["url.path"]);
      expect(s.kind).toBe("server");
      expect(s.name).toBe(`GET ${path}`);
      expect(s.attributes).toMatchObject({
        "network.protocol.version": "2",
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": want[path]!,
        "http.request.header.user-agent": expect.stringMatching(/^h2load nghttp2\//),
        "process.executable.name": "nginx",
      });
      expect(s.attributes["ebpf.http2.headers_incomplete"]).toBeUndefined();
      expect(s.attributes["ebpf.http2.incomplete"]).toBeUndefined();
      expect(s.attributes["ebpf.partial"]).toBeUndefined();
      // 418 is a client error: not a server span error
      expect(s.error).toBe(false);
    }
    for (const s of byPath["/data.json"]!) {
      expect(s.attributes["http.response.body"]).toBe(JSON.stringify({ items: [1, 2, 3] }));
      expect(s.attributes["http.response.header.content-type"]).toBe("application/json");
    }
    for (const s of byPath["/moved"]!) expect(s.attributes["http.response.header.location"]).toBe(`http://127.0.0.1:${ng.port}/data.json`);
    // stream ids: each connection's client streams are 1, 3, 5, … with no repeats per connection
    const perConn = new Map<number, number[]>();
    for (const s of spans) {
      const cp = Number(s.attributes["client.port"]);
      const ids = perConn.get(cp) ?? [];
      ids.push(Number(s.attributes["ebpf.http2.stream_id"]));
      perConn.set(cp, ids);
    }
    expect(perConn.size).toBe(4);
    for (const ids of perConn.values()) {
      expect(ids.every((id) => id % 2 === 1)).toBe(true);
      expect(new Set(ids).size).toBe(ids.length);
    }
    expect(await t.stop()).toBe(0);
    const st = exitStats(t.stderr)!;
    expect(st.EventLost).toBe(0);
    expect(st.SpansEmitted).toBe(300);
  }, 60_000);

  test("agent started while h2load's connections are busy: every value emitted is one that was sent", async () => {
    const ng = c.add(await startNginx((p) => NGINX_H2C(p).replace("root www;", "root www; keepalive_requests 100000000;")), stopNginx);
    const base = `http://127.0.0.1:${ng.port}`;
    // -D 10: the load outlasts the agent's start by seconds even on a loaded machine (with -D 5 a
    // slow start once left no load to see).
    const load = Bun.spawn(["timeout", "40", "h2load", "-D", "10", "-c", "2", "-m", "10", "-H", "x-req: abc", `${base}/data.json`, `${base}/teapot`], { stdout: "pipe", stderr: "ignore" });
    c.add(load, (p) => p.kill());
    await Bun.sleep(2000); // the HPACK tables of both connections are filled before the agent starts
    const t = c.add(await TracerProcess.capture(["--pid", String(ng.pid), "--log-level", "info"]), (x) => x.stop());
    const out = await new Response(load.stdout).text();
    expect(out).toMatch(/requests: \d+ total/);
    await Bun.sleep(1000);
    expect(await t.stop()).toBe(0);
    const spans = t.spans.filter(onPort(ng.port));
    expect(spans.length).toBeGreaterThan(100);
    const status: Record<string, number> = { "/data.json": 200, "/teapot": 418 };
    let flagged = 0;
    for (const s of spans) {
      const a = s.attributes;
      if (a["ebpf.http2.headers_incomplete"] === true) flagged++;
      expect(["/data.json", "/teapot"]).toContain(String(a["url.path"]));
      if (a["http.response.status_code"] !== undefined) expect(a["http.response.status_code"]).toBe(status[String(a["url.path"])]!);
      if (a["http.request.method"] !== undefined) expect(a["http.request.method"]).toBe("GET");
      if (a["http.request.header.x-req"] !== undefined) expect(a["http.request.header.x-req"]).toBe("abc");
      if (a["http.request.header.user-agent"] !== undefined) expect(String(a["http.request.header.user-agent"])).toStartWith("h2load ");
      for (const k of Object.keys(a)) if (k.startsWith("http.request.header.")) expect(["x-req", "user-agent"]).toContain(k.slice(20));
      if (a["url.path"] === "/data.json" && a["http.response.body"] !== undefined) expect(a["http.response.body"]).toBe(JSON.stringify({ items: [1, 2, 3] }));
    }
    console.log(`mid-connection attach: ${spans.length} spans, ${flagged} flagged headers_incomplete`);
  }, 60_000);

  test("curl --http2-prior-knowledge: one span with request headers and the response body", async () => {
    const ng = c.add(await startNginx(NGINX_H2C), stopNginx);
    const t = c.add(await TracerProcess.capture(["--pid", String(ng.pid)]), (x) => x.stop());
    const r = curlOk(["--http2-prior-knowledge", "-H", "X-Trace-Me: yes", "-w", "<lp:%{local_port}>", `http://127.0.0.1:${ng.port}/data.json?a=1&b=two`]);
    const lp = Number(/<lp:(\d+)>/.exec(r.stdout)![1]);
    const [s, ...rest] = await exactly(t, ng.port, 1);
    expect(rest).toHaveLength(0);
    expect(s!.name).toBe("GET /data.json");
    expect(s!.attributes).toMatchObject({
      "network.protocol.version": "2",
      "http.request.method": "GET",
      "url.path": "/data.json",
      "url.query": "a=1&b=two",
      "url.scheme": "http",
      "http.request.header.x-trace-me": "yes",
      "http.request.header.accept": "*/*",
      "http.response.status_code": 200,
      "http.response.body": JSON.stringify({ items: [1, 2, 3] }),
      "http.response.body.size": 17,
      "ebpf.http2.stream_id": 1,
      "client.port": lp,
      "server.port": ng.port,
    });
    expect(s!.attributes["http.request.header.user-agent"]).toMatch(/^curl\//);
  }, 30_000);
});

async function nodeH2(pad = false, extra: string[] = []) {
  const script = (pad ? 'process.env.PAD = "1";\n' : "") + NODE_H2_APP;
  const server = c.add(await startNode(script), (s) => s.stop());
  const tracer = c.add(await TracerProcess.capture(["--pid", String(server.pid), "--log-level", "info", ...extra]), (t) => t.stop());
  return { server, tracer, url: `http://127.0.0.1:${server.port}` };
}

function byPath(spans: SpanJson[]): Record<string, SpanJson> {
  const out: Record<string, SpanJson> = {};
  for (const s of spans) {
    const p = String(s.attributes["url.path"]);
    expect(out[p]).toBeUndefined();
    out[p] = s;
  }
  return out;
}

describe.skipIf(!!SKIP)("HTTP/2 capture: Node http2 server and client", () => {
  test("one connection: JSON GET, POST body, a header block needing CONTINUATION, response trailers", async () => {
    const { server, tracer, url } = await nodeH2();
    const out = nodeH2Client(url, "basic");
    expect(out.hello.body).toBe('{"hello":"h2"}');
    expect(out.echo.body).toBe('{"n":42}');
    expect(out.bigHeader).toEqual({ status: 200, len: BIG_HEADER_LEN, body: "big" });
    expect(out.trailers.trailers).toMatchObject({ "x-checksum": "abc123", "x-done": "yes" });
    const spans = await exactly(tracer, server.port, 4);
    expect(spans).toHaveLength(4);
    const p = byPath(spans);
    const cp = p["/hello"]!.attributes["client.port"];
    for (const s of spans) expect(s.attributes["client.port"]).toBe(cp!);
    expect(spans.map((s) => s.attributes["ebpf.http2.stream_id"])).toEqual([1, 3, 5, 7]);
    expect(p["/hello"]!.attributes).toMatchObject({
      "http.request.method": "GET",
      "http.request.header.x-test": "one",
      "http.response.status_code": 200,
      "http.response.header.content-type": "application/json",
      "http.response.body": '{"hello":"h2"}',
    });
    expect(p["/echo"]!.name).toBe("POST /echo");
    expect(p["/echo"]!.attributes).toMatchObject({
      "url.query": "x=1",
      "http.request.header.content-type": "application/json",
      "http.request.body": '{"n":42}',
      "http.request.body.size": 8,
      "http.response.body": '{"n":42}',
    });
    const big = p["/big-header"]!.attributes;
    expect(big["http.request.header.x-big-req"]).toBe("a".repeat(BIG_HEADER_LEN));
    expect(big["http.response.header.x-big"]).toBe("b".repeat(BIG_HEADER_LEN));
    expect(big["http.response.body"]).toBe("big");
    expect(p["/trailers"]!.attributes).toMatchObject({
      "http.response.body": "with trailers",
      "http.response.header.x-checksum": "abc123",
      "http.response.header.x-done": "yes",
    });
    for (const s of spans) {
      expect(s.error).toBe(false);
      expect(s.attributes["ebpf.http2.headers_incomplete"]).toBeUndefined();
      expect(s.attributes["ebpf.http2.headers_dropped"]).toBeUndefined();
      expect(s.attributes["ebpf.http2.rst_stream"]).toBeUndefined();
    }
    expect(await tracer.stop()).toBe(0);
  }, 40_000);

  test("padded frames (server PADDING_STRATEGY_MAX): bodies and headers exact", async () => {
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-h2pad-")), (d) => rmSync(d, { recursive: true, force: true }));
    const { server, tracer, url } = await nodeH2(true, ["--record", join(dir, "rec")]);
    const out = nodeH2Client(url, "basic");
    expect(out.echo.body).toBe('{"n":42}');
    const p = byPath(await exactly(tracer, server.port, 4));
    expect(p["/hello"]!.attributes["http.response.body"]).toBe('{"hello":"h2"}');
    expect(p["/echo"]!.attributes["http.response.body"]).toBe('{"n":42}');
    expect(p["/big-header"]!.attributes["http.response.header.x-big"]).toBe("b".repeat(BIG_HEADER_LEN));
    expect(p["/trailers"]!.attributes["http.response.header.x-checksum"]).toBe("abc123");
    for (const s of Object.values(p)) expect(s.attributes["ebpf.http2.headers_incomplete"]).toBeUndefined();
    expect(await tracer.stop()).toBe(0);
    expect(paddedFrames(join(dir, "rec"), DIR_SEND)).toBeGreaterThan(4); // premise: the server padded
  }, 40_000);

  test("server push: the pushed response is its own span linked to the pushing stream", async () => {
    const { server, tracer, url } = await nodeH2();
    const out = nodeH2Client(url, "push");
    expect(out.push.body).toBe("<p>push</p>");
    expect(out.pushed).toEqual([{ path: "/pushed.js", body: "pushed();" }]);
    const p = byPath(await exactly(tracer, server.port, 2));
    expect(p["/push"]!.attributes).toMatchObject({ "ebpf.http2.stream_id": 1, "http.response.body": "<p>push</p>" });
    expect(p["/push"]!.attributes["ebpf.http2.pushed_by_stream"]).toBeUndefined();
    expect(p["/pushed.js"]!.name).toBe("GET /pushed.js");
    expect(p["/pushed.js"]!.attributes).toMatchObject({
      "http.request.method": "GET",
      "ebpf.http2.stream_id": 2,
      "ebpf.http2.pushed_by_stream": 1,
      "http.response.status_code": 200,
      "http.response.header.content-type": "text/javascript",
      "http.response.body": "pushed();",
    });
  }, 30_000);

  test("a stream cancelled by the client (RST_STREAM CANCEL): error.type and flag; the connection goes on", async () => {
    const { server, tracer, url } = await nodeH2();
    const out = nodeH2Client(url, "cancel");
    expect(out.cancelled).toBe(true);
    expect(out.after.body).toBe('{"hello":"h2"}');
    const p = byPath(await exactly(tracer, server.port, 2));
    expect(p["/hang"]!.error).toBe(true);
    expect(p["/hang"]!.attributes).toMatchObject({ "ebpf.http2.rst_stream": true, "error.type": "CANCEL", "ebpf.http2.stream_id": 1 });
    expect(p["/hang"]!.attributes["http.response.status_code"]).toBeUndefined();
    expect(p["/hang"]!.durationMs).toBeGreaterThanOrEqual(250);
    expect(p["/hello"]!.error).toBe(false);
    expect(p["/hello"]!.attributes["ebpf.http2.stream_id"]).toBe(3);
  }, 30_000);

  test("GOAWAY from the server (Node: last stream = the open one), then the client drops the connection: the stream ends incomplete", async () => {
    const { server, tracer, url } = await nodeH2();
    const out = nodeH2Client(url, "goaway");
    // nghttp2 never announces a last stream below one it already accepted
    expect(out.goaway).toEqual({ code: 0, last: 1 });
    const [s, ...rest] = await exactly(tracer, server.port, 1);
    expect(rest).toHaveLength(0);
    expect(s!.attributes["url.path"]).toBe("/goaway");
    expect(s!.attributes).toMatchObject({ "ebpf.http2.incomplete": true, "ebpf.http2.end_reason": "close" });
    expect(s!.attributes["ebpf.http2.goaway"]).toBeUndefined();
    expect(s!.attributes["http.response.status_code"]).toBeUndefined();
  }, 30_000);
});

describe.skipIf(!!SKIP)("HTTP/2 capture: streams that do not end", () => {
  test("http2.stream_max_age: a stream open longer is emitted flagged incomplete (max_age), once", async () => {
    const server = c.add(await startNode(NODE_H2_APP), (s) => s.stop());
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-h2cfg-")), (d) => rmSync(d, { recursive: true, force: true }));
    writeFileSync(join(dir, "c.yaml"), "http2:\n  stream_max_age: 1s\n");
    const t = c.add(await TracerProcess.capture(["-c", join(dir, "c.yaml"), "--pid", String(server.pid)]), (x) => x.stop());
    // sessions tick every min(5 s, stream_max_age / 2): 500 ms here; hold well past the age
    nodeH2Client(`http://127.0.0.1:${server.port}`, "hold", "4000");
    const [s, ...rest] = await exactly(t, server.port, 1);
    expect(rest).toHaveLength(0);
    expect(s!.attributes).toMatchObject({ "url.path": "/hang", "ebpf.http2.incomplete": true, "ebpf.http2.end_reason": "max_age", "ebpf.partial": true });
    expect(s!.attributes["http.response.status_code"]).toBeUndefined();
  }, 60_000);

  test("a stream still open when the agent stops is emitted flagged incomplete", async () => {
    const server = c.add(await startNode(NODE_H2_APP), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(server.pid)]), (x) => x.stop());
    const held = nodeH2ClientAsync(`http://127.0.0.1:${server.port}`, "hold", "4000");
    await Bun.sleep(1500);
    expect(await t.stop()).toBe(0);
    const spans = t.spans.filter(onPort(server.port));
    expect(spans).toHaveLength(1);
    expect(spans[0]!.attributes).toMatchObject({ "url.path": "/hang", "ebpf.http2.incomplete": true, "ebpf.partial": true });
    expect((await held).held).toBe(true);
  }, 30_000);
});

describe.skipIf(!!SKIP)("HTTP/2 capture: h2c upgrade and GOAWAY (python3-h2 server)", () => {
  for (const [how, selectFirst] of [["accept seen", true], ["accept entered before the agent: first seen on its data", false]] as const)
  test(`curl --http2 upgrades (${how}): the upgrade request is stream 1 (one HTTP/2 span, no HTTP/1 span), the next request stream 3`, async () => {
    const py = c.add(await startPythonH2(selectFirst), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(py.pid)]), (x) => x.stop());
    const base = `http://127.0.0.1:${py.port}`;
    const r = curlOk(["-v", "--http2", `${base}/hello?a=1`, `${base}/hello?b=2`]);
    expect(r.stdout).toBe("hello from h2 /hello?a=1hello from h2 /hello?b=2");
    expect(r.stderr).toContain("HTTP/1.1 101 Switching Protocols"); // premise: it did upgrade
    const spans = await exactly(t, py.port, 2);
    expect(spans).toHaveLength(2);
    const [up, next] = spans;
    expect(up!.attributes).toMatchObject({
      "network.protocol.version": "2",
      "http.request.method": "GET",
      "url.path": "/hello",
      "url.query": "a=1",
      "http.request.header.upgrade": "h2c",
      "http.response.status_code": 200,
      "http.response.header.content-type": "text/plain",
      "http.response.body": "hello from h2 /hello?a=1",
      "ebpf.http2.stream_id": 1,
    });
    expect(up!.attributes["http.request.header.http2-settings"]).toBeString();
    expect(next!.attributes).toMatchObject({
      "network.protocol.version": "2",
      "url.query": "b=2",
      "http.response.status_code": 200,
      "http.response.body": "hello from h2 /hello?b=2",
      "ebpf.http2.stream_id": 3,
      "client.port": up!.attributes["client.port"]!,
    });
    for (const s of spans) {
      expect(s.error).toBe(false);
      expect(s.attributes["ebpf.http2.headers_incomplete"]).toBeUndefined();
    }
  }, 30_000);

  test("GOAWAY with last stream 0: the unprocessed stream ends at once, error.type GOAWAY", async () => {
    const py = c.add(await startPythonH2(), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(py.pid)]), (x) => x.stop());
    const out = nodeH2Client(`http://127.0.0.1:${py.port}`, "goaway", "/goaway0");
    expect(out.goaway).toEqual({ code: 0, last: 0 });
    const [s, ...rest] = await exactly(t, py.port, 1);
    expect(rest).toHaveLength(0);
    expect(s!.error).toBe(true);
    expect(s!.attributes).toMatchObject({ "url.path": "/goaway0", "ebpf.http2.goaway": true, "error.type": "GOAWAY", "ebpf.http2.stream_id": 1 });
    expect(s!.attributes["ebpf.http2.incomplete"]).toBeUndefined();
    expect(s!.attributes["http.response.status_code"]).toBeUndefined();
  }, 30_000);
});

/** Deterministic bytes (xorshift32) for the garbage connection. */
function garbage(n: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

describe.skipIf(!!SKIP)("HTTP/2 capture: crafted frame sequences to a TCP sink", () => {
  test("malformed frames, absurd lengths, Huffman garbage, table-size abuse, stream floods: counted, exit 0, valid traffic still exact", async () => {
    const sink = c.add(await startSink(), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(sink.pid), "--log-level", "info"]), (x) => x.stop());
    const enc = () => new HpackEncoder();
    const req = (path: string) => enc().encode([[":method", "GET"], [":scheme", "http"], [":authority", "sink.test"], [":path", path], ["x-case", path.slice(1)]]);
    const start = concat([PREFACE, settingsFrame([[1, 4096]])]);
    const cases: Record<string, Uint8Array[]> = {
      // a request the sink never answers: one span, ended by the close, flagged
      valid: [start, headersFrames(1, req("/valid"), { endStream: true })],
      // frame length 16 MiB - 1 (above any SETTINGS_MAX_FRAME_SIZE we accept)
      absurdLength: [start, Uint8Array.of(0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1), garbage(4096, 1)],
      // a literal whose Huffman string is all ones (contains EOS)
      huffman: [start, headersFrames(1, Uint8Array.of(0x82, 0x86, 0x84, 0x40, 0x81, 0x61, 0x84, 0xff, 0xff, 0xff, 0xff), { endStream: true })],
      // a dynamic table size update far above SETTINGS_HEADER_TABLE_SIZE, then one above 2^32
      tableSize: [
        start,
        headersFrames(1, Uint8Array.of(0x3f, 0xe1, 0xff, 0xff, 0x07, 0x82, 0x86, 0x84), { endStream: true }),
        headersFrames(3, Uint8Array.of(0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x82), { endStream: true }),
      ],
      // an index far past the static and dynamic tables; an integer that never ends
      badIndex: [start, headersFrames(1, Uint8Array.of(0xff, 0x80, 0x80, 0x04), { endStream: true }), headersFrames(3, new Uint8Array(64).fill(0xff), { endStream: true })],
      // CONTINUATION with no HEADERS before it
      orphanContinuation: [start, frame(9, 4, 1, req("/orphan"))],
      // a header block of 300 KiB in CONTINUATIONs
      blockBomb: [start, headersFrames(1, concat([req("/bomb"), enc().encode(Array.from({ length: 300 }, (_, i): [string, string] => [`x-b${i}`, "v".repeat(1000)]), { huffman: false, indexing: "none" })]), { maxFragment: 16384, endStream: true })],
      // 400 streams opened and never ended (above http2.max_streams_per_connection = 256)
      streamFlood: [start, concat(Array.from({ length: 400 }, (_, i) => headersFrames(2 * i + 1, Uint8Array.of(0x83, 0x86, 0x84))))],
      // the preface, then 64 KiB of noise
      noise: [start, garbage(65536)],
      // not HTTP/2 at all
      notHttp: [garbage(2048, 7)],
    };
    for (const chunks of Object.values(cases)) await writeAndClose(sink.port, chunks);
    // after all that, an ordinary request on a new connection is still exact
    await writeAndClose(sink.port, [start, headersFrames(1, req("/after"), { endStream: true })]);
    const got = await t.waitForSpans(2, (s) => s.attributes["url.path"] === "/valid" || s.attributes["url.path"] === "/after", 20_000);
    await Bun.sleep(1000);
    expect(got.map((s) => s.attributes["url.path"]).sort()).toEqual(["/after", "/valid"]);
    for (const s of got) {
      expect(s.attributes).toMatchObject({
        "http.request.method": "GET",
        "http.request.header.x-case": String(s.attributes["url.path"]).slice(1),
        "ebpf.http2.incomplete": true,
        "ebpf.http2.end_reason": "close",
      });
      expect(s.attributes["http.response.status_code"]).toBeUndefined();
    }
    // no span carries a value that was not sent
    for (const s of t.spans.filter(onPort(sink.port))) {
      const path = s.attributes["url.path"];
      if (path !== undefined) expect(["/valid", "/after", "/bomb", "/"]).toContain(String(path));
    }
    expect(await t.stop()).toBe(0);
    const st = exitStats(t.stderr)!;
    console.log(`crafted: ${JSON.stringify(Object.fromEntries(Object.entries(st).filter(([k]) => k.startsWith("Http2") || k.startsWith("Unsupported") || k === "SpansEmitted")))}`);
    expect(st.Http2FrameTooLarge).toBeGreaterThanOrEqual(1);
    expect(st.Http2HuffmanErrors).toBeGreaterThanOrEqual(1);
    expect(st.Http2HpackErrors).toBeGreaterThanOrEqual(2);
    expect(st.Http2FramesMalformed).toBeGreaterThanOrEqual(1);
    expect(st.Http2StreamsEvicted).toBeGreaterThanOrEqual(400 - 256);
    expect(st.UnsupportedProtocolConnections).toBeGreaterThanOrEqual(1);
    expect(st.EventLost).toBe(0);
  }, 60_000);
});
