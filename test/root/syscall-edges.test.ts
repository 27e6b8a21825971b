/**
 * Root integration tests of syscalls whose byte counts are not their return value, or that move
 * no bytes: sendmmsg/recvmmsg (a message count; the stream advances by the msg_len sum) and
 * recv with MSG_PEEK (the bytes come again with the real read). Each would shift every later
 * stream position on the connection, so the spans below must be exact, one per request. And a
 * socket whose first bytes are a TLS record: marked in the kernel, its ciphertext never copied.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ROOT, rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { port, waitForPort } from "../support/servers.ts";
import { Cleanups, curlOk, exitStats, run } from "../support/http-kit.ts";
import { makeTestCerts, removeTestCerts } from "../support/certs.ts";
import { decodeEvent, type ConnEvent, type DataEvent, type TracerEvent } from "../../src/kernel/event-decoder.ts";
import { CONN_F_NOCOPY, CONN_F_TLS, DATA_FLAG_LAST, DATA_FLAG_TLS, DIR_RECV, LAYER_SOCKET, MODE_BOTH } from "../../src/kernel/event-layout.ts";
import { KernelTracer } from "../../src/kernel/tracer.ts";
import { connect } from "node:net";

setDefaultTimeout(60_000);

const SKIP = rootSkipReason() ?? (Bun.which("cc") ? undefined : "needs a C compiler (cc) for test/fixtures/servers/mmsg-http.c");
if (SKIP) console.warn(`test/root/syscall-edges.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

/** A Python server from test/fixtures/servers/ on a fresh port, and a capture of it. */
async function capturedFixture(script: string): Promise<{ p: number; t: TracerProcess }> {
  const p = port();
  const srv = Bun.spawn(["/usr/bin/python3", resolve(ROOT, "test/fixtures/servers", script), String(p)], { stdout: "ignore", stderr: "pipe" });
  c.add(srv, (x) => x.kill("SIGKILL"));
  await waitForPort(p);
  const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid), "--log-level", "info"]), (x) => x.stop());
  return { p, t };
}

function byPath(spans: SpanJson[]): Record<string, SpanJson> {
  return Object.fromEntries(spans.map((s) => [String(s.attributes["url.path"]), s]));
}

describe.skipIf(!!SKIP)("sendmmsg / recvmmsg", () => {
  test("three requests and responses in one call each, then a plain exchange: every span exact, on both ends", async () => {
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-mmsg-")), (d) => rmSync(d, { recursive: true, force: true }));
    const bin = join(dir, "mmsg-http");
    const cc = run(["cc", "-O2", "-o", bin, resolve(ROOT, "test/fixtures/servers/mmsg-http.c")]);
    expect(cc.stderr).toBe("");
    const t = c.add(await TracerProcess.capture(["--exe", "mmsg-http", "--mode", "ingress_and_egress", "--log-level", "info"]), (x) => x.stop());
    const p = port();
    const r = run([bin, String(p)]);
    expect(r.stdout.trim()).toBe("ok");

    const onPort = (kind: "server" | "client") => (s: SpanJson) => s.kind === kind && s.attributes["server.port"] === p;
    const server = await t.waitForSpans(4, onPort("server"));
    const client = await t.waitForSpans(4, onPort("client"));
    for (const spans of [server, client]) {
      expect(spans.map((s) => s.name).sort()).toEqual(["GET /after", "GET /m1", "GET /m3", "POST /m2"]);
      const s = byPath(spans);
      expect(s["/m1"]!.attributes).toMatchObject({ "http.response.status_code": 200, "http.response.body": "one!!", "http.response.body.size": 5 });
      expect(s["/m2"]!.attributes).toMatchObject({
        "http.request.method": "POST", "http.request.body": "hello mmsg", "http.request.body.size": 10,
        "http.response.status_code": 201, "http.response.body": "two!!!!",
      });
      expect(s["/m3"]!.attributes).toMatchObject({ "url.query": "x=3", "http.response.status_code": 404, "http.response.body": "three!!!!" });
      expect(s["/after"]!.attributes).toMatchObject({ "http.response.status_code": 200, "http.response.body": "after" });
      for (const x of spans) {
        expect(x.attributes["ebpf.partial"]).toBeUndefined();
        expect(x.attributes["http.request.header.host"]).toBe("mmsg");
      }
    }
    await t.stop();
    expect(exitStats(t.stderr)).toMatchObject({ ReqParsingErrors: 0, ResParsingErrors: 0, LostBytes: 0, TruncatedBytes: 0, SpansEmitted: 8 });
  });
});

describe.skipIf(!!SKIP)("readv / writev", () => {
  test("requests read with readv into small buffers, responses written with writev of 3, 8 and 12 segments and one past a chunk: every body exact", async () => {
    const { p, t } = await capturedFixture("iov-server.py");
    const paths = ["/few", "/eight", "/many", "/big", "/few"];
    const digits = (n: number) => Array.from({ length: n }, (_, i) => String(i % 10)).join("");
    const want: Record<string, string> = { "/few": digits(5), "/eight": digits(40), "/many": digits(60), "/big": digits(20000) };
    const r = curlOk(paths.map((u) => `http://127.0.0.1:${p}${u}?q=${u.slice(1)}`));
    expect(r.stdout).toBe(paths.map((u) => want[u]).join(""));
    await t.waitForSpans(5, (s) => s.attributes["server.port"] === p);
    await Bun.sleep(300);
    const spans = t.spans.filter((s) => s.attributes["server.port"] === p);
    expect(spans.map((s) => [s.name, s.attributes["url.query"], s.attributes["http.response.status_code"], s.attributes["http.response.body"], s.attributes["http.response.body.size"]])).toEqual(
      paths.map((u) => [`GET ${u}`, `q=${u.slice(1)}`, 200, want[u], want[u]!.length]),
    );
    for (const s of spans) expect(s.attributes["ebpf.partial"]).toBeUndefined();
    await t.stop();
    expect(exitStats(t.stderr)).toMatchObject({ ReqParsingErrors: 0, ResParsingErrors: 0, LostBytes: 0, TruncatedBytes: 0 });
  });
});

describe.skipIf(!!SKIP)("MSG_PEEK", () => {
  test("a server that peeks (recv and recvmsg) before each read: one span per request, no bytes twice", async () => {
    const { p, t } = await capturedFixture("peek-server.py");
    const urls = ["/one", "/two?a=b", "/three", "/four"].map((u) => `http://127.0.0.1:${p}${u}`);
    const r = curlOk(urls);
    expect(r.stdout).toBe("you asked for /oneyou asked for /two?a=byou asked for /threeyou asked for /four");
    const spans = await t.waitForSpans(4, (s) => s.attributes["server.port"] === p);
    await Bun.sleep(300); // a duplicate would come right after
    const all = t.spans.filter((s) => s.attributes["server.port"] === p);
    expect(all.map((s) => s.name)).toEqual(["GET /one", "GET /two", "GET /three", "GET /four"]);
    for (const s of spans) {
      expect(s.attributes["http.response.status_code"]).toBe(200);
      expect(String(s.attributes["http.response.body"])).toBe(`you asked for ${s.attributes["url.path"]}${s.attributes["url.query"] ? "?" + s.attributes["url.query"] : ""}`);
      expect(s.attributes["ebpf.partial"]).toBeUndefined();
    }
    await t.stop();
    expect(exitStats(t.stderr)).toMatchObject({ ReqParsingErrors: 0, ResParsingErrors: 0, LostBytes: 0, SpansEmitted: 4 });
  });
});

describe.skipIf(!!SKIP)("TLS on a plain socket", () => {
  test("the kernel marks the connection TLS at its first bytes: one zero-length DATA_FLAG_TLS event, no ciphertext copied, positions counted", async () => {
    const certs = c.add(makeTestCerts(), removeTestCerts);
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-tls-")), (d) => rmSync(d, { recursive: true, force: true }));
    writeFileSync(join(dir, "hello.txt"), "hello over tls\n");
    const p = port();
    const script = [
      "import http.server, ssl, sys",
      "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)",
      `ctx.load_cert_chain(${JSON.stringify(certs.server.cert)}, ${JSON.stringify(certs.server.key)})`,
      `srv = http.server.HTTPServer(("127.0.0.1", ${p}), http.server.SimpleHTTPRequestHandler)`,
      "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)",
      "srv.serve_forever()",
    ].join("\n");
    const srv = Bun.spawn(["/usr/bin/python3", "-c", script], { cwd: dir, stdout: "ignore", stderr: "ignore" });
    c.add(srv, (x) => x.kill("SIGKILL"));
    await waitForPort(p);
    const rec = join(dir, "events.rec");
    // The socket layer alone: with uprobes the plaintext would also arrive (test/root/tls.test.ts).
    writeFileSync(join(dir, "no-uprobes.yaml"), "enable_uprobes: false\n");
    const t = c.add(await TracerProcess.capture(["-c", join(dir, "no-uprobes.yaml"), "--pid", String(srv.pid), "--record", rec]), (x) => x.stop());
    const r = curlOk(["--cacert", certs.ca.cert, `https://127.0.0.1:${p}/hello.txt`]);
    expect(r.stdout).toBe("hello over tls\n");
    await Bun.sleep(500);
    await t.stop();

    const events = decodeRecording(readFileSync(rec));
    const open = events.filter((e): e is ConnEvent => e.kind === "open" && e.localPort === p);
    expect(open).toHaveLength(1);
    const id = open[0]!.connId;
    const data = events.filter((e): e is DataEvent => e.kind === "data" && e.connId === id);
    const close = events.filter((e): e is ConnEvent => e.kind === "close" && e.connId === id);
    // the ClientHello the server read: the only data event, empty, its bytes skipped
    expect(data).toHaveLength(1);
    expect(data[0]).toMatchObject({ layer: LAYER_SOCKET, dir: DIR_RECV, pos: 0, flags: DATA_FLAG_LAST | DATA_FLAG_TLS });
    expect(data[0]!.data.length).toBe(0);
    expect(data[0]!.skipped).toBe(data[0]!.callBytes);
    expect(close).toHaveLength(1);
    expect(close[0]!.flags & CONN_F_TLS).toBe(CONN_F_TLS);
    // positions still advanced over the whole exchange (handshake and records both ways)
    expect(close[0]!.recv).toBeGreaterThan(data[0]!.callBytes);
    expect(close[0]!.sent).toBeGreaterThan(500);
    expect(close[0]).toMatchObject({ tlsSent: 0, tlsRecv: 0 });
    expect(t.spans.filter((s) => s.attributes["server.port"] === p)).toEqual([]);
  });
});

function decodeRecording(bytes: Uint8Array): TracerEvent[] {
  const out: TracerEvent[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let off = 0; off + 4 <= bytes.length;) {
    const n = dv.getUint32(off, true);
    const e = decodeEvent(bytes.slice(off + 4, off + 4 + n));
    if (e) out.push(e);
    off += 4 + n;
  }
  return out;
}

/** python's http.server on a fresh port, selected in a KernelTracer of this process, and a pump
 * that collects its events (data copied out of the ring) until a condition holds or 10 s pass. */
async function pythonUnderKernel(name: string) {
  const dir = c.add(mkdtempSync(join(tmpdir(), `et-${name}-`)), (d) => rmSync(d, { recursive: true, force: true }));
  writeFileSync(join(dir, "hello.json"), '{"hello":"world"}');
  const p = port();
  const srv = Bun.spawn(["/usr/bin/python3", "-m", "http.server", String(p), "--bind", "127.0.0.1"], { cwd: dir, stdout: "ignore", stderr: "ignore" });
  c.add(srv, (x) => x.kill("SIGKILL"));
  await waitForPort(p);
  const k = c.add(await KernelTracer.start({ ringbufBytes: 1 << 22, maxCapturePerCall: 0, captureAllMode: 0, notifyAllExec: false }), (x) => x.close());
  expect(k.setPid(srv.pid!, MODE_BOTH)).toBe(0);
  const events: TracerEvent[] = [];
  const pump = async (until: () => boolean) => {
    const deadline = Date.now() + 10_000;
    while (!until() && Date.now() < deadline) {
      k.source.drain((b, at, len) => {
        const e = decodeEvent(b.subarray(at, at + len));
        if (e) events.push(e.kind === "data" ? { ...e, data: e.data.slice() } : e);
      }, 1000);
      await Bun.sleep(10);
    }
  };
  return { p, pid: srv.pid!, k, events, pump };
}

describe.skipIf(!!SKIP)("per-connection flags from user space", () => {
  test("CONN_F_NOCOPY through KernelTracer.setConnFlags: no data events, positions still in the close event", async () => {
    const { p, k, events, pump } = await pythonUnderKernel("nocopy");
    const sock = connect({ host: "127.0.0.1", port: p });
    let got = "";
    sock.on("data", (d) => (got += d.toString("latin1")));
    const ended = new Promise((res) => sock.on("close", res));
    await pump(() => events.some((e) => e.kind === "open" && e.localPort === p));
    const open = events.find((e): e is ConnEvent => e.kind === "open" && e.localPort === p)!;
    expect(open).toBeDefined();
    expect(k.setConnFlags(open.connId, CONN_F_NOCOPY)).toBe(0);
    const req = "GET /hello.json HTTP/1.0\r\nHost: nocopy\r\n\r\n";
    sock.write(req);
    await ended;
    expect(got).toEndWith('{"hello":"world"}');
    await pump(() => events.some((e) => e.kind === "close" && e.connId === open.connId));
    const close = events.find((e): e is ConnEvent => e.kind === "close" && e.connId === open.connId);
    expect(events.filter((e) => e.kind === "data" && e.connId === open.connId)).toEqual([]);
    expect(close).toMatchObject({ recv: req.length, sent: got.length, flags: CONN_F_NOCOPY, tlsRecv: 0, tlsSent: 0 });
    expect(k.counters().noCopyBytes).toBe(req.length + got.length);
  });
});

describe.skipIf(!!SKIP)("ignoring a connection user space does not want", () => {
  test("KernelTracer.ignoreConn names the connection: once its fd is closed and reused, the newer connection on it is left alone", async () => {
    const { p, pid, k, events, pump } = await pythonUnderKernel("ignore");
    const opens = () => events.filter((e): e is ConnEvent => e.kind === "open" && e.localPort === p);
    /** One HTTP/1.0 exchange on a new connection; `beforeRequest` runs once the kernel announced it. */
    const exchange = async (beforeRequest: (open: ConnEvent) => void): Promise<ConnEvent> => {
      const n = opens().length;
      const sock = connect({ host: "127.0.0.1", port: p });
      let got = "";
      sock.on("data", (d) => (got += d.toString("latin1")));
      const ended = new Promise((res) => sock.on("close", res));
      await pump(() => opens().length > n);
      const open = opens()[n]!;
      expect(open).toBeDefined();
      beforeRequest(open);
      sock.write("GET /hello.json HTTP/1.0\r\nHost: ignore\r\n\r\n");
      await ended;
      expect(got).toEndWith('{"hello":"world"}');
      await pump(() => events.some((e) => e.kind === "close" && e.connId === open.connId));
      return open;
    };
    const dataOf = (id: number) => events.filter((e): e is DataEvent => e.kind === "data" && e.connId === id);
    const a = await exchange(() => {});
    expect(dataOf(a.connId).length).toBeGreaterThan(0);
    // The server's next connection gets the fd `a` had: asking late to ignore `a` (as user space
    // does when it reads a's events after the fact) must not silence `b`.
    const b = await exchange((open) => {
      expect(open.fd).toBe(a.fd);
      k.ignoreConn(pid, a.fd, a.connId);
    });
    expect(dataOf(b.connId).length).toBeGreaterThan(0);
    // and ignoring a connection by its own id does stop its data
    const d = await exchange((open) => k.ignoreConn(pid, open.fd, open.connId));
    expect(dataOf(d.connId)).toEqual([]);
  });
});

describe.skipIf(!!SKIP)("BPF run time for the overhead budget", () => {
  test("KernelTracer.bpfRunTimeNs: 0 while kernel.bpf_stats_enabled is 0, growing with the traced calls while it is 1", async () => {
    const sysctl = "/proc/sys/kernel/bpf_stats_enabled";
    const before = readFileSync(sysctl, "utf8").trim();
    c.add(before, (v) => writeFileSync(sysctl, v));
    writeFileSync(sysctl, "0");
    const k = c.add(await KernelTracer.start({ ringbufBytes: 1 << 22, maxCapturePerCall: 0, captureAllMode: 0, notifyAllExec: false }), (x) => x.close());
    const p = port();
    const srv = Bun.spawn(["/usr/bin/python3", "-m", "http.server", String(p), "--bind", "127.0.0.1"], { stdout: "ignore", stderr: "ignore" });
    c.add(srv, (x) => x.kill("SIGKILL"));
    await waitForPort(p);
    expect(k.setPid(srv.pid!, MODE_BOTH)).toBe(0);
    const drain = () => k.source.drain(() => {}, 100_000);
    curlOk([`http://127.0.0.1:${p}/`]);
    drain();
    expect(k.bpfRunTimeNs()).toBe(0n);
    writeFileSync(sysctl, "1");
    curlOk([`http://127.0.0.1:${p}/`, `http://127.0.0.1:${p}/`]);
    drain();
    const on = k.bpfRunTimeNs();
    expect(on).toBeGreaterThan(0n);
    curlOk([`http://127.0.0.1:${p}/`]);
    drain();
    expect(k.bpfRunTimeNs()).toBeGreaterThan(on);
  });
});
