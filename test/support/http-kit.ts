/**
 * Helpers for the root HTTP capture tests (test/root/http-*.test.ts): a Node http application
 * with one route per HTTP feature, raw-socket exchanges (pipelining, non-HTTP bytes), curl with
 * separate stdout/stderr, /proc lookups, and a per-test cleanup list.
 */
import { connect } from "node:net";
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import type { SpanJson } from "./tracer.ts";

/**
 * The Node application (`startNode(NODE_APP)` or `startNode(NODE_APP, "::1")`). Routes:
 * - GET  /json?...          200 application/json {"path":..,"query":..}, Content-Length set (HEAD too)
 * - GET  /chunked           200 application/json, four res.write() calls 10 ms apart → chunked
 * - POST /echo              200, echoes the request body with the request's Content-Type
 * - POST /upload            200 {"received":N}
 * - GET  /status/NNN        status NNN, text/plain "status NNN" (no body for 204/304)
 * - GET  /etag              200 with ETag "v1", or 304 when If-None-Match is "v1"
 * - GET  /big?n=N           200 application/json, a JSON document of exactly N bytes written with one res.end()
 * - GET  /gzip              200 application/json, gzip-encoded (Content-Encoding: gzip)
 * - GET  /bigchunked?n=N&k=K 200 application/json, the same document as K chunks written at once (chunked)
 * Anything else: 404 text/plain "not found".
 */
/** A JSON document of exactly `size` bytes (>= 11) whose content changes along its length. */
export function jsonOfSize(size: number): string {
  const head = '{"data":"';
  const tail = '"}';
  const want = size - head.length - tail.length;
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < want; i++) {
    const p = i.toString(36).padStart(6, "-");
    parts.push(p);
    len += p.length;
  }
  return head + parts.join("").slice(0, want) + tail;
}
const jsonOfSizeSource = jsonOfSize.toString();

export const NODE_APP = String.raw`
const http = require("http");
const CHUNKS = ['{"items":[', '1,2,', '3,4', ']}'];
const server = http.createServer((req, res) => {
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", () => route(req, res, Buffer.concat(parts)));
});
function send(res, status, type, body, extra) {
  const headers = Object.assign({ "Content-Type": type }, extra || {});
  if (body !== null) headers["Content-Length"] = Buffer.byteLength(body);
  res.writeHead(status, headers);
  res.end(body === null ? undefined : body);
}
function route(req, res, body) {
  const u = new URL(req.url, "http://x");
  const p = u.pathname;
  if (p === "/json") return send(res, 200, "application/json", JSON.stringify({ path: p, query: u.search.slice(1) }));
  if (p === "/chunked") {
    res.writeHead(200, { "Content-Type": "application/json" });
    let i = 0;
    const next = () => {
      if (i < CHUNKS.length) { res.write(CHUNKS[i++]); setTimeout(next, 10); }
      else res.end();
    };
    return next();
  }
  if (p === "/echo" && req.method === "POST") return send(res, 200, req.headers["content-type"] || "text/plain", body);
  if (p === "/upload" && req.method === "POST") return send(res, 200, "application/json", JSON.stringify({ received: body.length }));
  if (p.startsWith("/status/")) {
    const s = Number(p.slice(8));
    if (s === 204 || s === 304) { res.writeHead(s); return res.end(); }
    return send(res, s, "text/plain", "status " + s);
  }
  if (p === "/etag") {
    if (req.headers["if-none-match"] === '"v1"') { res.writeHead(304, { ETag: '"v1"' }); return res.end(); }
    return send(res, 200, "application/json", '{"version":1}', { ETag: '"v1"' });
  }
  if (p === "/big") return send(res, 200, "application/json", jsonOfSize(Number(u.searchParams.get("n"))));
  if (p === "/gzip") {
    const doc = JSON.stringify({ compressed: true, items: [1, 2, 3], note: "z".repeat(300) });
    const gz = require("zlib").gzipSync(doc);
    res.writeHead(200, { "Content-Type": "application/json", "Content-Encoding": "gzip", "Content-Length": gz.length });
    return res.end(gz);
  }
  if (p === "/bigchunked") {
    // one document of exactly n bytes, sent as k chunks in one go (the writes coalesce into
    // large socket writes whose chunk framing falls past the per-call capture cap)
    const doc = jsonOfSize(Number(u.searchParams.get("n")));
    const k = Number(u.searchParams.get("k") || "8");
    res.writeHead(200, { "Content-Type": "application/json" });
    const step = Math.ceil(doc.length / k);
    res.cork();
    for (let o = 0; o < doc.length; o += step) res.write(doc.slice(o, o + step));
    res.end();
    return;
  }
  send(res, 404, "text/plain", "not found");
}
${jsonOfSizeSource}
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), process.env.HOST || "127.0.0.1");
`;

/** The body /chunked sends, reassembled. */
export const CHUNKED_BODY = '{"items":[1,2,3,4]}';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (curl etc.), stdout and stderr kept apart. */
export function run(cmd: string[]): RunResult {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** curl -sS with a 10 s limit; throws when curl fails so a test never asserts on a failed call. */
export function curlOk(args: string[]): RunResult {
  const r = run(["curl", "-sS", "--max-time", "10", ...args]);
  if (r.code !== 0) throw new Error(`curl ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r;
}

/** Local ports curl -v reports connecting from ("Connected to ... port N" does not say; -w does). */
export function curlLocalPorts(r: RunResult): number[] {
  return [...r.stdout.matchAll(/<lp:(\d+)>/g)].map((m) => Number(m[1]));
}

/**
 * Opens a TCP connection, writes `payload` in ONE write, and collects what comes back until
 * `done(received)` is true, the peer closes, or `timeoutMs` passes. Resolves with the bytes and
 * the local port.
 */
export function rawExchange(
  host: string, port: number, payload: Uint8Array | string,
  done: (got: string) => boolean, timeoutMs = 5000,
): Promise<{ got: string; localPort: number; closedByPeer: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    let got = "";
    let localPort = 0;
    let finished = false;
    const finish = (closedByPeer: boolean) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ got, localPort, closedByPeer });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on("connect", () => {
      localPort = sock.localPort ?? 0;
      sock.write(typeof payload === "string" ? Buffer.from(payload, "latin1") : Buffer.from(payload));
    });
    sock.on("data", (d) => {
      got += d.toString("latin1");
      if (done(got)) finish(false);
    });
    sock.on("end", () => finish(true));
    sock.on("close", () => finish(true));
    sock.on("error", (e) => {
      if (!finished) {
        finished = true;
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}

/** Counts HTTP/1.x final status lines in a raw response stream. */
export function statusLines(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
}

/** Parent pid from /proc/PID/stat (field 4). */
export function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(rest[1]);
}

/** The JSON log records on the tracer's stderr (`--log-level info`). */
export function logRecords(stderr: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      /* not a log record */
    }
  }
  return out;
}

/** The `stats` record the tracer logs on exit with `--log-level info`. */
export function exitStats(stderr: string): Record<string, number> | undefined {
  const recs = logRecords(stderr).filter((r) => r.msg === "stats");
  return recs.at(-1) as Record<string, number> | undefined;
}

/** Spans whose server side is `port` (server.port attribute). */
export function onPort(port: number): (s: SpanJson) => boolean {
  return (s) => s.attributes["server.port"] === port;
}

/** Cleanup actions of the running test, run in reverse order by `runCleanups` (afterEach). */
export class Cleanups {
  private fns: (() => unknown)[] = [];
  add<T>(value: T, fn: (v: T) => unknown): T {
    this.fns.push(() => fn(value));
    return value;
  }
  async run(): Promise<void> {
    const fns = this.fns.reverse();
    this.fns = [];
    const errors: unknown[] = [];
    for (const fn of fns) {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length) throw errors[0];
  }
}

/** The executable file name the agent reports for a binary (the resolved symlink's name). */
export function exeName(path: string): string {
  const real = realpathSync(path);
  return real.slice(real.lastIndexOf("/") + 1);
}

/** An exchange of HTTP/1.x requests concatenated for one write (pipelining). */
export function pipelined(reqs: { method: string; target: string; headers?: Record<string, string>; body?: string }[]): string {
  return reqs
    .map((r) => {
      const h = { Host: "pipeline.test", ...(r.headers ?? {}) } as Record<string, string>;
      if (r.body !== undefined) h["Content-Length"] = String(Buffer.byteLength(r.body));
      return `${r.method} ${r.target} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n${r.body ?? ""}`;
    })
    .join("");
}

/** Pids whose parent is `ppid` (from /proc/PID/stat). */
export function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (ppidOf(Number(e)) === ppid) out.push(Number(e));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/**
 * Stops an nginx started by startNginx without leaking its workers: servers.ts's stop() sends
 * SIGKILL to the master only, which leaves the workers running (and listening) as orphans.
 * Sends SIGTERM (fast shutdown) to the master, waits for it, SIGKILLs any worker left, then runs
 * the server's own stop() (which also removes its directory).
 */
export async function stopNginx(s: { pid: number; stop(): Promise<void> }): Promise<void> {
  const workers = childrenOf(s.pid);
  try {
    process.kill(s.pid, "SIGTERM");
  } catch {
    /* already gone */
  }
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && [s.pid, ...workers].some(alive)) await Bun.sleep(20);
  for (const w of workers) {
    try {
      if (alive(w)) process.kill(w, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  await s.stop();
}

function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, "utf8");
    return st.slice(st.lastIndexOf(")") + 2, st.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
