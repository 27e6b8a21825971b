/**
 * Root integration tests of syscalls whose byte counts are not their return value, or that move
 * no bytes: sendmmsg/recvmmsg (a message count; the stream advances by the msg_len sum) and
 * recv with MSG_PEEK (the bytes come again with the real read). Each would shift every later
 * stream position on the connection, so the spans below must be exact, one per request.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ROOT, rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { port, waitForPort } from "../support/servers.ts";
import { Cleanups, curlOk, exitStats, run } from "../support/http-kit.ts";

setDefaultTimeout(60_000);

const SKIP = rootSkipReason() ?? (Bun.which("cc") ? undefined : "needs a C compiler (cc) for test/fixtures/servers/mmsg-http.c");
if (SKIP) console.warn(`test/root/syscall-edges.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

function byPath(spans: SpanJson[]): Record<string, SpanJson> {
  return Object.fromEntries(spans.map((s) => [String(s.attributes["url.path"]), s]));
}

describe.skipIf(!!SKIP)("sendmmsg / recvmmsg", () => {
  test("three requests and responses in one call each, then a plain exchange: every span exact, on both ends", async () => {
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-mmsg-")), (d) => rmSync(d, { recursive: true, force: true }));
    const bin = join(dir, "mmsg-http");
    const cc = run(["cc", "-O2", "-o", bin, resolve(ROOT, "test/fixtures/servers/mmsg-http.c")]);
    expect(cc.stderr).toBe("");
    const t = c.add(await TracerProcess.capture(["--exe", "mmsg-http", "--mode", "ingress_and_egress", "--log-level", "info"]), (x) => x.stop());
    const p = port();
    const r = run([bin, String(p)]);
    expect(r.stdout.trim()).toBe("ok");

    const onPort = (kind: "server" | "client") => (s: SpanJson) => s.kind === kind && s.attributes["server.port"] === p;
    const server = await t.waitForSpans(4, onPort("server"));
    const client = await t.waitForSpans(4, onPort("client"));
    for (const spans of [server, client]) {
      expect(spans.map((s) => s.name).sort()).toEqual(["GET /after", "GET /m1", "GET /m3", "POST /m2"]);
      const s = byPath(spans);
      expect(s["/m1"]!.attributes).toMatchObject({ "http.response.status_code": 200, "http.response.body": "one!!", "http.response.body.size": 5 });
      expect(s["/m2"]!.attributes).toMatchObject({
        "http.request.method": "POST", "http.request.body": "hello mmsg", "http.request.body.size": 10,
        "http.response.status_code": 201, "http.response.body": "two!!!!",
      });
      expect(s["/m3"]!.attributes).toMatchObject({ "url.query": "x=3", "http.response.status_code": 404, "http.response.body": "three!!!!" });
      expect(s["/after"]!.attributes).toMatchObject({ "http.response.status_code": 200, "http.response.body": "after" });
      for (const x of spans) {
        expect(x.attributes["ebpf.partial"]).toBeUndefined();
        expect(x.attributes["http.request.header.host"]).toBe("mmsg");
      }
    }
    await t.stop();
    expect(exitStats(t.stderr)).toMatchObject({ ReqParsingErrors: 0, ResParsingErrors: 0, LostBytes: 0, TruncatedBytes: 0, SpansEmitted: 8 });
  });
});

describe.skipIf(!!SKIP)("MSG_PEEK", () => {
  test("a server that peeks (recv and recvmsg) before each read: one span per request, no bytes twice", async () => {
    const p = port();
    const srv = Bun.spawn(["/usr/bin/python3", resolve(ROOT, "test/fixtures/servers/peek-server.py"), String(p)], { stdout: "ignore", stderr: "pipe" });
    c.add(srv, (x) => x.kill("SIGKILL"));
    await waitForPort(p);
    const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid), "--log-level", "info"]), (x) => x.stop());
    const urls = ["/one", "/two?a=b", "/three", "/four"].map((u) => `http://127.0.0.1:${p}${u}`);
    const r = curlOk(urls);
    expect(r.stdout).toBe("you asked for /oneyou asked for /two?a=byou asked for /threeyou asked for /four");
    const spans = await t.waitForSpans(4, (s) => s.attributes["server.port"] === p);
    await Bun.sleep(300); // a duplicate would come right after
    const all = t.spans.filter((s) => s.attributes["server.port"] === p);
    expect(all.map((s) => s.name)).toEqual(["GET /one", "GET /two", "GET /three", "GET /four"]);
    for (const s of spans) {
      expect(s.attributes["http.response.status_code"]).toBe(200);
      expect(String(s.attributes["http.response.body"])).toBe(`you asked for ${s.attributes["url.path"]}${s.attributes["url.query"] ? "?" + s.attributes["url.query"] : ""}`);
      expect(s.attributes["ebpf.partial"]).toBeUndefined();
    }
    await t.stop();
    expect(exitStats(t.stderr)).toMatchObject({ ReqParsingErrors: 0, ResParsingErrors: 0, LostBytes: 0, SpansEmitted: 4 });
  });
});
