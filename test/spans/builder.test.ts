/** The shared span part: a process's spans share one frozen resource object, rebuilt when what it holds changes. */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { buildSpan, type SpanContext } from "../../src/spans/builder.ts";
import { allAttributes, attr } from "../../src/spans/span.ts";
import type { Exchange } from "../../src/protocols/session.ts";
import type { ConnectionMeta } from "../../src/stream/meta.ts";
import type { ProcessDetails } from "../../src/selection/process-registry.ts";

const exchange: Exchange = {
  protocol: "http1", startNs: 1_000n, endNs: 2_000n, partial: false, responseMissing: false,
  name: "GET /", authority: "h:80", traceparent: undefined, isError: () => false, writeAttributes: () => {},
};
const conn = { id: 1, tgid: 7, fd: 3, role: 1, family: 2, localAddr: "127.0.0.1", localPort: 80, remoteAddr: "127.0.0.1", remotePort: 5000, comm: "app" } as ConnectionMeta;
const ctx = (environment = ""): SpanContext => ({ hostName: "host", serviceName: "", environment, customAttributes: {}, toWallNs: (n) => n });

describe("span resource", () => {
  test("shared and frozen per process; a change of service, environment or process gives a new one", () => {
    const proc: ProcessDetails = { pid: 7, name: "app", exePath: "/usr/bin/app", commandLine: "app" };
    const c = ctx();
    const a = buildSpan(exchange, conn, proc, c);
    const b = buildSpan(exchange, conn, proc, c);
    expect(b.resource).toBe(a.resource);
    expect(Object.isFrozen(a.resource)).toBe(true);
    expect(a.resource).toEqual({ "service.name": "app", "host.name": "host", "process.pid": 7, "process.executable.name": "app" });
    const env = buildSpan(exchange, conn, proc, ctx("prod"));
    expect(env.resource).not.toBe(a.resource);
    expect(env.resource["deployment.environment"]).toBe("prod");
    proc.serviceName = "billing";
    expect(buildSpan(exchange, conn, proc, c).resource["service.name"]).toBe("billing");
    const other: ProcessDetails = { pid: 8, name: "app", exePath: "/usr/bin/app", commandLine: "app" };
    expect(buildSpan(exchange, conn, other, c).resource["process.pid"]).toBe(8);
  });
});

describe("shared attributes (Span.shared)", () => {
  const proc = (): ProcessDetails => ({ pid: 7, name: "app", exePath: "/usr/bin/app", commandLine: "app --port 80" });
  /** a connection with no span yet; `built` spans already built on it */
  const meta = (over: Partial<ConnectionMeta> = {}, built = 1) => ({ ...conn, ...over, spans: built }) as ConnectionMeta;

  test("one frozen object per connection while its inputs stay; a changed input gives a new one; the span's own keys are not in it", () => {
    const c = ctx();
    const p = proc();
    const m = meta();
    const a = buildSpan(exchange, m, p, c);
    const b = buildSpan(exchange, m, p, c);
    expect(b.shared).toBe(a.shared!);
    expect(m.spans).toBe(3);
    expect(Object.isFrozen(a.shared)).toBe(true);
    expect(a.shared).toEqual({
      "url.scheme": "http", "network.transport": "tcp", "client.address": "127.0.0.1", "client.port": 5000,
      "network.peer.address": "127.0.0.1", "network.peer.port": 5000, "process.pid": 7, "process.executable.name": "app",
      "process.executable.path": "/usr/bin/app", "process.command_line": "app --port 80", "traceableai.module.name": "ebpf", "ebpf.sampling.ratio": 1,
    });
    expect(a.attributes).toEqual({ "server.address": "h", "server.port": 80 });
    // another connection of the same process: its own object
    expect(buildSpan(exchange, meta({ remotePort: 5001 }), p, c).shared!["client.port"]).toBe(5001);
    // what is learned later about the connection or the process
    m.tls = true;
    m.tlsLibrary = "openssl";
    m.tlsCorrelation = "exact";
    const t = buildSpan(exchange, m, p, c);
    expect(t.shared).not.toBe(a.shared!);
    expect(t.shared).toMatchObject({ "url.scheme": "https", "ebpf.tls.library": "openssl", "ebpf.tls.correlation": "exact" });
    m.samplingRatio = 0.25;
    expect(buildSpan(exchange, m, p, c).shared!["ebpf.sampling.ratio"]).toBe(0.25);
    p.containerId = "abc";
    p.systemdUnit = "app.service";
    expect(buildSpan(exchange, m, p, c).shared).toMatchObject({ "container.id": "abc", "systemd.unit": "app.service" });
    p.commandLine = "app --port 81";
    expect(buildSpan(exchange, m, p, c).shared!["process.command_line"]).toBe("app --port 81");
    m.role = 2; // the role decides which side is the client
    expect(buildSpan(exchange, m, p, c).shared!["client.port"]).toBe(80);
  });

  test("a connection's first span has the connection's attributes as its own (one-exchange connections pay nothing for sharing); the second shares them", () => {
    const m = meta({}, 0);
    const h2: Exchange = { ...exchange, writeAttributes: (a) => { a["url.scheme"] = "https"; } };
    const first = buildSpan(h2, m, proc(), { ...ctx(), customAttributes: { "process.pid": "custom" } });
    expect(first.shared).toBeUndefined();
    expect(first.attributes).toMatchObject({ "url.scheme": "http", "client.port": 5000, "process.pid": "custom", "process.command_line": "app --port 80", "server.port": 80 });
    const second = buildSpan(h2, m, proc(), { ...ctx(), customAttributes: { "process.pid": "custom" } });
    expect(second.shared).toBeDefined();
    expect(allAttributes(second)).toEqual(first.attributes);
    expect(m.spans).toBe(2);
  });

  test("a custom attribute is the span's own and wins: its key is left out of the shared object", () => {
    const c: SpanContext = { ...ctx(), customAttributes: { "process.pid": "custom", team: "a" } };
    const s = buildSpan(exchange, meta(), proc(), c);
    expect(s.attributes).toMatchObject({ "process.pid": "custom", team: "a" });
    expect("process.pid" in s.shared!).toBe(false);
    expect(allAttributes(s)["process.pid"]).toBe("custom");
  });

  test("an exchange's url.scheme (HTTP/2's :scheme) gives way to the connection's, as before; no key is in both", () => {
    const h2: Exchange = { ...exchange, writeAttributes: (a) => { a["url.scheme"] = "https"; a["http.request.method"] = "GET"; } };
    const s = buildSpan(h2, meta(), proc(), ctx());
    expect(attr(s, "url.scheme")).toBe("http");
    expect(Object.keys(s.attributes).filter((k) => k in s.shared!)).toEqual([]);
  });

  test("no protocol writes a shared key but url.scheme (HTTP/2's :scheme, which buildSpan drops)", () => {
    const sharedKeys = Object.keys(buildSpan(exchange, meta({ tls: true, tlsLibrary: "x", tlsCorrelation: "exact" }), { ...proc(), containerId: "c", systemdUnit: "u" }, ctx()).shared!);
    expect(sharedKeys.length).toBe(16);
    const root = join(import.meta.dir, "../../src/protocols");
    const found: string[] = [];
    for (const f of readdirSync(root, { recursive: true }) as string[]) {
      if (!f.endsWith(".ts")) continue;
      const src = readFileSync(join(root, f), "utf8");
      for (const k of sharedKeys) if (src.includes(`"${k}"`)) found.push(`${f}: ${k}`);
    }
    expect(found.sort()).toEqual(["http2/exchange.ts: url.scheme"]);
  });
});
