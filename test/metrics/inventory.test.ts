/**
 * The API inventory (src/metrics/inventory.ts) and the `apis` / `top` renderings that read it
 * or the /metrics text: persistence across instances, auth schemes without values, bounds,
 * --new-since, and a top frame that fits 80×24.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiInventory, authSchemesOf, baseContentType, readInventoryFile } from "../../src/metrics/inventory.ts";
import { apisCommand, formatTable, parseSince } from "../../src/cli/apis.ts";
import { quantile, renderFrame, rowsFromMetrics, viewRows, type Frame } from "../../src/cli/top.ts";
import { RedMetrics } from "../../src/metrics/red.ts";
import { renderRedPrometheus } from "../../src/metrics/prometheus.ts";
import type { Span } from "../../src/spans/span.ts";

const dir = mkdtempSync(join(tmpdir(), "et-inventory-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function span(path: string, o: { status?: number; method?: string; headers?: Record<string, string>; tls?: boolean; redacted?: boolean; atMs?: number; kind?: "server" | "client"; ms?: number; service?: string } = {}): Span {
  const attrs: Span["attributes"] = { "http.request.method": o.method ?? "GET", "url.path": path, "url.scheme": o.tls ? "https" : "http", "http.response.status_code": o.status ?? 200 };
  for (const [k, v] of Object.entries(o.headers ?? {})) attrs[`http.request.header.${k}`] = v;
  attrs["http.response.header.content-type"] = "application/json; charset=utf-8";
  attrs["http.response.body.size"] = 100;
  if (o.redacted) attrs["ebpf.redacted"] = "authorization";
  const start = BigInt(o.atMs ?? 1_700_000_000_000) * 1_000_000n;
  return {
    traceId: "a".repeat(32), spanId: "b".repeat(16), name: "x", kind: o.kind ?? "server",
    startTimeUnixNano: start, endTimeUnixNano: start + BigInt(Math.round((o.ms ?? 2) * 1e6)), error: (o.status ?? 200) >= 500,
    attributes: attrs, resource: { "service.name": o.service ?? "shop" },
  };
}

describe("API inventory", () => {
  test("collects methods, statuses, content types, auth schemes (never values), redaction, TLS", () => {
    const inv = new ApiInventory("");
    inv.record(span("/users/1", { headers: { authorization: "Bearer s3cr3t-token-value" }, atMs: 1000 }), "/users/{id}");
    inv.record(span("/users/2", { method: "DELETE", status: 403, headers: { "x-api-key": "k-123", "content-type": "application/json" }, tls: true, atMs: 3000 }), "/users/{id}");
    inv.record(span("/users/3", { headers: { authorization: "Basic dXNlcjpwYXNz", cookie: "sid=1" }, redacted: true, atMs: 2000 }), "/users/{id}");
    const [e] = inv.list();
    expect(e).toMatchObject({
      service: "shop", direction: "server", route: "/users/{id}", count: 3, firstSeen: 1000, lastSeen: 3000,
      methods: ["GET", "DELETE"], statusCodes: [200, 403], requestContentTypes: ["application/json"], responseContentTypes: ["application/json"],
      authSchemes: ["bearer", "header:x-api-key", "basic", "cookie"], redacted: true, tls: true, plaintext: true,
    });
    expect(JSON.stringify(inv.list())).not.toMatch(/s3cr3t|dXNlcjpwYXNz|k-123|sid=1/);
  });

  test("helpers", () => {
    expect(baseContentType("Application/JSON; charset=utf-8")).toBe("application/json");
    expect(authSchemesOf({ "http.request.header.authorization": "****" })).toEqual(["header:authorization"]);
    expect(authSchemesOf({ "http.request.header.proxy-authorization": "Negotiate abc" })).toEqual(["negotiate"]);
  });

  test("content types are taken apart once and still right past the cache's bound; a value that is not one stays out", () => {
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 600; i++) expect(baseContentType(`Application/X-T${i}; charset=utf-8`)).toBe(`application/x-t${i}`);
    }
    expect(baseContentType(" ; charset=utf-8")).toBeUndefined();
    expect(baseContentType(" ; charset=utf-8")).toBeUndefined(); // the cached "no type"
    expect(baseContentType("x".repeat(65))).toBeUndefined();
    expect(baseContentType(42)).toBeUndefined();
  });

  test("entries per service, direction and route: each its own, counted once", () => {
    const inv = new ApiInventory("");
    for (const service of ["shop", "cart"]) {
      for (const kind of ["server", "client"] as const) {
        inv.record(span("/a", { service, kind }), "/a");
        inv.record(span("/a", { service, kind, method: "POST" }), "/a");
        inv.record(span("/b", { service, kind }), "/b");
      }
    }
    const got = inv.list().map((e) => `${e.service} ${e.direction} ${e.route} ${e.count} ${e.methods.join(",")}`).sort();
    expect(got).toEqual([
      "cart client /a 2 GET,POST", "cart client /b 1 GET", "cart server /a 2 GET,POST", "cart server /b 1 GET",
      "shop client /a 2 GET,POST", "shop client /b 1 GET", "shop server /a 2 GET,POST", "shop server /b 1 GET",
    ]);
    expect(inv.stats().TrackedApis).toBe(8);
  });

  test("survives a restart: a second instance continues from the file", () => {
    const path = join(dir, "a", "apis.json");
    const a = new ApiInventory(path);
    a.record(span("/users/1", { atMs: 1000 }), "/users/{id}");
    a.stop();
    const b = new ApiInventory(path);
    b.record(span("/users/2", { atMs: 5000, method: "PUT" }), "/users/{id}");
    b.record(span("/new", { atMs: 6000 }), "/new");
    b.stop();
    const saved = readInventoryFile(path).entries;
    expect(saved.find((e) => e.route === "/users/{id}")).toMatchObject({ count: 2, firstSeen: 1000, lastSeen: 5000, methods: ["GET", "PUT"] });
    expect(saved.length).toBe(2);
  });

  test("a corrupt file starts empty and is replaced", () => {
    const path = join(dir, "bad.json");
    writeFileSync(path, "{not json");
    const inv = new ApiInventory(path);
    expect(inv.list()).toEqual([]);
    inv.record(span("/a"), "/a");
    inv.stop();
    expect(readInventoryFile(path).entries.length).toBe(1);
  });

  test("an unwritable path is counted, not thrown", () => {
    const inv = new ApiInventory("/proc/self/nope/apis.json");
    inv.record(span("/a"), "/a");
    inv.stop();
    expect(inv.stats().InventoryWriteErrors).toBe(1);
  });
});

describe("apis command", () => {
  test("--json, --new-since and the table", () => {
    const path = join(dir, "cmd.json");
    const inv = new ApiInventory(path);
    const now = 1_700_000_100_000;
    inv.record(span("/old", { atMs: now - 3 * 3600_000 }), "/old");
    inv.record(span("/fresh", { atMs: now - 60_000, tls: true }), "/fresh");
    inv.stop();
    const out: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write;
    try {
      expect(apisCommand({ config: "/nonexistent.yaml", file: path, json: true, newSince: "1h", now })).toBe(0);
    } finally {
      process.stdout.write = write;
    }
    const listed = JSON.parse(out.join(""));
    expect(listed.map((e: { route: string }) => e.route)).toEqual(["/fresh"]);
    expect(listed[0]).toMatchObject({ transport: "tls", firstSeen: new Date(now - 60_000).toISOString().replace(/\.\d{3}Z$/, "Z") });
    const table = formatTable(readInventoryFile(path).entries);
    expect(table.split("\n")[0]).toMatch(/^SERVICE\s+DIR\s+ROUTE\s+METHODS/);
    expect(table).toContain("/old");
    expect(parseSince("7d")).toBe(7 * 86_400_000);
    expect(() => parseSince("soon")).toThrow("--new-since");
    expect(apisCommand({ config: "/nonexistent.yaml", file: join(dir, "missing.json") })).toBe(1);
  });
});

describe("top", () => {
  const red = new RedMetrics();
  for (let i = 0; i < 40; i++) red.record(span(`/users/${i}`, { ms: 3 }), "/users/{id}");
  for (let i = 0; i < 10; i++) red.record(span(`/orders/${i}`, { ms: 30, status: 503 }), "/orders/{id}");
  red.record(span("/up", { kind: "client", ms: 300, service: "billing" }), "/up");
  const text = renderRedPrometheus(red.snapshot()) + "# TYPE ebpf_tracer_event_lost_total counter\nebpf_tracer_event_lost_total 3\n";

  test("rows per service, direction and route from /metrics text", () => {
    const { rows, counters } = rowsFromMetrics(text);
    const byRoute = Object.fromEntries([...rows.values()].map((r) => [r.route, r]));
    expect(byRoute["/users/{id}"]).toMatchObject({ service: "shop", dir: "in", count: 40, errors: 0, bytes: 4000 });
    expect(byRoute["/orders/{id}"]).toMatchObject({ count: 10, errors: 10 });
    expect(byRoute["/up"]).toMatchObject({ service: "billing", dir: "out", count: 1 });
    expect(counters.get("ebpf_tracer_event_lost_total")).toBe(3);
  });

  test("quantiles interpolate within buckets", () => {
    expect(quantile([[0.005, 0], [0.01, 10], [0.025, 10], [Infinity, 10]], 0.5)).toBeCloseTo(0.0075, 9);
    expect(quantile([[0.005, 0], [Infinity, 4]], 0.99)).toBe(-0.005); // past the last bound: "more than"
    expect(quantile([[0.005, 0]], 0.5)).toBeUndefined();
  });

  test("a frame fits 80x24 and rates come from the interval", () => {
    const first: Frame = { rows: [...rowsFromMetrics(text).rows.values()], counters: new Map([["ebpf_tracer_event_lost_total", 3]]), status: { uptime_seconds: 65, healthy: true }, atMs: 0 };
    const more = new RedMetrics();
    for (let i = 0; i < 40; i++) more.record(span(`/users/${i}`, { ms: 3 }), "/users/{id}");
    for (let i = 0; i < 20; i++) more.record(span(`/users/${i}`, { ms: 3 }), "/users/{id}");
    for (let i = 0; i < 10; i++) more.record(span(`/orders/${i}`, { ms: 30, status: 503 }), "/orders/{id}");
    more.record(span("/up", { kind: "client", ms: 300, service: "billing" }), "/up");
    const second: Frame = { ...first, rows: [...rowsFromMetrics(renderRedPrometheus(more.snapshot())).rows.values()], atMs: 2000 };
    const v = viewRows(second, first).find((r) => r.route === "/users/{id}")!;
    expect(v.rps).toBe(10);
    expect(v.total).toBe(60);
    const lines = renderFrame(second, first, "r", 80, 24, "127.0.0.1:9464");
    expect(lines.length).toBeLessThanOrEqual(24);
    expect(lines.every((l) => l.length <= 80)).toBe(true);
    expect(lines[1]).toContain("events lost 3");
    expect(lines[4]).toContain("/users/{id}");
    const withTls = renderFrame({ ...second, status: { ...second.status, tls_coverage: [{ pid: 1, connections: { tls: 4, decrypted: 3 } }, { pid: 2, connections: { tls: 2, decrypted: 0 } }] } }, first, "r", 80, 24, "x");
    expect(withTls[1]).toContain("TLS 3/6 connections decrypted");
    const many = renderFrame({ ...second, rows: Array.from({ length: 50 }, (_, i) => ({ ...second.rows[0]!, route: `/r${i}` })) }, undefined, "t", 80, 24, "x");
    expect(many.length).toBe(24);
    expect(many[23]).toContain("more");
  });
});
