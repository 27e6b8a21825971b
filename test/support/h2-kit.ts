/**
 * Helpers for the root HTTP/2 and gRPC tests (test/root/http2.test.ts, grpc.test.ts): a Node
 * `http2` server with one route per HTTP/2 feature, a Node client that runs named scenarios and
 * prints what it saw as JSON, and h2load's summary.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "./http-kit.ts";
import { ReplaySource } from "../../src/kernel/event-source.ts";
import { decodeEvent } from "../../src/kernel/event-decoder.ts";
import { port, waitForPort, type Server } from "./servers.ts";

/** A header value long enough that its header block needs CONTINUATION frames (> 16384 bytes). */
export const BIG_HEADER_LEN = 40_000;

/**
 * Node http2 h2c server (`startNode(NODE_H2_APP)`). Routes:
 * - /hello           200 application/json {"hello":"h2"}
 * - /echo (POST)     200, echoes the request body with its content-type
 * - /big-header      200 with response header x-big of BIG_HEADER_LEN bytes (CONTINUATION), body "big"
 * - /trailers        200 text/plain "with trailers", then trailers x-checksum: abc123, x-done: yes
 * - /push            pushes /pushed.js (200 text/javascript "pushed();") then 200 text/html "<p>push</p>"
 * - /padded          like /hello, but the server pads every frame (PADDING_STRATEGY_MAX session option is
 *                    process-wide: this route exists so the test names the padded exchange)
 * - /hang            never answers (the client cancels)
 * - /goaway          sends GOAWAY (last stream 0) and never answers this stream
 * PAD=1 in the environment makes the server pad its frames (paddingStrategy MAX).
 */
export const NODE_H2_APP = String.raw`
const http2 = require("http2");
const opts = { maxHeaderListPairs: 256, maxSendHeaderBlockLength: 200000, settings: { maxHeaderListSize: 200000 } };
if (process.env.PAD === "1") opts.paddingStrategy = http2.constants.PADDING_STRATEGY_MAX;
const server = http2.createServer(opts);
server.on("stream", (stream, headers) => {
  const p = headers[":path"];
  const parts = [];
  stream.on("data", (c) => parts.push(c));
  stream.on("error", () => {});
  const done = () => route(stream, headers, p, Buffer.concat(parts));
  if (p === "/hang" || p === "/goaway") return route(stream, headers, p, null);
  stream.on("end", done);
});
function route(stream, headers, path, body) {
  const p = path.split("?")[0];
  if (p === "/hello" || p === "/padded") {
    stream.respond({ ":status": 200, "content-type": "application/json" });
    return stream.end('{"hello":"h2"}');
  }
  if (p === "/echo") {
    stream.respond({ ":status": 200, "content-type": headers["content-type"] || "text/plain" });
    return stream.end(body);
  }
  if (p === "/big-header") {
    stream.respond({ ":status": 200, "content-type": "text/plain", "x-big": "b".repeat(${BIG_HEADER_LEN}) });
    return stream.end("big");
  }
  if (p === "/trailers") {
    stream.respond({ ":status": 200, "content-type": "text/plain" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "x-checksum": "abc123", "x-done": "yes" }));
    return stream.end("with trailers");
  }
  if (p === "/push") {
    stream.pushStream({ ":path": "/pushed.js" }, (err, push) => {
      if (err) throw err;
      push.respond({ ":status": 200, "content-type": "text/javascript" });
      push.end("pushed();");
      stream.respond({ ":status": 200, "content-type": "text/html" });
      stream.end("<p>push</p>");
    });
    return;
  }
  if (p === "/hang") return;
  if (p === "/goaway") return stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
  stream.respond({ ":status": 404, "content-type": "text/plain" });
  stream.end("not found");
}
server.listen(Number(process.env.PORT), process.env.HOST || "127.0.0.1");
`;

/**
 * Node http2 client: \`node client.js URL SCENARIO\`; prints one JSON line with what it got.
 * Scenarios: basic (GET /hello, POST /echo, GET /big-header with a BIG_HEADER_LEN request header,
 * GET /trailers, on one connection), push, cancel (GET /hang, cancelled after 300 ms), goaway
 * (GET ARG or /goaway, given up 200 ms after a GOAWAY), hold (GET /hang kept open ARG ms, then cancelled).
 */
export const NODE_H2_CLIENT = String.raw`
const http2 = require("http2");
const [url, scenario, arg] = process.argv.slice(2);
const out = {};
const client = http2.connect(url, { maxHeaderListPairs: 256, maxSendHeaderBlockLength: 200000, settings: { maxHeaderListSize: 200000, enablePush: scenario === "push" } });
client.on("error", (e) => { out.sessionError = String(e.code || e); });
client.on("goaway", (code, last) => { out.goaway = { code, last }; });
function req(headers, body) {
  return new Promise((resolve) => {
    const r = client.request(headers, { endStream: body === undefined });
    const res = { body: "" };
    r.on("response", (h) => { res.status = h[":status"]; res.headers = h; });
    r.on("trailers", (t) => { res.trailers = t; });
    r.setEncoding("utf8");
    r.on("data", (d) => { res.body += d; });
    r.on("end", () => resolve(res));
    r.on("error", (e) => { res.error = String(e.code || e); resolve(res); });
    r.on("close", () => resolve(res));
    if (body !== undefined) r.end(body);
  });
}
async function main() {
  if (scenario === "basic") {
    out.hello = await req({ ":path": "/hello", "x-test": "one" });
    out.echo = await req({ ":method": "POST", ":path": "/echo?x=1", "content-type": "application/json" }, '{"n":42}');
    const big = await req({ ":path": "/big-header", "x-big-req": "a".repeat(${BIG_HEADER_LEN}) });
    out.bigHeader = { status: big.status, len: (big.headers["x-big"] || "").length, body: big.body };
    out.trailers = await req({ ":path": "/trailers" });
  } else if (scenario === "push") {
    out.pushed = [];
    client.on("stream", (ps, h) => {
      let b = ""; ps.setEncoding("utf8"); ps.on("data", (d) => b += d);
      ps.on("end", () => out.pushed.push({ path: h[":path"], body: b }));
    });
    out.push = await req({ ":path": "/push" });
    await new Promise((r) => setTimeout(r, 300));
  } else if (scenario === "cancel") {
    const r = client.request({ ":path": "/hang" });
    r.on("error", () => {});
    await new Promise((res) => setTimeout(res, 300));
    r.close(http2.constants.NGHTTP2_CANCEL);
    await new Promise((res) => r.on("close", res));
    out.cancelled = true;
    out.after = await req({ ":path": "/hello" });
  } else if (scenario === "hold") {
    // GET /hang kept open for ARG ms, then cancelled
    const r = client.request({ ":path": "/hang" });
    r.on("error", () => {});
    await new Promise((res) => setTimeout(res, Number(arg)));
    r.close(http2.constants.NGHTTP2_CANCEL);
    out.held = true;
  } else if (scenario === "goaway") {
    // Node leaves a stream above GOAWAY's last stream id open: stop waiting once GOAWAY came
    const gone = new Promise((r) => client.on("goaway", () => setTimeout(r, 200)));
    out.goawayReq = await Promise.race([req({ ":path": arg || "/goaway" }), gone.then(() => "unanswered")]);
    client.destroy();
  }
  client.close();
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.log(JSON.stringify({ fatal: String(e) })); process.exit(1); });
`;

/** Runs NODE_H2_CLIENT for one scenario and returns its JSON output. */
export function nodeH2Client(url: string, scenario: string, arg = ""): Record<string, any> {
  return nodeH2ClientRun(url, scenario, arg, (argv) => {
    const r = run(argv);
    if (r.code !== 0) throw new Error(`node h2 client ${scenario} failed (${r.code}): ${r.stdout} ${r.stderr}`);
    return r.stdout;
  });
}

/** The same in the background. */
export async function nodeH2ClientAsync(url: string, scenario: string, arg = ""): Promise<Record<string, any>> {
  const dir = mkdtempSync(join(tmpdir(), "et-h2c-"));
  writeFileSync(join(dir, "client.js"), NODE_H2_CLIENT);
  const proc = Bun.spawn(["timeout", "30", "/usr/bin/node", join(dir, "client.js"), url, scenario, arg], { stdout: "pipe", stderr: "inherit" });
  const stdout = await new Response(proc.stdout).text();
  await proc.exited;
  rmSync(dir, { recursive: true, force: true });
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

function nodeH2ClientRun(url: string, scenario: string, arg: string, exec: (argv: string[]) => string): Record<string, any> {
  const dir = mkdtempSync(join(tmpdir(), "et-h2c-"));
  try {
    writeFileSync(join(dir, "client.js"), NODE_H2_CLIENT);
    const stdout = exec(["timeout", "50", "/usr/bin/node", join(dir, "client.js"), url, scenario, arg]);
    return JSON.parse(stdout.trim().split("\n").at(-1)!);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface H2loadResult {
  succeeded: number;
  failed: number;
  reqPerSec: number;
  raw: string;
}

/** Runs h2load (h2c prior knowledge) and parses its summary. */
export function h2load(args: string[], timeoutS = 60): H2loadResult {
  const r = run(["timeout", String(timeoutS), "h2load", ...args]);
  const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`h2load ${args.join(" ")} failed (${r.code}): ${r.stdout} ${r.stderr}`);
  const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(r.stdout);
  return { succeeded: Number(m[1]), failed: Number(m[2]), reqPerSec: rps ? Number(rps[1]) : 0, raw: r.stdout };
}

/**
 * An h2c server on Debian's python3-h2 (`startPythonH2()`): answers an HTTP/1.1 request carrying
 * `Upgrade: h2c` with 101 and then speaks HTTP/2 (the upgrade request is stream 1), or speaks
 * HTTP/2 at once after the client preface (prior knowledge). Routes:
 * - /hello     200 text/plain "hello from h2 PATH"
 * - /goaway0   GOAWAY with last stream id 0 (the stream was not processed), no response
 * Other requests without Upgrade get 400.
 */
export const PY_H2_SERVER = String.raw`
import os, select, socket, threading
import h2.config, h2.connection, h2.events

def serve(sock):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    buf = b""
    while len(buf) < 24:
        d = sock.recv(65536)
        if not d:
            return
        buf += d
    if buf.startswith(b"PRI * HTTP/2.0"):
        conn.initiate_connection()
        events = conn.receive_data(buf)
    else:
        while b"\r\n\r\n" not in buf:
            d = sock.recv(65536)
            if not d:
                return
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        if hdrs.get("upgrade", "").lower() != "h2c":
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn.initiate_upgrade_connection(hdrs["http2-settings"])
        path = lines[0].split(" ")[1]
        events = [("upgrade", path)]
        if rest:
            events += conn.receive_data(rest)
    while True:
        for ev in events:
            if isinstance(ev, tuple):
                respond(conn, 1, ev[1])
            elif isinstance(ev, h2.events.RequestReceived):
                h = dict(ev.headers)
                respond(conn, ev.stream_id, h[":path"])
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        d = sock.recv(65536)
        if not d:
            return
        events = conn.receive_data(d)

def respond(conn, sid, path):
    if path == "/goaway0":
        conn.close_connection(last_stream_id=0)
        return
    body = ("hello from h2 " + path).encode()
    conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(body)))])
    conn.send_data(sid, body, end_stream=True)

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(os.environ["PORT"])))
srv.listen(16)
while True:
    if os.environ.get("ACCEPT") == "select":
        select.select([srv], [], [])
    c, _ = srv.accept()
    def run(c=c):
        try:
            serve(c)
        except Exception:
            pass
        finally:
            c.close()
    threading.Thread(target=run, daemon=True).start()
`;

/**
 * Runs `argv` (a server that listens on $PORT) from `dir`, which it owns: waits for the port,
 * and stop() kills it and removes `dir`.
 */
export async function startScriptServer(argv: string[], dir: string, env: Record<string, string> = {}): Promise<Server> {
  const p = port();
  const proc = Bun.spawn(argv, { env: { ...process.env, ...env, PORT: String(p) }, stdout: "ignore", stderr: "inherit" });
  await waitForPort(p, "127.0.0.1", 20_000);
  return {
    pid: proc.pid, port: p, dir,
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts PY_H2_SERVER under Debian's python3 on a fresh loopback port. By default it blocks in
 * accept(), which it entered before a tracer started later, so the agent never sees the accept and
 * meets each connection first on its data (mid-stream); `selectFirst` waits in select() and calls
 * accept() once a client is there, so the accept is seen.
 */
export async function startPythonH2(selectFirst = false): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "et-pyh2-"));
  writeFileSync(join(dir, "server.py"), PY_H2_SERVER);
  return startScriptServer(["/usr/bin/python3", join(dir, "server.py")], dir, { ACCEPT: selectFirst ? "select" : "block" });
}

/** A TCP sink on Debian's python3: accepts and reads everything, never answers. */
export const PY_SINK = String.raw`
import os, socket, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(os.environ["PORT"])))
srv.listen(64)
def drain(c):
    try:
        while c.recv(65536):
            pass
    finally:
        c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
`;

export function startSink(): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "et-sink-"));
  writeFileSync(join(dir, "sink.py"), PY_SINK);
  return startScriptServer(["/usr/bin/python3", join(dir, "sink.py")], dir);
}

/** Connects, writes each chunk as its own write (20 ms apart), then closes. */
export async function writeAndClose(p: number, chunks: Uint8Array[]): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const sock = connect({ host: "127.0.0.1", port: p });
  sock.on("error", reject);
  sock.on("connect", async () => {
    for (const c of chunks) {
      sock.write(c);
      await Bun.sleep(20);
    }
    sock.end();
  });
  sock.on("close", () => resolve());
  return promise;
}

/**
 * HEADERS and DATA frames with the PADDED flag in the bytes a `capture --record FILE` recording
 * holds for socket direction `dir` (1: sent by the traced process). Frames are walked from the
 * start of each syscall's bytes, which is where Node's writes put them.
 */
export function paddedFrames(recording: string, dir: number): number {
  const src = new ReplaySource(readFileSync(recording));
  let padded = 0;
  src.drain((b, at, len) => {
    const e = decodeEvent(b.subarray(at, at + len));
    if (e === undefined || e.kind !== "data" || e.dir !== dir) return;
    const d = e.data;
    for (let p = 0; p + 9 <= d.length; p += 9 + ((d[p]! << 16) | (d[p + 1]! << 8) | d[p + 2]!)) {
      if (d[p + 3]! <= 1 && (d[p + 4]! & 8) !== 0) padded++;
    }
  }, Number.MAX_SAFE_INTEGER);
  return padded;
}
