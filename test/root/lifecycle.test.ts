/**
 * Root integration tests of connections whose process dies without calling close(2): the kernel
 * releases the socket, and the connection must end there (sock:inet_sock_set_state → TCP_CLOSE),
 * with what was pending emitted as for a close: a request without response, a partial response.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ROOT, rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { port, waitForPort } from "../support/servers.ts";
import { Cleanups, exitStats, rawExchange } from "../support/http-kit.ts";

setDefaultTimeout(60_000);

const SKIP = rootSkipReason() ?? (Bun.which("curl") ? undefined : "needs curl");
if (SKIP) console.warn(`test/root/lifecycle.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

/** Resolves once `text` appeared on `stream` (the child says it got that far). */
async function waitForLine(stream: ReadableStream<Uint8Array>, text: string, timeoutMs = 10_000): Promise<void> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let seen = "";
  const deadline = Date.now() + timeoutMs;
  try {
    while (!seen.includes(text)) {
      const r = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - Date.now())).then(() => undefined)]);
      if (!r || r.done) throw new Error(`no "${text}" from the child (got: ${seen})`);
      seen += dec.decode(r.value);
    }
  } finally {
    reader.releaseLock();
  }
}

describe.skipIf(!!SKIP)("connections of processes killed without close(2)", () => {
  test("a server killed with SIGKILL between request and response: a span with ebpf.response.missing", async () => {
    const p = port();
    const srv = Bun.spawn(["/usr/bin/python3", resolve(ROOT, "test/fixtures/servers/stall-server.py"), String(p)], { stdout: "pipe", stderr: "ignore" });
    c.add(srv, (x) => x.kill("SIGKILL"));
    await waitForPort(p); // the server skips this probe connection
    const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid), "--log-level", "info"]), (x) => x.stop());
    const exchange = rawExchange("127.0.0.1", p, "GET /never HTTP/1.1\r\nHost: stall\r\n\r\n", () => false, 15_000);
    await waitForLine(srv.stdout, "read");
    await Bun.sleep(200); // the tracer has the request; now the process dies holding the socket
    srv.kill("SIGKILL");
    await srv.exited;
    const r = await exchange;
    expect(r.closedByPeer).toBe(true);
    expect(r.got).toBe("");
    const [s] = await t.waitForSpans(1, (x) => x.attributes["server.port"] === p, 20_000);
    expect(s?.name).toBe("GET /never");
    expect(s!.kind).toBe("server");
    expect(s!.attributes["ebpf.response.missing"]).toBe(true);
    expect(s!.attributes["http.request.header.host"]).toBe("stall");
    await t.stop();
    expect(exitStats(t.stderr)).toMatchObject({ SpansEmitted: 1, OpenConnections: 0 });
  });

  test("a client killed with SIGKILL in the middle of a response: a partial span", async () => {
    const p = port();
    let served = 0;
    const sockets: { end(): void }[] = [];
    // A server that sends the head and part of a 100000-byte body, then waits.
    const server = Bun.listen({
      hostname: "127.0.0.1",
      port: p,
      socket: {
        data(sock) {
          if (served++) return;
          sockets.push(sock);
          sock.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n" + "x".repeat(1000));
        },
        end(sock) {
          sock.end();
        },
      },
    });
    c.add(server, (x) => x.stop(true));
    const t = c.add(await TracerProcess.capture(["--exe", "curl", "--mode", "egress", "--log-level", "info"]), (x) => x.stop());
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-kill-")), (d) => rmSync(d, { recursive: true, force: true }));
    const body = join(dir, "body");
    const curl = Bun.spawn(["curl", "-sSN", "-o", body, "--max-time", "30", `http://127.0.0.1:${p}/slow`], { stdout: "ignore", stderr: "ignore" });
    c.add(curl, (x) => x.kill("SIGKILL"));
    // curl has read the head and written the first 1000 body bytes: its read syscalls are done
    const deadline = Date.now() + 10_000;
    while (!(existsSync(body) && statSync(body).size === 1000) && Date.now() < deadline) await Bun.sleep(20);
    expect(served).toBe(1);
    expect(statSync(body).size).toBe(1000);
    curl.kill("SIGKILL");
    await curl.exited;
    const [s] = await t.waitForSpans(1, (x) => x.attributes["server.port"] === p, 20_000);
    expect(s?.name).toBe("GET /slow");
    expect(s!.kind).toBe("client");
    expect(s!.attributes).toMatchObject({ "url.path": "/slow", "http.response.status_code": 200, "ebpf.partial": true });
    await t.stop();
    // (other curl processes on the machine are captured too: count only this port's spans)
    expect(t.spans.filter((x) => x.attributes["server.port"] === p)).toHaveLength(1);
    expect(exitStats(t.stderr)!.PartialSpans).toBeGreaterThanOrEqual(1);
  });
});
