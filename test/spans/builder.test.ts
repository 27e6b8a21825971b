/** The shared span part: a process's spans share one frozen resource object, rebuilt when what it holds changes. */
import { describe, expect, test } from "bun:test";
import { buildSpan, type SpanContext } from "../../src/spans/builder.ts";
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
