/**
 * Helpers for test/root/grpc.test.ts: a gRPC service (test.Echo) served and called with
 * @grpc/grpc-js under Node, and with Debian's python3-grpcio (generic handlers over raw protobuf
 * bytes, so no generated code is needed).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { run } from "./http-kit.ts";
import type { Server } from "./servers.ts";
import { startScriptServer } from "./h2-kit.ts";
import { ROOT } from "./tracer.ts";

export const PROTO = `syntax = "proto3";
package test;
message Msg { string text = 1; bytes blob = 2; int32 n = 3; }
service Echo {
  rpc Unary (Msg) returns (Msg);
  rpc Fail (Msg) returns (Msg);
  rpc Slow (Msg) returns (Msg);
  rpc ServerStream (Msg) returns (stream Msg);
  rpc ClientStream (stream Msg) returns (Msg);
  rpc Bidi (stream Msg) returns (stream Msg);
}
`;

/** Wire size of a Msg holding only `text` (shorter than 128 bytes): tag, length, bytes. */
export const textMsgSize = (text: string) => 2 + Buffer.byteLength(text);

const GRPC_JS = resolve(ROOT, "node_modules/@grpc/grpc-js");
const PROTO_LOADER = resolve(ROOT, "node_modules/@grpc/proto-loader");

const COMMON = `
const grpc = require(${JSON.stringify(GRPC_JS)});
const loader = require(${JSON.stringify(PROTO_LOADER)});
const path = require("path");
const def = loader.loadSync(path.join(__dirname, "echo.proto"), { keepCase: true });
const Echo = grpc.loadPackageDefinition(def).test.Echo;
const GZIP = process.env.GZIP === "1" ? { "grpc.default_compression_algorithm": 2, "grpc.default_compression_level": 2 } : {};
`;

/**
 * grpc-js server. Unary echoes "echo:" + text and the blob length in n; Fail answers an error
 * before any message (trailers-only): status from n (default 3 INVALID_ARGUMENT), message
 * "bad input 100% <text>"; Slow answers after 3 s; ServerStream sends n messages "m0".."m{n-1}";
 * ClientStream answers "got K" after K messages; Bidi echoes each message as "re:" + text.
 */
export const GRPC_JS_SERVER = COMMON + `
const server = new grpc.Server(GZIP);
server.addService(Echo.service, {
  Unary: (call, cb) => cb(null, { text: "echo:" + call.request.text, n: (call.request.blob || []).length }),
  Fail: (call, cb) => cb({ code: call.request.n || 3, details: "bad input 100% " + call.request.text }),
  Slow: (call, cb) => { const t = setTimeout(() => cb(null, { text: "late" }), 3000); call.on("cancelled", () => clearTimeout(t)); },
  ServerStream: (call) => { for (let i = 0; i < call.request.n; i++) call.write({ text: "m" + i }); call.end(); },
  ClientStream: (call, cb) => { let k = 0; call.on("data", () => k++); call.on("end", () => cb(null, { text: "got " + k })); },
  Bidi: (call) => { call.on("data", (m) => call.write({ text: "re:" + m.text })); call.on("end", () => call.end()); },
});
server.bindAsync((process.env.HOST || "127.0.0.1") + ":" + process.env.PORT, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) { console.error(err); process.exit(1); }
});
`;

/**
 * grpc-js client: \`node client.js HOST:PORT SCENARIO...\` runs the scenarios in order on one
 * channel and prints one JSON line { scenario: result }. Scenarios: unary, fail, internal,
 * serverStream (5), clientStream (3), bidi (4), deadline (Slow, 300 ms), cancel (Slow, cancelled by
 * the client after 200 ms), big (1 MiB blob),
 * loop:MS (unary calls "loop-i" for MS milliseconds, counting them).
 */
export const GRPC_JS_CLIENT = COMMON + `
const [addr, ...scenarios] = process.argv.slice(2);
const c = new Echo(addr, grpc.credentials.createInsecure(), GZIP);
const unary = (m, req, opts) => new Promise((res) => c[m](req, new grpc.Metadata(), opts || {}, (err, r) => res(err ? { code: err.code, details: err.details } : r)));
const out = {};
async function main() {
  for (const s of scenarios) {
    if (s === "unary") out.unary = await unary("Unary", { text: "hello" });
    else if (s === "fail") out.fail = await unary("Fail", { text: "x" });
    else if (s === "internal") out.internal = await unary("Fail", { text: "y", n: 13 });
    else if (s === "big") out.big = await unary("Unary", { text: "big", blob: Buffer.alloc(1 << 20, 7) });
    else if (s === "cancel") out.cancel = await new Promise((res) => {
      const call = c.Slow({ text: "c" }, (err, r) => res(err ? { code: err.code, details: err.details } : r));
      setTimeout(() => call.cancel(), 200);
    });
    else if (s === "deadline") out.deadline = await unary("Slow", { text: "z" }, { deadline: Date.now() + 300 });
    else if (s === "serverStream") out.serverStream = await new Promise((res) => {
      const got = []; const call = c.ServerStream({ n: 5 });
      call.on("data", (m) => got.push(m.text)); call.on("end", () => res(got)); call.on("error", (e) => res({ code: e.code }));
    });
    else if (s === "clientStream") out.clientStream = await new Promise((res) => {
      const call = c.ClientStream((err, r) => res(err ? { code: err.code } : r));
      for (let i = 0; i < 3; i++) call.write({ text: "c" + i }); call.end();
    });
    else if (s === "bidi") out.bidi = await new Promise((res) => {
      const got = []; const call = c.Bidi();
      call.on("data", (m) => got.push(m.text)); call.on("end", () => res(got)); call.on("error", (e) => res({ code: e.code }));
      let i = 0; const next = () => { if (i < 4) { call.write({ text: "b" + i++ }); setTimeout(next, 20); } else call.end(); }; next();
    });
    else if (s.startsWith("loop:")) {
      const until = Date.now() + Number(s.slice(5)); let i = 0, bad = 0;
      while (Date.now() < until) { const r = await unary("Unary", { text: "loop-" + i }); if (r.text !== "echo:loop-" + i) bad++; i++; }
      out.loop = { calls: i, bad };
    }
  }
  c.close();
  console.log(JSON.stringify(out));
}
main();
`;

function scriptDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "et-grpc-"));
  for (const [n, t] of Object.entries(files)) writeFileSync(join(dir, n), t);
  writeFileSync(join(dir, "echo.proto"), PROTO);
  return dir;
}

/** Starts the grpc-js server (GZIP=1 in its environment when `gzip`). */
export function startGrpcJs(gzip = false): Promise<Server> {
  const dir = scriptDir({ "server.js": GRPC_JS_SERVER });
  return startScriptServer(["/usr/bin/node", join(dir, "server.js")], dir, { GZIP: gzip ? "1" : "0" });
}

/** Runs the grpc-js client to completion and returns its JSON. */
export function grpcJsClient(addr: string, scenarios: string[], gzip = false): Record<string, any> {
  const dir = scriptDir({ "client.js": GRPC_JS_CLIENT });
  try {
    const r = Bun.spawnSync(["timeout", "60", "/usr/bin/node", join(dir, "client.js"), addr, ...scenarios], {
      env: { ...process.env, GZIP: gzip ? "1" : "0" }, stdout: "pipe", stderr: "pipe",
    });
    const stdout = r.stdout.toString();
    if (r.exitCode !== 0) throw new Error(`grpc-js client failed (${r.exitCode}): ${stdout} ${r.stderr.toString()}`);
    return JSON.parse(stdout.trim().split("\n").at(-1)!);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The grpc-js client started in the background (for a channel that is busy before the agent starts). */
export function grpcJsClientAsync(addr: string, scenarios: string[]): { done: Promise<Record<string, any>> } {
  const dir = scriptDir({ "client.js": GRPC_JS_CLIENT });
  const proc = Bun.spawn(["timeout", "60", "/usr/bin/node", join(dir, "client.js"), addr, ...scenarios], { stdout: "pipe", stderr: "pipe" });
  const done = (async () => {
    const stdout = await new Response(proc.stdout).text();
    const code = await proc.exited;
    rmSync(dir, { recursive: true, force: true });
    if (code !== 0) throw new Error(`grpc-js client failed (${code}): ${stdout} ${await new Response(proc.stderr).text()}`);
    return JSON.parse(stdout.trim().split("\n").at(-1)!);
  })();
  return { done };
}

/**
 * python3-grpcio server and client over raw protobuf bytes (generic handlers): Unary echoes the
 * request bytes, Fail aborts with INVALID_ARGUMENT "py says no" before any message (trailers-only),
 * ServerStream answers with three copies of the request.
 */
export const PY_GRPC = String.raw`
import os, sys, grpc
from concurrent import futures

def unary(req, ctx):
    return req
def fail(req, ctx):
    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "py says no")
def stream(req, ctx):
    for _ in range(3):
        yield req

if sys.argv[1] == "server":
    h = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "ServerStream": grpc.unary_stream_rpc_method_handler(stream),
    })
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers((h,))
    s.add_insecure_port("127.0.0.1:" + os.environ["PORT"])
    s.start()
    s.wait_for_termination()
else:
    import json
    ch = grpc.insecure_channel(sys.argv[2])
    msg = b"\x0a\x05hello"
    out = {}
    out["unary"] = ch.unary_unary("/test.Echo/Unary")(msg, timeout=10).hex()
    try:
        ch.unary_unary("/test.Echo/Fail")(msg, timeout=10)
        out["fail"] = "no error"
    except grpc.RpcError as e:
        out["fail"] = [e.code().value[0], e.details()]
    out["stream"] = [m.hex() for m in ch.unary_stream("/test.Echo/ServerStream")(msg, timeout=10)]
    ch.close()
    print(json.dumps(out))
`;

export function startPyGrpc(): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "et-pygrpc-"));
  writeFileSync(join(dir, "g.py"), PY_GRPC);
  return startScriptServer(["/usr/bin/python3", join(dir, "g.py"), "server"], dir);
}

export function pyGrpcClient(addr: string): Record<string, any> {
  const dir = mkdtempSync(join(tmpdir(), "et-pygrpc-"));
  try {
    writeFileSync(join(dir, "g.py"), PY_GRPC);
    const r = run(["timeout", "60", "/usr/bin/python3", join(dir, "g.py"), "client", addr]);
    if (r.code !== 0) throw new Error(`python grpc client failed (${r.code}): ${r.stdout} ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
