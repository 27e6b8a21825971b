/**
 * Root integration tests: the compiled dist/ebpf-tracer captures real HTTP/1.x traffic of real
 * servers (python3 http.server, Node http, Debian's nginx) and of curl as a client.
 * Every test starts its own servers and tracer and stops them in afterEach.
 */
import { chmodSync } from "node:fs";
import { afterEach, describe, expect, test } from "bun:test";
import { rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { startNginx, startNode, startPython } from "../support/servers.ts";
import { CHUNKED_BODY, Cleanups, curlLocalPorts, curlOk, exeName, NODE_APP, onPort, ppidOf, run, stopNginx } from "../support/http-kit.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/http-capture.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

const LP = "<lp:%{local_port}>";

async function nodeAndTracer(host = "127.0.0.1") {
  const server = c.add(await startNode(NODE_APP, host), (s) => s.stop());
  const tracer = c.add(await TracerProcess.capture(["--pid", String(server.pid)]), (t) => t.stop());
  return { server, tracer };
}

/** Waits for exactly `n` spans on `port` (fails with what arrived otherwise). */
async function spansOn(t: TracerProcess, port: number, n: number): Promise<SpanJson[]> {
  const got = await t.waitForSpans(n, onPort(port));
  expect(got.map((s) => s.name)).toHaveLength(n);
  return got;
}

describe.skipIf(!!SKIP)("HTTP/1 capture: python3 http.server", () => {
  test("GET of a file becomes one server span with request, response and process details", async () => {
    const py = c.add(await startPython(), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(py.pid)]), (x) => x.stop());
    const r = curlOk(["-w", LP, `http://127.0.0.1:${py.port}/hello.json?v=1&x=two`]);
    expect(r.stdout).toStartWith('{"hello":"world"}');
    const [lp] = curlLocalPorts(r);
    const [s] = await spansOn(t, py.port, 1);
    expect(s!.kind).toBe("server");
    expect(s!.name).toBe("GET /hello.json");
    expect(s!.error).toBe(false);
    expect(s!.durationMs).toBeGreaterThan(0);
    const a = s!.attributes;
    expect(a).toMatchObject({
      "http.request.method": "GET",
      "url.path": "/hello.json",
      "url.query": "v=1&x=two",
      "url.scheme": "http",
      "http.response.status_code": 200,
      "network.protocol.version": "1.1",
      "network.transport": "tcp",
      "http.request.header.host": `127.0.0.1:${py.port}`,
      "http.request.header.accept": "*/*",
      "http.response.header.content-type": "application/json",
      "http.response.header.content-length": "17",
      "server.address": "127.0.0.1",
      "server.port": py.port,
      "client.address": "127.0.0.1",
      "client.port": lp,
      "network.peer.address": "127.0.0.1",
      "network.peer.port": lp,
      "http.request.body.size": 0,
      "http.response.body": '{"hello":"world"}',
      "http.response.body.size": 17,
      "process.pid": py.pid,
      "process.executable.name": exeName("/usr/bin/python3"),
      "process.executable.path": `/usr/bin/${exeName("/usr/bin/python3")}`,
      "traceableai.module.name": "ebpf",
    });
    expect(a["http.request.header.user-agent"]).toMatch(/^curl\/\d/);
    expect(a["user_agent.original"]).toBe(a["http.request.header.user-agent"]!);
    expect(a["http.response.header.server"]).toMatch(/^SimpleHTTP\/[\d.]+ Python\/3\./);
    expect(a["process.command_line"]).toContain("-m http.server");
    expect(a["http.request.body"]).toBeUndefined();
    expect(a["http.response.body.truncated"]).toBeUndefined();
    expect(a["ebpf.partial"]).toBeUndefined();
    expect(s!.resource).toMatchObject({ "service.name": exeName("/usr/bin/python3"), "process.pid": py.pid });
  });
});

describe.skipIf(!!SKIP)("HTTP/1 capture: Node http server", () => {
  test("keep-alive: two requests on one connection are two spans with the same client port", async () => {
    const { server, tracer } = await nodeAndTracer();
    const base = `http://127.0.0.1:${server.port}`;
    const r = curlOk(["-w", LP, `${base}/json?n=1`, `${base}/json?n=2`]);
    const ports = curlLocalPorts(r);
    expect(ports).toHaveLength(2);
    expect(ports[0]).toBe(ports[1]!); // premise: curl reused the connection
    const spans = await spansOn(tracer, server.port, 2);
    expect(spans.map((s) => s.attributes["url.query"])).toEqual(["n=1", "n=2"]);
    for (const [i, s] of spans.entries()) {
      expect(s.attributes).toMatchObject({
        "http.request.method": "GET",
        "url.path": "/json",
        "http.response.status_code": 200,
        "http.response.header.connection": "keep-alive",
        "http.response.header.content-type": "application/json",
        "http.response.body": JSON.stringify({ path: "/json", query: `n=${i + 1}` }),
        "http.response.body.size": JSON.stringify({ path: "/json", query: `n=${i + 1}` }).length,
        "client.port": ports[0],
        "network.peer.port": ports[0],
        "server.port": server.port,
        "process.pid": server.pid,
        "process.executable.name": "node",
      });
    }
  });

  test("chunked response: the decoded body and its size", async () => {
    const { server, tracer } = await nodeAndTracer();
    const r = curlOk([`http://127.0.0.1:${server.port}/chunked`]);
    expect(r.stdout).toBe(CHUNKED_BODY);
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.attributes).toMatchObject({
      "url.path": "/chunked",
      "http.response.status_code": 200,
      "http.response.header.transfer-encoding": "chunked",
      "http.response.body": CHUNKED_BODY,
      "http.response.body.size": CHUNKED_BODY.length,
    });
    expect(s!.attributes["http.response.header.content-length"]).toBeUndefined();
    expect(s!.attributes["http.response.body.truncated"]).toBeUndefined();
    expect(s!.durationMs).toBeGreaterThanOrEqual(25); // three 10 ms pauses between the writes
  });

  test("JSON POST: request and response bodies", async () => {
    const { server, tracer } = await nodeAndTracer();
    const body = JSON.stringify({ name: "widget", qty: 3, tags: ["a", "b"] });
    const r = curlOk(["-H", "Content-Type: application/json", "--data-binary", body, `http://127.0.0.1:${server.port}/echo?dry=1`]);
    expect(r.stdout).toBe(body);
    const [s] = await spansOn(tracer, server.port, 1);
    expect(s!.name).toBe("POST /echo");
    expect(s!.attributes).toMatchObject({
      "http.request.method": "POST",
      "url.path": "/echo",
      "url.query": "dry=1",
      "http.request.header.content-type": "application/json",
      "http.request.header.content-length": String(body.length),
      "http.request.body": body,
      "http.request.body.size": body.length,
      "http.response.status_code": 200,
      "http.response.header.content-type": "application/json",
      "http.response.body": body,
      "http.response.body.size": body.length,
    });
  });

  test("HEAD then GET on one connection: the HEAD response has no body and does not eat the next one", async () => {
    const { server, tracer } = await nodeAndTracer();
    const base = `http://127.0.0.1:${server.port}`;
    const r = curlOk(["-w", LP, "-I", `${base}/json?m=head`, "--next", "-w", LP, `${base}/json?m=get`]);
    const ports = curlLocalPorts(r);
    expect(ports).toHaveLength(2);
    expect(ports[0]).toBe(ports[1]!);
    const spans = await spansOn(tracer, server.port, 2);
    const getBody = JSON.stringify({ path: "/json", query: "m=get" });
    const headLen = JSON.stringify({ path: "/json", query: "m=head" }).length;
    expect(spans[0]!.name).toBe("HEAD /json");
    expect(spans[0]!.attributes).toMatchObject({
      "http.request.method": "HEAD",
      "url.query": "m=head",
      "http.response.status_code": 200,
      "http.response.header.content-length": String(headLen),
      "http.response.body.size": 0,
    });
    expect(spans[0]!.attributes["http.response.body"]).toBeUndefined();
    expect(spans[1]!.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.query": "m=get",
      "http.response.status_code": 200,
      "http.response.body": getBody,
      "http.response.body.size": getBody.length,
      "client.port": ports[0],
    });
  });

  test("204 No Content, then another request on the same connection", async () => {
    const { server, tracer } = await nodeAndTracer();
    const base = `http://127.0.0.1:${server.port}`;
    curlOk([`${base}/status/204`, `${base}/json?after=204`]);
    const spans = await spansOn(tracer, server.port, 2);
    expect(spans[0]!.attributes).toMatchObject({ "url.path": "/status/204", "http.response.status_code": 204, "http.response.body.size": 0 });
    expect(spans[0]!.attributes["http.response.body"]).toBeUndefined();
    expect(spans[0]!.error).toBe(false);
    expect(spans[1]!.attributes).toMatchObject({
      "url.path": "/json",
      "url.query": "after=204",
      "http.response.status_code": 200,
      "http.response.body": JSON.stringify({ path: "/json", query: "after=204" }),
      "client.port": spans[0]!.attributes["client.port"]!,
    });
  });

  test("conditional GET: 200 with ETag, then 304 Not Modified", async () => {
    const { server, tracer } = await nodeAndTracer();
    const url = `http://127.0.0.1:${server.port}/etag`;
    const r = curlOk(["-w", "<st:%{http_code}>", url, "--next", "-w", "<st:%{http_code}>", "-H", 'If-None-Match: "v1"', url]);
    expect(r.stdout).toBe('{"version":1}<st:200><st:304>');
    const spans = await spansOn(tracer, server.port, 2);
    expect(spans[0]!.attributes).toMatchObject({
      "http.response.status_code": 200,
      "http.response.header.etag": '"v1"',
      "http.response.body": '{"version":1}',
      "http.response.body.size": 13,
    });
    expect(spans[0]!.attributes["http.request.header.if-none-match"]).toBeUndefined();
    expect(spans[1]!.attributes).toMatchObject({
      "http.request.header.if-none-match": '"v1"',
      "http.response.status_code": 304,
      "http.response.header.etag": '"v1"',
      "http.response.body.size": 0,
    });
    expect(spans[1]!.attributes["http.response.body"]).toBeUndefined();
    expect(spans[1]!.error).toBe(false);
  });

  test("4xx and 5xx: status and error flag of server spans", async () => {
    const { server, tracer } = await nodeAndTracer();
    const base = `http://127.0.0.1:${server.port}`;
    curlOk([`${base}/status/404`, `${base}/status/503`]);
    const spans = await spansOn(tracer, server.port, 2);
    expect(spans.map((s) => [s.attributes["http.response.status_code"], s.error, s.attributes["http.response.body"]])).toEqual([
      [404, false, "status 404"],
      [503, true, "status 503"],
    ]);
  });
});

describe.skipIf(!!SKIP)("HTTP/1 capture: nginx (--exe nginx)", () => {
  const block = (p: number, dir: string) =>
    `server { listen 127.0.0.1:${p}; root ${dir}/www; location = /empty { return 204; } }`;

  /** startNginx's prefix is a 0700 mkdtemp dir; the workers (user nobody) must be able to read www/. */
  async function nginx() {
    const ng = c.add(await startNginx(block), stopNginx);
    chmodSync(ng.dir, 0o755);
    return ng;
  }

  function expectWorkerSpan(s: SpanJson, masterPid: number): void {
    const pid = s.attributes["process.pid"] as number;
    expect(pid).not.toBe(masterPid);
    expect(ppidOf(pid)).toBe(masterPid); // a worker, child of the master
    expect(s.attributes).toMatchObject({ "process.executable.name": "nginx", "process.executable.path": "/usr/sbin/nginx" });
    expect(s.resource["service.name"]).toBe("nginx");
  }

  test("started after the tracer (selected at exec): static file, 404 and return 204", async () => {
    const t = c.add(await TracerProcess.capture(["--exe", "nginx"]), (x) => x.stop());
    const ng = await nginx();
    const base = `http://127.0.0.1:${ng.port}`;
    const r = curlOk(["-w", LP, `${base}/data.json`, `${base}/missing.json`, `${base}/empty`]);
    const ports = curlLocalPorts(r);
    expect(new Set(ports).size).toBe(1);
    const spans = await spansOn(t, ng.port, 3);
    expect(spans.map((s) => [s.attributes["url.path"], s.attributes["http.response.status_code"]])).toEqual([
      ["/data.json", 200],
      ["/missing.json", 404],
      ["/empty", 204],
    ]);
    expect(spans[0]!.attributes).toMatchObject({
      "http.response.header.content-type": "application/json",
      "http.response.header.content-length": "17",
      "http.response.body": '{"items":[1,2,3]}',
      "http.response.body.size": 17,
      "client.port": ports[0],
    });
    expect(spans[0]!.attributes["http.response.header.server"]).toMatch(/^nginx\/1\./);
    expect(spans[1]!.attributes["http.response.header.content-type"]).toBe("text/html");
    expect(spans[1]!.attributes["http.response.body"]).toContain("<title>404 Not Found</title>");
    expect(spans[1]!.attributes["http.response.body.size"]).toBe(Number(spans[1]!.attributes["http.response.header.content-length"]));
    expect(spans[2]!.attributes["http.response.body.size"]).toBe(0);
    expect(spans[2]!.attributes["http.response.body"]).toBeUndefined();
    for (const s of spans) {
      expect(s.kind).toBe("server");
      expectWorkerSpan(s, ng.pid);
    }
  });

  test("started before the tracer (selected from /proc with its workers)", async () => {
    const ng = await nginx();
    const t = c.add(await TracerProcess.capture(["--exe", "nginx"]), (x) => x.stop());
    const r = curlOk([`http://127.0.0.1:${ng.port}/index.html?from=before`]);
    expect(r.stdout).toBe("<h1>hello</h1>\n");
    const [s] = await spansOn(t, ng.port, 1);
    expect(s!.attributes).toMatchObject({
      "url.path": "/index.html",
      "url.query": "from=before",
      "http.response.status_code": 200,
      "http.response.header.content-type": "text/html",
      "http.response.body": "<h1>hello</h1>\n",
      "http.response.body.size": 15,
    });
    expectWorkerSpan(s!, ng.pid);
  });
  test("a worker selected from /proc has its retitled command line, without the NUL padding", async () => {
    const ng = await nginx();
    const t = c.add(await TracerProcess.capture(["--exe", "nginx"]), (x) => x.stop());
    curlOk([`http://127.0.0.1:${ng.port}/data.json`]);
    const [s] = await spansOn(t, ng.port, 1);
    // nginx overwrites its argv with "nginx: worker process" and pads the old area with NULs.
    expect(JSON.stringify(s!.attributes["process.command_line"])).toBe(JSON.stringify("nginx: worker process"));
  });
});

describe.skipIf(!!SKIP)("HTTP/1 capture: egress (--exe curl --mode egress)", () => {
  test("curl's request is a client span; the unselected server produces none", async () => {
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--exe", "curl", "--mode", "egress", "--log-level", "info"]), (x) => x.stop());
    const r = Bun.spawnSync(["/usr/bin/curl", "-sS", "-w", LP, `http://127.0.0.1:${server.port}/json?side=client`], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    const [lp] = curlLocalPorts({ code: 0, stdout: r.stdout.toString(), stderr: "" });
    const [s] = await spansOn(t, server.port, 1);
    expect(s!.kind).toBe("client");
    expect(s!.name).toBe("GET /json");
    expect(s!.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.query": "side=client",
      "http.response.status_code": 200,
      "server.address": "127.0.0.1",
      "server.port": server.port,
      "client.address": "127.0.0.1",
      "client.port": lp,
      "network.peer.address": "127.0.0.1",
      "network.peer.port": server.port,
      "http.response.body": JSON.stringify({ path: "/json", query: "side=client" }),
      "process.pid": r.pid,
      "process.executable.name": "curl",
    });
    await Bun.sleep(300);
    await t.stop();
    const forPort = t.spans.filter(onPort(server.port));
    expect(forPort.map((x) => x.kind)).toEqual(["client"]);
    expect(forPort.every((x) => x.attributes["process.pid"] !== server.pid)).toBe(true);
  });

  test("a short-lived curl started after the tracer is captured whole, with its command line", async () => {
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--exe", "curl", "--mode", "egress"]), (x) => x.stop());
    const body = JSON.stringify({ rows: Array.from({ length: 300 }, (_, i) => ({ id: i, label: `row-${i}` })) });
    expect(body.length).toBeGreaterThan(8192); // more than one kernel data chunk
    const url = `http://127.0.0.1:${server.port}/echo?whole=1`;
    const r = run(["/usr/bin/curl", "-sS", url, "-H", "Expect:", "-H", "Content-Type: application/json", "--data-binary", body]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(body);
    const [s] = await spansOn(t, server.port, 1);
    expect(s!.kind).toBe("client");
    expect(s!.attributes).toMatchObject({
      "http.request.method": "POST",
      "url.path": "/echo",
      "url.query": "whole=1",
      "http.request.body": body,
      "http.request.body.size": body.length,
      "http.response.status_code": 200,
      "http.response.body": body,
      "http.response.body.size": body.length,
      "process.executable.name": "curl",
      "process.executable.path": "/usr/bin/curl",
    });
    expect(s!.attributes["process.command_line"]).toContain(url);
    expect(s!.attributes["ebpf.partial"]).toBeUndefined();
    expect(s!.attributes["ebpf.response.missing"]).toBeUndefined();
    expect(s!.attributes["http.request.body.truncated"]).toBeUndefined();
  });
});
