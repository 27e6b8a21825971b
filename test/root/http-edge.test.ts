/**
 * Root integration tests, edge cases of HTTP/1.x capture by the compiled dist/ebpf-tracer against
 * a real Node http server: 100-continue, Connection: close, HTTP/1.0, IPv6 loopback, body cap
 * truncation, pipelining in one write, non-HTTP bytes, and selection of one process out of two.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { startNginx, startNode } from "../support/servers.ts";
import {
  Cleanups, curlLocalPorts, curlOk, exitStats, jsonOfSize, logRecords, NODE_APP, onPort, stopNginx, pipelined, rawExchange, statusLines,
} from "../support/http-kit.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/http-edge.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

const LP = "<lp:%{local_port}>";
const BODY_CAP = 131072; // data_capture.body_max_size_bytes default

async function nodeAndTracer(host = "127.0.0.1", extra: string[] = []) {
  const server = c.add(await startNode(NODE_APP, host), (s) => s.stop());
  const tracer = c.add(await TracerProcess.capture(["--pid", String(server.pid), ...extra]), (t) => t.stop());
  return { server, tracer };
}

async function spansOn(t: TracerProcess, port: number, n: number): Promise<SpanJson[]> {
  const got = await t.waitForSpans(n, onPort(port));
  expect(got.map((s) => s.name)).toHaveLength(n);
  return got;
}

function tempFile(name: string, content: string): string {
  const dir = c.add(mkdtempSync(join(tmpdir(), "et-edge-")), (d) => rmSync(d, { recursive: true, force: true }));
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe.skipIf(!!SKIP)("HTTP/1 edge cases: Node http server", () => {
  test("Expect: 100-continue upload: one span with the final status, the interim 100 is not an exchange", async () => {
    const { server, tracer } = await nodeAndTracer();
    const body = jsonOfSize(4000);
    const file = tempFile("up.json", body);
    const r = curlOk(["-v", "-H", "Expect: 100-continue", "-H", "Content-Type: application/json", "--data-binary", `@${file}`, `http://127.0.0.1:${server.port}/upload?c=100`]);
    expect(r.stderr).toContain("< HTTP/1.1 100 Continue"); // premise: the server answered 100
    expect(r.stdout).toBe('{"received":4000}');
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.attributes).toMatchObject({
      "http.request.method": "POST",
      "url.path": "/upload",
      "url.query": "c=100",
      "http.request.header.expect": "100-continue",
      "http.request.header.content-length": "4000",
      "http.request.body": body,
      "http.request.body.size": 4000,
      "http.response.status_code": 200,
      "http.response.body": '{"received":4000}',
      "http.response.body.size": 17,
    });
    expect(s!.attributes["ebpf.partial"]).toBeUndefined();
    await Bun.sleep(200);
    expect(tracer.spans.filter(onPort(server.port))).toHaveLength(1);
  });

  test("Connection: close: the request and response headers say so and the span is complete", async () => {
    const { server, tracer } = await nodeAndTracer();
    const r = curlOk(["-w", LP, "-H", "Connection: close", `http://127.0.0.1:${server.port}/json?close=1`]);
    const [lp] = curlLocalPorts(r);
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.attributes).toMatchObject({
      "http.request.header.connection": "close",
      "http.response.header.connection": "close",
      "http.response.status_code": 200,
      "http.response.body": JSON.stringify({ path: "/json", query: "close=1" }),
      "client.port": lp,
      "network.protocol.version": "1.1",
    });
    expect(s!.attributes["ebpf.partial"]).toBeUndefined();
  });

  test("HTTP/1.0 request (curl -0): protocol version 1.0", async () => {
    const { server, tracer } = await nodeAndTracer();
    const r = curlOk(["-0", "-v", `http://127.0.0.1:${server.port}/json?v=10`]);
    expect(r.stderr).toContain("> GET /json?v=10 HTTP/1.0");
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.query": "v=10",
      "network.protocol.version": "1.0",
      "http.response.status_code": 200,
      "http.response.header.connection": "close",
      "http.response.body": JSON.stringify({ path: "/json", query: "v=10" }),
    });
  });

  test("IPv6 loopback: addresses are ::1", async () => {
    const { server, tracer } = await nodeAndTracer("::1");
    const r = curlOk(["-g", "-w", LP, `http://[::1]:${server.port}/json?ip=6`]);
    const [lp] = curlLocalPorts(r);
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.kind).toBe("server");
    expect(s!.attributes).toMatchObject({
      "http.request.header.host": `[::1]:${server.port}`,
      "server.address": "::1",
      "server.port": server.port,
      "client.address": "::1",
      "client.port": lp,
      "network.peer.address": "::1",
      "network.peer.port": lp,
      "http.response.status_code": 200,
      "http.response.body": JSON.stringify({ path: "/json", query: "ip=6" }),
      "process.pid": server.pid,
    });
  });

  test("1 MiB JSON upload: the request body is cut at the 128 KiB cap and marked truncated", async () => {
    const { server, tracer } = await nodeAndTracer(undefined, ["--log-level", "info"]);
    const size = 1024 * 1024;
    const body = jsonOfSize(size);
    const file = tempFile("big.json", body);
    const r = curlOk(["-H", "Content-Type: application/json", "--data-binary", `@${file}`, `http://127.0.0.1:${server.port}/upload`]);
    expect(r.stdout).toBe(`{"received":${size}}`);
    const [s] = await spansOn(tracer, server.port, 1);
    const a = s!.attributes;
    expect(a).toMatchObject({
      "http.request.method": "POST",
      "http.request.header.content-length": String(size),
      "http.request.body.size": size,
      "http.request.body.truncated": true,
      "http.response.status_code": 200,
      "http.response.body": `{"received":${size}}`,
    });
    expect((a["http.request.body"] as string).length).toBe(BODY_CAP);
    expect(a["http.request.body"]).toBe(body.slice(0, BODY_CAP));
    expect(a["http.response.body.truncated"]).toBeUndefined();
    expect(a["ebpf.partial"]).toBeUndefined();
    expect(await tracer.stop()).toBe(0);
    expect(exitStats(tracer.stderr)).toMatchObject({ EventLost: 0, LostBytes: 0, SpansEmitted: 1 });
  });

  test("pipelining: three requests in one write are three spans, in order, paired right", async () => {
    const { server, tracer } = await nodeAndTracer();
    const payload = pipelined([
      { method: "GET", target: "/json?p=1" },
      { method: "GET", target: "/status/404" },
      { method: "POST", target: "/echo?p=3", headers: { "Content-Type": "application/json" }, body: '{"p":3}' },
    ]);
    const x = await rawExchange("127.0.0.1", server.port, payload, (got) => statusLines(got).length >= 3 && got.endsWith('{"p":3}'));
    expect(statusLines(x.got)).toEqual([200, 404, 200]); // premise: the server answered all three
    const spans = await spansOn(tracer, server.port, 3);
    expect(spans.map((s) => [s.attributes["http.request.method"], s.attributes["url.path"], s.attributes["url.query"] ?? "", s.attributes["http.response.status_code"]])).toEqual([
      ["GET", "/json", "p=1", 200],
      ["GET", "/status/404", "", 404],
      ["POST", "/echo", "p=3", 200],
    ]);
    expect(spans.map((s) => s.attributes["http.response.body"])).toEqual([JSON.stringify({ path: "/json", query: "p=1" }), "status 404", '{"p":3}']);
    expect(spans[2]!.attributes["http.request.body"]).toBe('{"p":3}');
    for (const s of spans) {
      expect(s.attributes["client.port"]).toBe(x.localPort);
      expect(s.attributes["http.request.header.host"]).toBe("pipeline.test");
      expect(s.attributes["server.address"]).toBe("pipeline.test");
      expect(s.attributes["ebpf.partial"]).toBeUndefined();
    }
  });

  test("non-HTTP bytes (a TLS ClientHello) on a selected connection: no span, no crash, later requests still captured", async () => {
    const { server, tracer } = await nodeAndTracer(undefined, ["--log-level", "info"]);
    // A TLS 1.2 ClientHello record header and the start of its body.
    const hello = new Uint8Array(180);
    hello.set([0x16, 0x03, 0x01, 0x00, 0xaf, 0x01, 0x00, 0x00, 0xab, 0x03, 0x03]);
    for (let i = 11; i < hello.length; i++) hello[i] = (i * 37 + 11) & 0xff;
    const x = await rawExchange("127.0.0.1", server.port, hello, () => false);
    expect(x.closedByPeer).toBe(true);
    expect(x.got).toStartWith("HTTP/1.1 400 Bad Request"); // Node's answer to garbage
    const r = curlOk(["-w", LP, `http://127.0.0.1:${server.port}/json?after=tls`, `http://127.0.0.1:${server.port}/status/201`]);
    const ports = curlLocalPorts(r);
    const spans = await spansOn(tracer, server.port, 2);
    expect(spans.map((s) => [s.attributes["url.path"], s.attributes["http.response.status_code"], s.attributes["client.port"]])).toEqual([
      ["/json", 200, ports[0]],
      ["/status/201", 201, ports[1]],
    ]);
    expect(tracer.proc.exitCode).toBeNull();
    await Bun.sleep(200);
    expect(await tracer.stop()).toBe(0);
    expect(tracer.spans.filter((s) => s.attributes["client.port"] === x.localPort)).toEqual([]);
    expect(tracer.stderr).not.toContain("event handling failed");
    const stats = exitStats(tracer.stderr);
    expect(stats).toBeDefined();
    // The detector recognises the TLS record: a TLS connection, not an HTTP parse error.
    expect(stats!.TlsConnections).toBe(1);
    expect(stats!.ReqParsingErrors).toBe(0);
    expect(stats!.SpansEmitted).toBe(2);
  });
});

describe.skipIf(!!SKIP)("HTTP/1 edge cases: capture limits and stream reassembly", () => {
  test("1 MiB response over the per-call capture cap, then another request on the same connection", async () => {
    const { server, tracer } = await nodeAndTracer();
    const size = 1024 * 1024;
    const base = `http://127.0.0.1:${server.port}`;
    const r = curlOk(["-w", LP, "-o", "/dev/null", `${base}/big?n=${size}`, "--next", "-w", LP, `${base}/json?after=big`]);
    const ports = curlLocalPorts(r);
    expect(ports[0]).toBe(ports[1]!);
    expect(r.stdout).toContain(JSON.stringify({ path: "/json", query: "after=big" }));
    const spans = await spansOn(tracer, server.port, 2);
    const big = spans[0]!.attributes;
    expect(big).toMatchObject({
      "url.path": "/big",
      "http.response.status_code": 200,
      "http.response.header.content-length": String(size),
      "http.response.body.size": size,
      "http.response.body.truncated": true,
    });
    expect(big["http.response.body"]).toBe(jsonOfSize(size).slice(0, BODY_CAP));
    expect(big["ebpf.partial"]).toBeUndefined();
    expect(spans[1]!.attributes).toMatchObject({
      "url.path": "/json",
      "url.query": "after=big",
      "http.response.status_code": 200,
      "http.response.body": JSON.stringify({ path: "/json", query: "after=big" }),
      "client.port": ports[0],
    });
    expect(spans[1]!.attributes["ebpf.partial"]).toBeUndefined();
  });

  test("a chunked body larger than the capture cap: its size is exact, or flagged as an estimate — never silently off", async () => {
    const { server, tracer } = await nodeAndTracer();
    const size = 204_811;
    const base = `http://127.0.0.1:${server.port}`;
    curlOk(["-o", "/dev/null", `${base}/bigchunked?n=${size}&k=9`, "--next", `${base}/json?after=chunked`]);
    const spans = await spansOn(tracer, server.port, 2);
    const a = spans[0]!.attributes;
    expect(a["url.path"]).toBe("/bigchunked");
    expect(a["http.response.header.transfer-encoding"]).toBe("chunked");
    const reported = a["http.response.body.size"] as number;
    if (a["http.response.body.size_estimated"] === true) expect(reported).toBeGreaterThan(size);
    else expect(reported).toBe(size);
    expect(a["http.response.body.truncated"]).toBe(true);
    expect(spans[1]!.attributes["url.path"]).toBe("/json");
  });

  test("an odd method (any RFC 9110 token) becomes a span: _OTHER with the original kept", async () => {
    const { server, tracer } = await nodeAndTracer();
    // Node refuses methods outside llhttp's list with 400 and closes: the span must still exist.
    const x = await rawExchange("127.0.0.1", server.port, new TextEncoder().encode("MOOO /json?odd=1 HTTP/1.1\r\nHost: odd.test\r\n\r\n"), () => false);
    expect(x.got).toStartWith("HTTP/1.1 400");
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.name).toBe("HTTP /json");
    expect(s!.attributes).toMatchObject({
      "http.request.method": "_OTHER",
      "http.request.method_original": "MOOO",
      "url.path": "/json",
      "url.query": "odd=1",
      "http.response.status_code": 400,
    });
  });

  test("a gzip-encoded response body is kept decoded; a malformed request with a method and target is a flagged span", async () => {
    const { server, tracer } = await nodeAndTracer();
    const r = curlOk(["-s", `http://127.0.0.1:${server.port}/gzip`]);
    expect(r.code).toBe(0);
    const bad = await rawExchange("127.0.0.1", server.port, new TextEncoder().encode("GET /probe?id=7 HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n"), () => false);
    expect(bad.got).toStartWith("HTTP/1.1 400");
    const spans = await spansOn(tracer, server.port, 2);
    const gz = spans.find((s) => s.attributes["url.path"] === "/gzip")!;
    expect(gz.attributes["http.response.header.content-encoding"]).toBe("gzip");
    expect(JSON.parse(gz.attributes["http.response.body"] as string)).toMatchObject({ compressed: true, items: [1, 2, 3] });
    const m = spans.find((s) => s.attributes["url.path"] === "/probe")!;
    expect(m.attributes).toMatchObject({ "http.request.method": "GET", "url.query": "id=7", "http.response.status_code": 400, "ebpf.partial": true });
    expect(typeof m.attributes["ebpf.http.malformed"]).toBe("string");
  });

  test("a request head written in three pieces is reassembled into one span", async () => {
    const { server, tracer } = await nodeAndTracer();
    const pieces = ["GET /json?sp", "lit=3 HTTP/1.1\r\nHo", "st: split.test\r\nX-Trace-Me: yes\r\n\r\n"];
    const { got, localPort } = await new Promise<{ got: string; localPort: number }>((resolve, reject) => {
      const sock = connect({ host: "127.0.0.1", port: server.port }, async () => {
        for (const p of pieces) {
          sock.write(p);
          await Bun.sleep(40);
        }
      });
      let got = "";
      sock.on("data", (d) => {
        got += d.toString();
        if (got.endsWith("}")) {
          const localPort = sock.localPort!;
          sock.destroy();
          resolve({ got, localPort });
        }
      });
      sock.on("error", reject);
    });
    expect(statusLines(got)).toEqual([200]);
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.attributes).toMatchObject({
      "url.path": "/json",
      "url.query": "split=3",
      "http.request.header.host": "split.test",
      "http.request.header.x-trace-me": "yes",
      "http.response.status_code": 200,
      "client.port": localPort,
    });
  });

  test("ingress_and_egress with both ends selected: a server span and a client span of one exchange", async () => {
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const tracer = c.add(await TracerProcess.capture(["--pid", String(server.pid), "--exe", "curl", "--mode", "ingress_and_egress"]), (t) => t.stop());
    const r = Bun.spawnSync(["/usr/bin/curl", "-sS", "-w", LP, `http://127.0.0.1:${server.port}/json?both=1`], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    const [lp] = curlLocalPorts({ code: 0, stdout: r.stdout.toString(), stderr: "" });
    const spans = await spansOn(tracer, server.port, 2);
    const srv = spans.find((s) => s.kind === "server");
    const cli = spans.find((s) => s.kind === "client");
    expect(srv?.attributes).toMatchObject({ "process.pid": server.pid, "client.port": lp, "network.peer.port": lp, "url.query": "both=1", "http.response.status_code": 200 });
    expect(cli?.attributes).toMatchObject({ "process.pid": r.pid, "client.port": lp, "network.peer.port": server.port, "url.query": "both=1", "http.response.status_code": 200 });
    expect(cli!.attributes["http.response.body"]).toBe(srv!.attributes["http.response.body"]!);
  });

  test("the stats line logged on exit carries the kernel's counters", async () => {
    // Every record the kernel wrote to the ring was drained by user space before the maps closed,
    // so the kernel's event count is at least what the pipeline received.
    const { server, tracer } = await nodeAndTracer(undefined, ["--log-level", "info"]);
    curlOk([`http://127.0.0.1:${server.port}/json?stats=1`, `http://127.0.0.1:${server.port}/json?stats=2`]);
    await spansOn(tracer, server.port, 2);
    expect(await tracer.stop()).toBe(0);
    const stats = exitStats(tracer.stderr)!;
    expect(stats).toBeDefined();
    const received = stats.ControlEventReceived! + stats.DataEventReceived! + stats.ProcessEventReceived! + stats.DecodeErrors!;
    expect(received).toBeGreaterThanOrEqual(6); // open, 2 requests, 2 responses, close
    expect(stats.EventLost).toBe(0);
    expect(stats.KernelEventsEmitted).toBeGreaterThanOrEqual(received);
    // The "probe stat" line: [entries, exits] per syscall that passed the filters.
    const probes = logRecords(tracer.stderr).filter((x) => x.msg === "probe stat").at(-1) as Record<string, number[]> | undefined;
    expect(probes?.accept4?.[0]).toBeGreaterThanOrEqual(1);
    expect(probes?.accept4?.[1]).toBeGreaterThanOrEqual(1);
  });
});

describe.skipIf(!!SKIP)("HTTP/1 edge cases: nginx with sendfile on (Debian's default)", () => {
  test("static files sent with sendfile(2): statuses, sizes and pairing stay right on a keep-alive connection", async () => {
    const ng = c.add(await startNginx((p, dir) => `sendfile on; server { listen 127.0.0.1:${p}; root ${dir}/www; }`), stopNginx);
    chmodSync(ng.dir, 0o755); // workers run as nobody
    const tracer = c.add(await TracerProcess.capture(["--pid", String(ng.pid)]), (t) => t.stop());
    const base = `http://127.0.0.1:${ng.port}`;
    const r = curlOk(["-w", LP, `${base}/data.json`, `${base}/index.html`, `${base}/data.json?again=1`]);
    expect(new Set(curlLocalPorts(r)).size).toBe(1);
    expect(r.stdout).toContain("<h1>hello</h1>");
    const spans = await spansOn(tracer, ng.port, 3);
    expect(spans.map((s) => [s.attributes["url.path"], s.attributes["http.response.status_code"], s.attributes["http.response.body.size"], s.attributes["ebpf.response.missing"] ?? false])).toEqual([
      ["/data.json", 200, 17, false],
      ["/index.html", 200, 15, false],
      ["/data.json", 200, 17, false],
    ]);
    for (const s of spans) {
      expect(String(s.attributes["http.response.body"] ?? "")).not.toContain("HTTP/1.1");
      expect(s.attributes["ebpf.partial"]).toBeUndefined();
    }
  });
});

describe.skipIf(!!SKIP)("HTTP/1 edge cases: selection", () => {
  test("only the selected process's traffic produces spans", async () => {
    const selected = c.add(await startNode(NODE_APP), (s) => s.stop());
    const other = c.add(await startNode(NODE_APP), (s) => s.stop());
    const tracer = c.add(await TracerProcess.capture(["--pid", String(selected.pid)]), (t) => t.stop());
    curlOk([`http://127.0.0.1:${other.port}/json?who=other`]);
    curlOk([`http://127.0.0.1:${selected.port}/json?who=selected`]);
    curlOk([`http://127.0.0.1:${other.port}/json?who=other2`]);
    curlOk([`http://127.0.0.1:${selected.port}/status/202`]);
    await spansOn(tracer, selected.port, 2);
    await Bun.sleep(300);
    await tracer.stop();
    expect(tracer.spans.map((s) => [s.attributes["process.pid"], s.attributes["server.port"], s.name])).toEqual([
      [selected.pid, selected.port, "GET /json"],
      [selected.pid, selected.port, "GET /status/202"],
    ]);
  });
});
