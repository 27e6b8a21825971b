/**
 * Sockets shared between fds and processes: a fork-per-connection server (the parent accepts and
 * closes, the child serves) and an inetd-style one (the child reads fd 0 and writes fd 1, both
 * dup'd from the accepted socket). Each exchange must come out as one span on one connection.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { TracerProcess, rootSkipReason, ROOT } from "../support/tracer.ts";
import { curl, port, waitForPort } from "../support/servers.ts";
import type { Subprocess } from "bun";

const skip = rootSkipReason();
if (skip) console.warn(`skipping shared-socket tests: ${skip}`);

let procs: Subprocess[] = [];
let tracer: TracerProcess | undefined;
afterEach(async () => {
  await tracer?.stop();
  tracer = undefined;
  for (const p of procs) p.kill("SIGKILL");
  procs = [];
});

async function server(script: string): Promise<{ pid: number; port: number }> {
  const p = port();
  const proc = Bun.spawn(["/usr/bin/python3", resolve(ROOT, "test/fixtures/servers", script), String(p)], { stdout: "ignore", stderr: "ignore" });
  procs.push(proc);
  await waitForPort(p);
  return { pid: proc.pid, port: p };
}

describe.skipIf(!!skip)("sockets shared by fds and processes", () => {
  test("fork per connection: the child's bytes continue the parent's accepted connection", async () => {
    const s = await server("forking-http-server.py");
    tracer = await TracerProcess.capture(["--pid", String(s.pid)]);
    for (const path of ["/", "/nope"]) expect(curl(["-o", "/dev/null", `http://127.0.0.1:${s.port}${path}`]).code).toBe(0);
    const spans = await tracer.waitForSpans(2);
    expect(spans.map((x) => [x.attributes["url.path"], x.attributes["http.response.status_code"]])).toEqual([["/", 200], ["/nope", 404]]);
    for (const sp of spans) {
      expect(sp.kind).toBe("server");
      expect(sp.attributes["ebpf.partial"]).toBeUndefined();
      expect(sp.attributes["server.port"]).toBe(s.port);
    }
  });

  test("inetd style: request read from fd 0 and response written to fd 1 pair up", async () => {
    const s = await server("inetd-style-server.py");
    tracer = await TracerProcess.capture(["--pid", String(s.pid)]);
    const r = curl([`http://127.0.0.1:${s.port}/dup?x=1`]);
    expect(r.out).toBe('{"ok":true}');
    const [sp] = await tracer.waitForSpans(1);
    expect(sp).toBeDefined();
    expect(sp!.attributes).toMatchObject({ "url.path": "/dup", "url.query": "x=1", "http.response.status_code": 200, "http.response.body": '{"ok":true}' });
    expect(sp!.attributes["ebpf.partial"]).toBeUndefined();
    await Bun.sleep(300);
    expect(tracer.spans.length).toBe(1);
  });
});
