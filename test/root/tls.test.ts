/**
 * Root integration tests of TLS plaintext capture (issue 10, docs/tls.md) through the compiled
 * binary: real TLS servers and clients on loopback, the agent started before each server unless a
 * test says otherwise. Each test checks exact method, path, status and body; that no span holds
 * TLS record bytes; that ciphertext was counted and not copied (TlsCiphertextBytesNotCopied); and,
 * after the agent stopped, that none of its uprobe programs or links remain.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { port, startNginx, waitForPort } from "../support/servers.ts";
import { CHUNKED_BODY, Cleanups, curlLocalPorts, curlOk, exitStats, logRecords, NODE_APP, onPort, run, stopNginx } from "../support/http-kit.ts";
import { makeTestCerts, removeTestCerts, type TestCerts } from "../support/certs.ts";
import { loadedProgIds, ownedProgIds } from "../support/bpf-progs.ts";
import { buildGo, goSkipReason } from "../fixtures/go/build.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/tls.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());
let certs: TestCerts;
let work: string;
beforeAll(() => {
  if (SKIP) return;
  certs = makeTestCerts();
  work = mkdtempSync(join(tmpdir(), "et-tls-"));
  writeFileSync(join(work, "post.bin"), "p".repeat(65536));
});
afterAll(() => {
  if (certs) removeTestCerts(certs);
  if (work) rmSync(work, { recursive: true, force: true });
});

const LP = "<lp:%{local_port}>";
const PY = "/usr/bin/python3";
/** TLS record headers (handshake / application data): never in a span. */
const CIPHERTEXT = [/\u0016\u0003[\u0000-\u0004]/, /\u0017\u0003[\u0000-\u0004]/];

async function agent(args: string[]): Promise<TracerProcess> {
  return c.add(await TracerProcess.capture([...args, "--mode", "ingress_and_egress", "--log-level", "info"]), (t) => t.stop());
}

/** Stops the agent, then checks the kernel counters and that no TLS program or link is left. */
async function stopAndCheck(t: TracerProcess): Promise<Record<string, number>> {
  // The agent's own programs, by id: other agents on the machine (a second test run) load
  // programs of the same names, so names alone cannot say whether this one cleaned up.
  const ours = ownedProgIds(t.proc.pid);
  expect(ours.size).toBeGreaterThan(0);
  expect(await t.stop()).toBe(0);
  const stats = exitStats(t.stderr);
  expect(stats).toBeDefined();
  expect(stats!.TlsCiphertextBytesNotCopied).toBeGreaterThan(0);
  for (const s of t.spans) {
    const text = JSON.stringify(s.attributes);
    for (const re of CIPHERTEXT) expect(re.test(text)).toBe(false);
  }
  // capture hands the last detach to a background process (KernelTracer.handOffLinks): wait for it.
  let left: number[] = [];
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await Bun.sleep(200)) {
    left = loadedProgIds(ours);
    if (left.length === 0) break;
  }
  expect(left).toEqual([]);
  const events = existsSync("/sys/kernel/tracing/uprobe_events") ? readFileSync("/sys/kernel/tracing/uprobe_events", "utf8") : "";
  expect(events).not.toContain("ebpf_tracer");
  return stats!;
}

/**
 * Waits for a log record whose msg matches. A TLS stack inside an executable (node, Go) is probed
 * when user space has read the exec event and analysed the file (tens to hundreds of ms), not
 * before the process's first instruction as libraries of the loader cache are.
 */
async function waitForLog(t: TracerProcess, re: RegExp, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!logRecords(t.stderr).some((r) => re.test(String(r.msg)) || re.test(JSON.stringify(r)))) {
    if (Date.now() > deadline) throw new Error(`no log record matching ${re}: ${t.stderr.slice(-2000)}`);
    await Bun.sleep(50);
  }
}

/** A config file that sets bpf.thread_state (the rest default). */
function threadStateConfig(state: string): string {
  const path = join(work, `thread-state-${state}.yaml`);
  writeFileSync(path, `bpf:\n  thread_state: ${state}\n`);
  return path;
}

/** Names of the BPF maps loaded on the machine. */
function bpfMapNames(): string[] {
  const r = run(["bpftool", "-j", "map", "list"]);
  return (JSON.parse(r.stdout) as { name?: string }[]).map((m) => m.name ?? "");
}

/** The spans of `port`, of one kind, by name. */
function byName(spans: SpanJson[], kind: string): Map<string, SpanJson[]> {
  const m = new Map<string, SpanJson[]>();
  for (const s of spans) if (s.kind === kind) m.set(s.name, [...(m.get(s.name) ?? []), s]);
  return m;
}

/**
 * The standard exchange set on one server: two keep-alive GETs of `getPath` (one connection), a
 * 64 KiB POST to `postPath`, a chunked GET of `chunkPath`; checks the spans of `kind`.
 */
function expectStandard(spans: SpanJson[], kind: "server" | "client", o: { getPath: string; getBody: string; postPath: string; postStatus: number; postBody?: string; chunkPath: string; chunkBody: string; library?: string; correlation?: string }): void {
  const m = byName(spans, kind);
  const gets = m.get(`GET ${o.getPath}`) ?? [];
  expect(gets.length).toBeGreaterThanOrEqual(2);
  for (const s of gets) {
    expect(s.attributes).toMatchObject({ "http.request.method": "GET", "url.path": o.getPath, "http.response.status_code": 200, "url.scheme": "https", "http.response.body": o.getBody });
    if (o.library) expect(s.attributes["ebpf.tls.library"]).toBe(o.library);
    if (o.correlation) expect(s.attributes["ebpf.tls.correlation"]).toBe(o.correlation);
  }
  const [post] = m.get(`POST ${o.postPath}`) ?? [];
  expect(post?.attributes).toMatchObject({ "http.request.method": "POST", "http.response.status_code": o.postStatus, "http.request.body.size": 65536 });
  if (o.postBody !== undefined) expect(post!.attributes["http.response.body"]).toBe(o.postBody);
  const [chunk] = m.get(`GET ${o.chunkPath}`) ?? [];
  expect(chunk?.attributes).toMatchObject({ "http.response.status_code": 200, "http.response.body": o.chunkBody, "http.response.header.transfer-encoding": "chunked" });
  // every span of the set names its library, a short-lived client's too (credited at its mmap)
  if (o.library) expect([post, chunk].map((s) => s!.attributes["ebpf.tls.library"])).toEqual([o.library, o.library]);
}

/** curl against `base`: keep-alive GETs and the chunked GET on one connection, then the POST. */
function curlStandard(base: string, getPath: string, chunkPath: string, postPath: string): void {
  const r = curlOk(["-k", "-w", LP, `${base}${getPath}`, `${base}${getPath}`, `${base}${chunkPath}`]);
  expect(new Set(curlLocalPorts(r)).size).toBe(1); // keep-alive: one connection
  curlOk(["-k", "--data-binary", `@${join(work, "post.bin")}`, "-H", "Content-Type: text/plain", `${base}${postPath}`]);
}

const PY_SERVER = String.raw`
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, status, body, chunked=False):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
            for part in (b'{"items":[', b'1,2,', b'3,4', b']}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part)); self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/chunked": return self.reply(200, b"", True)
        self.reply(200, b'{"hello":"tls"}')
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); d = self.rfile.read(n)
        self.reply(201, ('{"received":%d}' % len(d)).encode())
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
`;

async function startPyTls(): Promise<{ pid: number; port: number }> {
  const p = port();
  writeFileSync(join(work, "srv.py"), PY_SERVER);
  const proc = c.add(Bun.spawn([PY, join(work, "srv.py"), String(p), certs.server.cert, certs.server.key], { stdout: "ignore", stderr: "inherit" }), (x) => x.kill("SIGKILL"));
  await waitForPort(p);
  return { pid: proc.pid, port: p };
}

const PY_STANDARD = { getPath: "/a", getBody: '{"hello":"tls"}', postPath: "/upload", postStatus: 201, postBody: '{"received":65536}', chunkPath: "/chunked", chunkBody: CHUNKED_BODY };

describe.skipIf(!!SKIP)("TLS capture (uprobes)", () => {
  test("nginx HTTPS driven by curl: nginx server spans and curl client spans (OpenSSL, exact)", async () => {
    const t = await agent(["--exe", "nginx", "--exe", "curl"]);
    const ng = c.add(await startNginx((p, dir) => {
      writeFileSync(join(dir, "www", "chunked.json"), CHUNKED_BODY);
      return `server {
    listen 127.0.0.1:${p} ssl;
    ssl_certificate ${certs.server.cert};
    ssl_certificate_key ${certs.server.key};
    keepalive_requests 100;
    location / { root ${dir}/www; }
    location = /chunked.json { root ${dir}/www; sub_filter 'NEVER' 'never'; sub_filter_types application/json; }
    location = /upload { client_max_body_size 1m; client_body_buffer_size 128k; default_type application/json; return 201 '{"ok":true}'; }
  }`;
    }), stopNginx);
    curlStandard(`https://127.0.0.1:${ng.port}`, "/data.json", "/chunked.json", "/upload");
    const want = { getPath: "/data.json", getBody: JSON.stringify({ items: [1, 2, 3] }), postPath: "/upload", postStatus: 201, postBody: '{"ok":true}', chunkPath: "/chunked.json", chunkBody: CHUNKED_BODY, library: "openssl", correlation: "exact" };
    await t.waitForSpans(8, onPort(ng.port), 15_000);
    const spans = t.spans.filter(onPort(ng.port));
    expectStandard(spans, "server", want);
    expectStandard(spans, "client", want);
    const server = spans.find((s) => s.kind === "server")!;
    expect(server.attributes["client.address"]).toBe("127.0.0.1");
    expect(server.attributes["process.executable.name"]).toBe("nginx");
    await stopAndCheck(t);
    // the coverage log line of an nginx process
    expect(logRecords(t.stderr).some((r) => /^TLS capture for nginx\[\d+\]: openssl .*libssl\.so\.3, decrypting/.test(String(r.msg)))).toBe(true);
  }, 60_000);

  test.each(["auto", "hash"])("nginx HTTPS: every ciphertext byte on the wire is counted once (socket syscalls inside TLS calls, kept on the call; bpf.thread_state %s)", async (state) => {
    // The client is not selected and does its TLS through a memory BIO, so it counts exactly what
    // crossed the socket; the agent selects nginx alone, whose socket syscalls inside SSL_read /
    // SSL_write take the kernel's shortcut once the SSL*'s socket is known (docs/tls.md §3): their
    // bytes must all reach the counter (and the connection's stream positions) at the call's return.
    // Both places a thread's TLS state can live: task storage (auto, on this kernel) and the hash.
    const t = await agent(["-c", threadStateConfig(state), "--exe", "nginx"]);
    expect(bpfMapNames()).toContain(state === "hash" ? "tls_threads" : "tls_task");
    const ng = c.add(await startNginx((p, dir) => {
      writeFileSync(join(dir, "www", "page.txt"), "x".repeat(3000));
      return `server {
    listen 127.0.0.1:${p} ssl;
    ssl_certificate ${certs.server.cert};
    ssl_certificate_key ${certs.server.key};
    keepalive_requests 1000;
    location / { root ${dir}/www; }
    location = /upload { client_max_body_size 1m; client_body_buffer_size 128k; default_type text/plain; return 201 'ok'; }
  }`;
    }), stopNginx);
    writeFileSync(join(work, "bio-client.py"), String.raw`
import socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
o = ctx.wrap_bio(inc, out, server_hostname="localhost")
sent = recv = 0
def flush():
    global sent
    d = out.read()
    if d:
        s.sendall(d); sent += len(d)
def fill():
    global recv
    d = s.recv(65536)
    if not d:
        raise EOFError
    recv += len(d); inc.write(d)
while True:
    try:
        o.do_handshake(); break
    except ssl.SSLWantReadError:
        flush(); fill()
flush()
buf = b""
def response():
    global buf
    while b"\r\n\r\n" not in buf:
        try:
            buf += o.read(65536)
        except ssl.SSLWantReadError:
            fill()
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(rest) < n:
        try:
            rest += o.read(65536)
        except ssl.SSLWantReadError:
            fill()
    buf = rest[n:]
    return head.split(b" ")[1]
codes = []
for i in range(30):
    o.write(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n"); flush(); codes.append(response())
o.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n" + b"p" * 65536); flush(); codes.append(response())
o.write(b"GET /page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); flush(); codes.append(response())
try:
    while True:
        fill()
except (EOFError, ConnectionError):
    pass
s.close()
print(sent, recv, b",".join(sorted(set(codes))).decode())
`);
    const r = run([PY, join(work, "bio-client.py"), String(ng.port)]);
    expect(r.stderr).toBe("");
    const [sent, recv, codes] = r.stdout.trim().split(" ");
    expect(codes).toBe("200,201");
    await t.waitForSpans(32, onPort(ng.port), 15_000);
    const spans = t.spans.filter(onPort(ng.port));
    expect(spans.filter((s) => s.name === "GET /page.txt" && s.attributes["http.response.body.size"] === 3000).length).toBe(31);
    expect(spans.filter((s) => s.name === "POST /upload" && s.attributes["http.request.body.size"] === 65536).length).toBe(1);
    const stats = await stopAndCheck(t);
    // nginx received what the client sent and sent what it received, handshake and close_notify
    // included: each byte counted once, whichever path its syscall took.
    expect(stats.TlsCiphertextBytesNotCopied).toBe(Number(sent) + Number(recv));
    expect(stats.TlsCallsUntracked).toBe(0);
  }, 60_000);

  test("Python http.server wrapped in ssl, driven by curl (server spans)", async () => {
    const t = await agent(["--exe", "python3"]);
    const py = await startPyTls();
    curlStandard(`https://127.0.0.1:${py.port}`, "/a", "/chunked", "/upload");
    await t.waitForSpans(4, onPort(py.port), 15_000);
    expectStandard(t.spans.filter(onPort(py.port)), "server", { ...PY_STANDARD, library: "openssl", correlation: "exact" });
    await stopAndCheck(t);
  }, 60_000);

  test("a Python client that imports ssl only after the agent started (egress)", async () => {
    const py = await startPyTls(); // not selected: only the client is
    const t = await agent(["--exe", "python3.11", "--exe", "python3"]);
    writeFileSync(join(work, "client.py"), String.raw`
import sys, time
time.sleep(0.5)
import ssl, http.client
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
for path in ("/a", "/a", "/chunked"):
    c.request("GET", path); r = c.getresponse(); print(r.status, r.read().decode())
c.request("POST", "/upload", body=b"p" * 65536, headers={"Content-Type": "text/plain"}); r = c.getresponse(); print(r.status, r.read().decode())
`);
    const r = run([PY, join(work, "client.py"), String(py.port)]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('201 {"received":65536}');
    await t.waitForSpans(4, (s) => onPort(py.port)(s) && s.kind === "client", 15_000);
    expectStandard(t.spans.filter(onPort(py.port)), "client", { ...PY_STANDARD, library: "openssl", correlation: "exact" });
    await stopAndCheck(t);
  }, 60_000);

  test.each(["auto", "hash"])("Python asyncio TLS server (memory BIO): spans with correlation inferred (bpf.thread_state %s)", async (state) => {
    const t = await agent(["-c", threadStateConfig(state), "--exe", "python3"]);
    const p = port();
    writeFileSync(join(work, "aio.py"), String.raw`
import asyncio, ssl, sys
async def handle(r, w):
    while True:
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"): n = int(line.split(b":")[1])
        body = await r.readexactly(n) if n else b""
        msg = b'{"aio":%d}' % len(body)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(msg), msg))
        await w.drain()
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    s = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), ssl=ctx)
    async with s: await s.serve_forever()
asyncio.run(main())
`);
    c.add(Bun.spawn([PY, join(work, "aio.py"), String(p), certs.server.cert, certs.server.key], { stdout: "ignore", stderr: "inherit" }), (x) => x.kill("SIGKILL"));
    await waitForPort(p);
    curlOk(["-k", `https://127.0.0.1:${p}/x`, `https://127.0.0.1:${p}/x`]);
    const got = await t.waitForSpans(2, (s) => onPort(p)(s) && s.kind === "server", 15_000);
    expect(got.length).toBe(2);
    for (const s of got) {
      expect(s.attributes).toMatchObject({ "http.request.method": "GET", "url.path": "/x", "http.response.status_code": 200, "http.response.body": '{"aio":0}', "url.scheme": "https" });
      expect(["inferred", "exact"]).toContain(s.attributes["ebpf.tls.correlation"] as string);
    }
    expect(got.some((s) => s.attributes["ebpf.tls.correlation"] === "inferred")).toBe(true);
    await stopAndCheck(t);
  }, 60_000);

  test("Node https server and client (OpenSSL linked statically, exported SSL_*)", async () => {
    const t = await agent(["--exe", "node"]);
    const p = port();
    const app = NODE_APP.replace('const http = require("http");', `const http = require("https"); const fs = require("fs");`)
      .replace("http.createServer((req, res) =>", `http.createServer({ key: fs.readFileSync(${JSON.stringify(certs.server.key)}), cert: fs.readFileSync(${JSON.stringify(certs.server.cert)}) }, (req, res) =>`);
    writeFileSync(join(work, "server.js"), app);
    c.add(Bun.spawn(["/usr/bin/node", join(work, "server.js")], { env: { ...process.env, PORT: String(p) }, stdout: "ignore", stderr: "inherit" }), (x) => x.kill("SIGKILL"));
    await waitForPort(p);
    await waitForLog(t, /"msg":"TLS probes attached".*"path":"\/usr\/bin\/node"/);
    writeFileSync(join(work, "client.js"), String.raw`
const https = require("https");
const agent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
function req(method, path, body) {
  return new Promise((ok, fail) => {
    const r = https.request({ host: "127.0.0.1", port: Number(process.argv[2]), method, path, agent, headers: body ? { "Content-Type": "text/plain", "Content-Length": body.length } : {} }, (res) => {
      const parts = []; res.on("data", (d) => parts.push(d)); res.on("end", () => ok(res.statusCode + " " + Buffer.concat(parts)));
    });
    r.on("error", fail); if (body) r.write(body); r.end();
  });
}
(async () => {
  for (const [m, p, b] of [["GET", "/json"], ["GET", "/json"], ["GET", "/chunked"], ["POST", "/upload", "p".repeat(65536)]]) console.log(await req(m, p, b));
  agent.destroy();
})();
`);
    const r = run(["/usr/bin/node", join(work, "client.js"), String(p)]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('200 {"received":65536}');
    await t.waitForSpans(8, onPort(p), 15_000);
    const spans = t.spans.filter(onPort(p));
    const want = { getPath: "/json", getBody: JSON.stringify({ path: "/json", query: "" }), postPath: "/upload", postStatus: 200, postBody: '{"received":65536}', chunkPath: "/chunked", chunkBody: CHUNKED_BODY, library: "openssl", correlation: "inferred" };
    expectStandard(spans, "server", want);
    // The client logs each response to stdout (a socketpair under Bun.spawnSync) between its
    // requests: its next request must still be joined to the TLS connection, not to stdout.
    expectStandard(spans, "client", want);
    await stopAndCheck(t);
  }, 60_000);

  test.skipIf(!!goSkipReason())("Go 1.19 net/http TLS server and client: 10,000 requests, no crash (Read at its copy, Write's RETs)", async () => {
    const bin = buildGo("httpsecho");
    const t = await agent(["--exe", "httpsecho"]);
    // A paced run is captured whole: 10 GETs and 10 POSTs, server and client side.
    const small = Bun.spawnSync([bin, "-n", "20", "-wait", "3s"], { stdout: "pipe", stderr: "pipe" });
    expect(small.exitCode).toBe(0);
    const p2 = Number(/listening (\d+)/.exec(small.stdout.toString())![1]);
    await t.waitForSpans(40, onPort(p2), 30_000);
    const spans = t.spans.filter(onPort(p2));
    const m = byName(spans, "server");
    expect(m.get("GET /echo")?.length).toBe(10);
    expect(m.get("POST /echo")?.length).toBe(10);
    expect(m.get("POST /echo")![0]!.attributes).toMatchObject({ "http.request.body.size": 65536, "http.response.body": "POST /echo 65536", "ebpf.tls.library": "go", "ebpf.tls.correlation": "exact" });
    // Client side, exact: Go's HTTP/1 client writes from one goroutine and reads from another;
    // writes are emitted at the (*Conn).Write entry, so a request never lands behind its response.
    const client = byName(spans, "client");
    expect(client.get("GET /echo")?.map((s) => s.attributes["http.response.body"])).toEqual(Array(10).fill("GET /echo 0"));
    expect(client.get("POST /echo")?.map((s) => [s.attributes["http.request.body.size"], s.attributes["http.response.body"]])).toEqual(Array(10).fill([65536, "POST /echo 65536"]));
    // 10,000 requests as fast as the program goes: it must not crash (uprobes on RETs, never
    // uretprobes). It moves ~660 MB of plaintext in seconds, more than the ring buffer and a loaded
    // machine keep up with: what is lost is counted (EventLost), and every span emitted is right.
    const r = Bun.spawnSync([bin, "-n", "10000", "-wait", "3s"], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toContain("ok 10000");
    const p = Number(/listening (\d+)/.exec(r.stdout.toString())![1]);
    await t.waitForSpans(100, onPort(p), 30_000);
    await Bun.sleep(1000);
    const flood = t.spans.filter(onPort(p));
    expect(flood.length).toBeGreaterThan(0);
    // What the ring had no room for is counted (EventLost) and the spans it touches are flagged;
    // every span that carries a response body is the answer to its own request, on both sides.
    const mismatched = flood.filter((s) => {
      const body = s.attributes["http.response.body"];
      if (typeof body !== "string" || s.attributes["ebpf.partial"] !== undefined) return false;
      return !body.startsWith(`${s.attributes["http.request.method"]} /echo`);
    });
    expect(mismatched.map((s) => [s.kind, s.name, s.attributes["http.response.body"]])).toEqual([]);
    const stats = await stopAndCheck(t);
    // Read is probed on its copy of the plaintext (probe-site.ts goReadCopySite): every hit there
    // was the copy of a Read whose entry was seen (TlsGoCopyUnmatched would count the others).
    expect(stats.TlsGoCopyUnmatched).toBe(0);
  }, 150_000);

  test("wget (GnuTLS) as the captured client", async () => {
    const py = await startPyTls();
    const t = await agent(["--exe", "wget"]);
    const r = run(["wget", "-q", "-O", "-", "--no-check-certificate", `https://127.0.0.1:${py.port}/a`, `https://127.0.0.1:${py.port}/chunked`]);
    expect(r.code).toBe(0);
    const got = await t.waitForSpans(2, (s) => onPort(py.port)(s) && s.kind === "client", 15_000);
    expect(got.map((s) => [s.name, s.attributes["http.response.status_code"], s.attributes["http.response.body"], s.attributes["ebpf.tls.library"]])).toEqual([
      ["GET /a", 200, '{"hello":"tls"}', "gnutls"],
      ["GET /chunked", 200, CHUNKED_BODY, "gnutls"],
    ]);
    await stopAndCheck(t);
  }, 60_000);

  test("HTTP/2 over TLS (ALPN h2): nginx `listen ssl http2` and curl --http2, server and client spans", async () => {
    const t = await agent(["--exe", "nginx", "--exe", "curl"]);
    const ng = c.add(await startNginx((p, dir) => {
      mkdirSync(join(dir, "www", "up"), { recursive: true });
      chmodSync(join(dir, "www", "up"), 0o777); // the workers (nobody) write the PUT there
      return `server {
    listen 127.0.0.1:${p} ssl http2;
    ssl_certificate ${certs.server.cert};
    ssl_certificate_key ${certs.server.key};
    location / { root www; }
    # WebDAV PUT reads the whole body before answering (a bare "return" answers at once and
    # resets the stream, which the agent reports as such)
    location /up/ { root www; dav_methods PUT; client_max_body_size 1m; client_body_buffer_size 128k; }
  }`;
    }), stopNginx);
    const base = `https://127.0.0.1:${ng.port}`;
    const r = curlOk(["-k", "--http2", "-v", "-w", LP, `${base}/data.json`, `${base}/data.json?x=2`]);
    expect(r.stderr).toContain("ALPN: server accepted h2"); // premise: HTTP/2 was negotiated
    expect(new Set(curlLocalPorts(r)).size).toBe(1);
    curlOk(["-k", "--http2", "-T", join(work, "post.bin"), "-H", "Content-Type: text/plain", `${base}/up/p.bin`]);
    await t.waitForSpans(6, onPort(ng.port), 15_000);
    const spans = t.spans.filter(onPort(ng.port));
    for (const kind of ["server", "client"] as const) {
      const mine = spans.filter((s) => s.kind === kind);
      expect(mine.map((s) => [s.attributes["http.request.method"], s.attributes["url.path"], s.attributes["http.response.status_code"]])).toEqual([
        ["GET", "/data.json", 200], ["GET", "/data.json", 200], ["PUT", "/up/p.bin", 201],
      ]);
      for (const s of mine) {
        expect(s.attributes).toMatchObject({ "network.protocol.version": "2", "url.scheme": "https", "ebpf.tls.library": "openssl", "ebpf.tls.correlation": "exact" });
        expect(Number(s.attributes["ebpf.http2.stream_id"]) % 2).toBe(1);
      }
      expect(mine[0]!.attributes["http.response.body"]).toBe(JSON.stringify({ items: [1, 2, 3] }));
      expect(mine[1]!.attributes["url.query"]).toBe("x=2");
      expect(mine[2]!.attributes).toMatchObject({ "http.request.body.size": 65536, "http.request.body": "p".repeat(65536).slice(0, 65536) });
      expect(mine[2]!.attributes["ebpf.http2.rst_stream"]).toBeUndefined();
    }
    await stopAndCheck(t);
  }, 60_000);

  test("a libssl outside the loader cache, loaded after the agent started, is probed through the mmap event in time", async () => {
    // A copy of libssl.so.3 is a file the agent did not probe at start (another inode, not in
    // ld.so.cache). Python loads it only at `import ssl` (LD_LIBRARY_PATH), then waits 1 s — the
    // bound this path promises — before its first TLS call.
    const py = await startPyTls(); // not selected: only the client is
    const libdir = mkdtempSync(join(tmpdir(), "et-libssl-"));
    c.add(libdir, (d) => rmSync(d, { recursive: true, force: true }));
    Bun.spawnSync(["cp", "/usr/lib/x86_64-linux-gnu/libssl.so.3", join(libdir, "libssl.so.3")]);
    if (process.arch === "arm64") Bun.spawnSync(["cp", "/usr/lib/aarch64-linux-gnu/libssl.so.3", join(libdir, "libssl.so.3")]);
    const t = await agent(["--exe", "python3.11", "--exe", "python3"]);
    writeFileSync(join(work, "late.py"), String.raw`
import sys, time
time.sleep(0.3)
import ssl, http.client
maps = open("/proc/self/maps").read()
assert sys.argv[2] + "/libssl.so.3" in maps, "the copied libssl was not loaded"
time.sleep(1.0)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
for path in ("/a", "/chunked"):
    c.request("GET", path); r = c.getresponse(); print(r.status, r.read().decode())
`);
    const r = Bun.spawnSync([PY, join(work, "late.py"), String(py.port), libdir], { env: { ...process.env, LD_LIBRARY_PATH: libdir }, stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const got = await t.waitForSpans(2, (s) => onPort(py.port)(s) && s.kind === "client", 15_000);
    expect(got.map((s) => [s.name, s.attributes["http.response.status_code"], s.attributes["http.response.body"], s.attributes["ebpf.tls.library"]])).toEqual([
      ["GET /a", 200, '{"hello":"tls"}', "openssl"],
      ["GET /chunked", 200, CHUNKED_BODY, "openssl"],
    ]);
    await stopAndCheck(t);
    // the copy was probed as its own file
    expect(logRecords(t.stderr).some((l) => JSON.stringify(l).includes(`${libdir}/libssl.so.3`))).toBe(true);
  }, 60_000);

  test("a Bun TLS server (BoringSSL without symbols) is reported as not decrypted", async () => {
    const p = port();
    writeFileSync(join(work, "bunsrv.ts"), `Bun.serve({ port: ${p}, hostname: "127.0.0.1", tls: { cert: Bun.file(${JSON.stringify(certs.server.cert)}), key: Bun.file(${JSON.stringify(certs.server.key)}) }, fetch: () => new Response("bun") });`);
    const srv = c.add(Bun.spawn(["/usr/bin/bun", join(work, "bunsrv.ts")], { stdout: "ignore", stderr: "inherit" }), (x) => x.kill("SIGKILL"));
    await waitForPort(p);
    const t = await agent(["--pid", String(srv.pid)]);
    curlOk(["-k", `https://127.0.0.1:${p}/`]);
    await Bun.sleep(500);
    expect(t.spans.filter(onPort(p))).toEqual([]);
    await stopAndCheck(t);
    const lines = logRecords(t.stderr).map((r) => String(r.msg)).filter((m) => m.startsWith(`TLS capture for bun[${srv.pid}]`));
    expect(lines.some((l) => /boringssl .*BoringSSL linked without exported symbols.*not decrypting/.test(l))).toBe(true);
  }, 60_000);
});
