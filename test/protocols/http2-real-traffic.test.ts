/**
 * Real HTTP/2 traffic, recorded through a TCP relay on 127.0.0.1 (each read = one chunk ending a
 * call) and replayed through Http2Session:
 * - Node's http2 module (nghttp2) on both ends: maximal padding, headers big enough for
 *   CONTINUATION both ways, a POST body, server push, gRPC-style trailers and a trailers-only
 *   error, a cancelled stream (RST_STREAM), GOAWAY at the end;
 * - Debian's python3-grpcio (gRPC C-core) on both ends: unary success, errors as trailers-only,
 *   a deadline ending in RST_STREAM, a 1 MiB message, a gzip-compressed message, server, client
 *   and bidirectional streaming.
 * Each capture is then replayed split at arbitrary points, attached at every chunk and with every
 * chunk lost: values are right or reported missing, never wrong. A capture whose tools are
 * missing is skipped, saying why (scripts/install-deps.sh installs nodejs and python3-grpcio).
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

const GRPC_RECORDER = String.raw`
# Records real gRPC traffic (grpcio C-core on both ends) through a loopback TCP relay.
import grpc, json, socket, sys, threading, time
from concurrent import futures

events = []
lock = threading.Lock()
t0 = time.monotonic_ns()

def handler(method, kind):
    def unary(req, ctx):
        if method == "Fail":
            ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if method == "Slow":
            time.sleep(0.5)
            return b"late"
        if method == "Big":
            return b"x" * (1 << 20)
        if method == "Broken":
            ctx.abort(grpc.StatusCode.INTERNAL, "boom")
        return b"hello " + req
    def server_stream(req, ctx):
        for i in range(5):
            yield b"part %d" % i
    def client_stream(it, ctx):
        return b"got %d" % sum(1 for _ in it)
    def bidi(it, ctx):
        for m in it:
            yield b"echo " + m
    return {"uu": grpc.unary_unary_rpc_method_handler(unary), "us": grpc.unary_stream_rpc_method_handler(server_stream),
            "su": grpc.stream_unary_rpc_method_handler(client_stream), "ss": grpc.stream_stream_rpc_method_handler(bidi)}[kind]

KINDS = {"Hello": "uu", "Fail": "uu", "Slow": "uu", "Big": "uu", "Broken": "uu", "List": "us", "Upload": "su", "Chat": "ss"}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("demo.Svc", {m: handler(m, k) for m, k in KINDS.items()})])
port = server.add_insecure_port("127.0.0.1:0")
server.start()

def pump(src, dst, who):
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            with lock:
                events.append({"from": who, "hex": d.hex(), "t": str(time.monotonic_ns() - t0)})
            dst.sendall(d)
    except OSError:
        pass
    try: dst.shutdown(socket.SHUT_WR)   # pass the half-close on
    except OSError: pass

lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(4)
def accept():
    c, _ = lsock.accept()
    s = socket.create_connection(("127.0.0.1", port))
    threading.Thread(target=pump, args=(c, s, "client"), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, "server"), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()

ch = grpc.insecure_channel("127.0.0.1:%d" % lsock.getsockname()[1], options=[("grpc.max_receive_message_length", 1 << 22)])
uu = lambda m, **kw: ch.unary_unary("/demo.Svc/" + m)
def call(f):
    try: return f()
    except grpc.RpcError as e: return e.code()
call(lambda: uu("Hello")(b"world"))
call(lambda: uu("Fail")(b"?"))
call(lambda: uu("Broken")(b"?"))
call(lambda: uu("Slow")(b"?", timeout=0.1))
call(lambda: uu("Big")(b"big"))
call(lambda: uu("Hello")(b"zipped " * 50, compression=grpc.Compression.Gzip))
call(lambda: list(ch.unary_stream("/demo.Svc/List")(b"l")))
call(lambda: ch.stream_unary("/demo.Svc/Upload")(iter([b"a", b"b", b"c"])))
call(lambda: list(ch.stream_stream("/demo.Svc/Chat")(iter([b"1", b"2"]))))
time.sleep(0.6)
ch.close()
time.sleep(0.2)
server.stop(0)
time.sleep(0.1)
with lock:
    sys.stdout.write(json.dumps(events))
`;

const MEM = new HpackMemory(1 << 30);
const nodeOk = spawnSync("node", ["--version"], { encoding: "utf8" }).status === 0;
const grpcOk = spawnSync("/usr/bin/python3", ["-c", "import grpc"], { encoding: "utf8" }).status === 0;
const RECORDERS = {
  node: { cmd: "node", args: ["-e", RECORDER], skip: nodeOk ? "" : "node is not installed" },
  grpc: { cmd: "/usr/bin/python3", args: ["-c", GRPC_RECORDER], skip: grpcOk ? "" : "python3-grpcio is not importable by /usr/bin/python3" },
};
type Recorder = keyof typeof RECORDERS;

interface Ev { from: Sender; bytes: Uint8Array; ts: bigint }
const captured = new Map<Recorder, Ev[]>();
function capture(which: Recorder): Ev[] {
  const have = captured.get(which);
  if (have) return have;
  const rec = RECORDERS[which];
  const r = spawnSync(rec.cmd, rec.args, { encoding: "utf8", timeout: 30_000, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${which} recorder failed: ${r.stderr}`);
  const raw = JSON.parse(r.stdout) as { from: Sender; hex: string; t: string }[];
  const evs = raw.map((e) => ({ from: e.from, bytes: Uint8Array.from(Buffer.from(e.hex, "hex")), ts: BigInt(e.t) + 1n }));
  captured.set(which, evs);
  return evs;
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
      if (k.startsWith("ebpf.") || k === "error.type" || k.includes(".body") || k.startsWith("rpc.grpc.request.") || k.startsWith("rpc.grpc.response.")) continue;
      // A stream the full capture saw reset may, when the RST_STREAM is lost, go on to show what
      // the peer sent after it: true wire data the full capture ignored, not a wrong value.
      if (want![k] === undefined && want!["ebpf.http2.rst_stream"] === true) continue;
      expect([a["ebpf.http2.stream_id"], k, v]).toEqual([a["ebpf.http2.stream_id"], k, want![k]!]);
    }
    if (a["ebpf.http2.headers_incomplete"]) { flagged++; expect(x.partial).toBe(true); }
  });
  return flagged;
}

describe.skipIf(!nodeOk)(`Node http2 capture${nodeOk ? "" : ` (skipped: ${RECORDERS.node.skip})`}`, () => {
  test("every stream becomes one exact exchange", () => {
    const env = replay(capture("node"));
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

});

describe.skipIf(!grpcOk)(`python3-grpcio capture${grpcOk ? "" : ` (skipped: ${RECORDERS.grpc.skip})`}`, () => {
  test("every call becomes one exact exchange", () => {
    const env = replay(capture("grpc"));
    expect(env.errors).toEqual([]);
    // The deadline call races: either the client cancels first (RST_STREAM; no status is made
    // up) or the server's DEADLINE_EXCEEDED trailers come first.
    const slowRow = (r: unknown[]): unknown[] => r[5] === "CANCEL"
      ? ["demo.Svc/Slow", undefined, 1, undefined, undefined, "CANCEL", true, true, true]
      : ["demo.Svc/Slow", 4, 1, 0, 0, "DEADLINE_EXCEEDED", true, true, false];
    const rows: unknown[][] = env.exchanges.map((x, i) => {
      const a = env.attrs(i, true);
      return [x.name, a["rpc.grpc.status_code"], a["rpc.grpc.request.message_count"], a["rpc.grpc.response.message_count"],
        a["rpc.grpc.response.message_bytes"], a["error.type"] ?? "", x.isError(true), x.isError(false), x.partial];
    });
    expect(rows).toEqual([
      ["demo.Svc/Hello", 0, 1, 1, 11, "", false, false, false],
      ["demo.Svc/Fail", 5, 1, 0, 0, "NOT_FOUND", true, false, false],
      ["demo.Svc/Broken", 13, 1, 0, 0, "INTERNAL", true, true, false],
      slowRow(rows[3]!),
      ["demo.Svc/Big", 0, 1, 1, 1 << 20, "", false, false, false],
      ["demo.Svc/Hello", 0, 1, 1, 356, "", false, false, false],
      ["demo.Svc/List", 0, 1, 5, 30, "", false, false, false],
      ["demo.Svc/Upload", 0, 3, 1, 5, "", false, false, false],
      ["demo.Svc/Chat", 0, 2, 2, 12, "", false, false, false],
    ]);
    const zipped = env.attrs(5, true);
    expect([zipped["rpc.grpc.request.compressed_messages"], zipped["http.request.header.grpc-encoding"]]).toEqual([1, "gzip"]);
    expect(zipped["http.request.body"]).toBeUndefined();
    expect(env.attrs(1, true)["rpc.grpc.status_message"]).toBe("no such thing");
    for (let i = 0; i < env.exchanges.length; i++) expect(env.attrs(i)["http.response.body"]).toBeUndefined();
  }, 40_000);
});

for (const which of Object.keys(RECORDERS) as Recorder[]) {
  const skipIt = RECORDERS[which].skip;
  describe.skipIf(skipIt !== "")(`${which} capture, cut up${skipIt ? ` (skipped: ${skipIt})` : ""}`, () => {
  test("split at arbitrary points: the same exchanges", () => {
    const evs = capture(which);
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
    const evs = capture(which);
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

  test("random gaps inside chunks (DATA, header blocks, frame headers): right or reported missing", () => {
    const evs = capture(which);
    const full = replay(evs);
    let seed = 12345;
    const rnd = (m: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % m;
    let flagged = 0;
    for (let round = 0; round < 150; round++) {
      const env = replay(evs, (s, ev) => {
        const n = ev.bytes.length;
        if (n < 4 || rnd(6) !== 0) { s.data(ev.from, ev.bytes, ev.ts, true); return; }
        const a = 1 + rnd(n - 2);
        const g = 1 + rnd(Math.min(n - a - 1, 64));
        s.data(ev.from, ev.bytes.subarray(0, a), ev.ts, false);
        s.gap(ev.from, g, ev.ts, true);
        s.data(ev.from, ev.bytes.subarray(a + g), ev.ts, true);
      });
      flagged += agree(full, env);
    }
    expect(flagged).toBeGreaterThan(0);
  }, 60_000);
});
}
