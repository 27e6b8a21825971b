/**
 * Fuzzing the admin endpoint's HTTP handling over real loopback sockets: random bytes, broken
 * request lines, odd methods and paths, huge headers and bodies, slow and half-closed clients.
 * The server must answer each with a status (or close the connection), keep serving /healthz,
 * never call the provider for a refused request, and never throw. Time-bounded; seed printed.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { startAdminServer, type StatusProvider } from "../../src/cli/admin-server.ts";

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const BUDGET_MS = Number(process.env.FUZZ_MS ?? 2500);

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** calls of the token-protected server's status() */
let providerErrors = 0;
const provider: StatusProvider = {
  health: () => ({ ok: true, reasons: [] }),
  counters: () => ({ SpansWritten: 1, 'ProbeEntries{syscall="read"}': 2 }),
  status: () => ({ version: "fuzz" }),
  probes: () => [],
};
const token = "fuzz-token-0123456789abcdef";
const open = startAdminServer("127.0.0.1:0", provider);
const locked = startAdminServer("127.0.0.1:0", { ...provider, status: () => (providerErrors++, {}) }, { bearerToken: token });
afterAll(() => {
  open.stop();
  locked.stop();
});

/** Sends raw bytes; resolves with what came back before the server closed or 1.5 s passed. */
function send(url: string, bytes: Uint8Array | string, opts: { halfClose?: boolean } = {}): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect(Number(u.port), u.hostname);
    let out = "";
    const done = () => resolve(out);
    const timer = setTimeout(() => s.destroy(), 1500);
    s.on("data", (d) => (out += d.toString("latin1")));
    s.on("close", () => {
      clearTimeout(timer);
      done();
    });
    s.on("error", () => undefined);
    s.write(bytes, () => {
      if (opts.halfClose) s.end();
    });
  });
}

const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "PROPFIND", "G\u00e9T", "", "get", "GET GET"];
const PATHS = ["/", "/healthz", "/metrics", "/status", "/probes", "//status", "/status?x=1", "/%00", "/../../etc/passwd", "*", "http://evil/status", "/" + "a".repeat(10_000), "/\u00ff", "/status#frag", "status", ""];
const VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", ""];

function randomRequest(r: () => number): string {
  const pick = <T,>(a: T[]) => a[Math.floor(r() * a.length)]!;
  let req = `${pick(METHODS)} ${pick(PATHS)} ${pick(VERSIONS)}\r\n`;
  const n = Math.floor(r() * 6);
  for (let i = 0; i < n; i++) {
    switch (Math.floor(r() * 8)) {
      case 0: req += `Host: ${pick(["127.0.0.1", "localhost:1", "evil.example", "[::1]", "", "a".repeat(5000)])}\r\n`; break;
      case 1: req += `Content-Length: ${pick(["0", "5", "-1", "99999999999", "abc", "1, 2"])}\r\n`; break;
      case 2: req += "Transfer-Encoding: chunked\r\n"; break;
      case 3: req += `Authorization: ${pick(["Bearer x", `Bearer ${token}`, "Basic abc", "", "Bearer " + "x".repeat(10_000)])}\r\n`; break;
      case 4: req += "X-Long: " + "v".repeat(Math.floor(r() * 20_000)) + "\r\n"; break;
      case 5: req += "No-Colon-Header\r\n"; break;
      case 6: req += " folded: continuation\r\n"; break;
      default: req += `${String.fromCharCode(Math.floor(r() * 256))}: ${String.fromCharCode(Math.floor(r() * 256))}\r\n`;
    }
  }
  req += r() < 0.8 ? "\r\n" : "";
  if (r() < 0.3) req += "x".repeat(Math.floor(r() * 3000));
  return req;
}

async function healthy(url: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(`${url}/healthz`, { headers });
  expect(res.status).toBe(200);
}

describe(`admin endpoint fuzz (seed ${SEED})`, () => {
  test("random and broken requests: an answer or a close, and the server keeps serving", async () => {
    const r = rng(SEED);
    const end = Date.now() + BUDGET_MS;
    let n = 0;
    const statuses = new Map<string, number>();
    while (Date.now() < end || n < 60) {
      const target = r() < 0.5 ? open.url : locked.url;
      let bytes: Uint8Array | string;
      if (r() < 0.2) bytes = crypto.getRandomValues(new Uint8Array(1 + Math.floor(r() * 2048)));
      else bytes = randomRequest(r);
      const batch = [send(target, bytes, { halfClose: r() < 0.5 })];
      if (r() < 0.3) batch.push(send(target, typeof bytes === "string" ? bytes.slice(0, Math.floor(r() * bytes.length)) : bytes, { halfClose: true })); // cut mid-request
      for (const out of await Promise.all(batch)) {
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(out)?.[1] ?? (out === "" ? "closed" : "other");
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status === "other") throw new Error(`seed ${SEED}: unexpected answer ${JSON.stringify(out.slice(0, 200))}`);
        expect(Number(status) >= 500 && Number(status) !== 505).toBe(false); // no 5xx from a bad request
      }
      n++;
      if (n % 20 === 0) {
        await healthy(open.url);
        await healthy(locked.url, { authorization: `Bearer ${token}` });
      }
    }
    await healthy(open.url);
    await healthy(locked.url, { authorization: `Bearer ${token}` });
    expect(statuses.size).toBeGreaterThan(1);
  });

  test("refused requests never reach the provider", async () => {
    const before = providerErrors;
    for (const req of ["GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n\r\n", "POST /status HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"]) {
      expect(await send(locked.url, req, { halfClose: true })).toStartWith("HTTP/1.1 401");
    }
    expect(providerErrors).toBe(before);
  });

  test("many connections at once, then normal service", async () => {
    const all: Promise<string>[] = [];
    for (let i = 0; i < 200; i++) all.push(send(open.url, i % 2 ? "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" : "GET /sta", { halfClose: i % 3 === 0 }));
    await Promise.all(all);
    await healthy(open.url);
    const m = await (await fetch(`${open.url}/metrics`)).text();
    expect(m).toContain("ebpf_tracer_spans_written_total 1");
  });
});
