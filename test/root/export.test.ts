/**
 * Root end-to-end tests of OTLP export (issue 3) with the compiled binary: `ebpf-tracer run -c`
 * with `exporter: otlp` captures a Node server driven by curl and sends its spans over HTTPS to a
 * real receiver (test/support/otlp-receiver.ts) that decodes them with the official protos.
 *
 * Covered: every span attribute of docs/spans.md with its OTLP type (protobuf+gzip, JSON
 * uncompressed), a wrong CA fixed in place + SIGHUP, a receiver down for 10 s, SIGKILL with a
 * spool and a restart, 503 + Retry-After, 400, partial success, and a receiver that never answers.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import pkg from "../../package.json" with { type: "json" };
import { rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { startNode, type Server } from "../support/servers.ts";
import { Cleanups, curlOk, logRecords, NODE_APP } from "../support/http-kit.ts";
import { makeTestCerts, removeTestCerts, type TestCerts } from "../support/certs.ts";
import { decodeBody, OtlpReceiver, spansOfRequest, type ReceivedSpan, type ReceiverOptions, type TypedValue } from "../support/otlp-receiver.ts";
import { toYaml } from "../support/yaml.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/export.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());
setDefaultTimeout(90_000);

let certs: TestCerts;
beforeAll(() => {
  if (!SKIP) certs = makeTestCerts();
});
afterAll(() => {
  if (certs) removeTestCerts(certs);
});

// ---- helpers --------------------------------------------------------------------------------


interface Setup {
  dir: string;
  cfgPath: string;
  caPath: string;
  spoolDir: string;
  rx: OtlpReceiver;
  server: Server;
}

interface Options {
  reporting?: Record<string, unknown>;
  top?: Record<string, unknown>;
  /** CA file content to start with (default: the receiver's CA) */
  ca?: string;
  /** receiver options beyond its TLS material (e.g. a collector without zstd) */
  receiver?: Omit<ReceiverOptions, "tls">;
}

/** A receiver, a Node server and a config (not started yet) selecting the server by port. */
async function setup(o: Options = {}): Promise<Setup> {
  const dir = c.add(mkdtempSync(join(tmpdir(), "et-exp-")), (d) => rmSync(d, { recursive: true, force: true }));
  const rx = c.add(await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key }, ...(o.receiver ?? {}) }), (r) => r.close());
  const server = c.add(await startNode(NODE_APP), (s) => s.stop());
  const caPath = join(dir, "ca.pem");
  copyFileSync(o.ca ?? certs.ca.cert, caPath);
  const spoolDir = join(dir, "spool");
  const cfg = {
    exporter: "otlp",
    stats_interval: "1s",
    shutdown_timeout: "2s",
    admin: { enabled: false },
    targets: [{ port: server.port }],
    agent_config: {
      ca_cert_file: caPath,
      reporting: { endpoint: `https://127.0.0.1:${rx.port}`, max_batch_delay: "200ms", ...(o.reporting ?? {}) },
    },
    spool: { path: spoolDir },
    ...(o.top ?? {}),
  };
  const cfgPath = join(dir, "cfg.yaml");
  writeFileSync(cfgPath, toYaml(cfg).replace(/^\n/, ""));
  return { dir, cfgPath, caPath, spoolDir, rx, server };
}

async function startAgent(s: Setup): Promise<TracerProcess> {
  return c.add(await TracerProcess.start(["run", "-c", s.cfgPath], "capture started"), (t) => t.stop("SIGTERM"));
}

function recs(t: TracerProcess, msg?: string | RegExp): Record<string, unknown>[] {
  return logRecords(t.stderr).filter((r) => msg === undefined || (typeof msg === "string" ? r.msg === msg : msg.test(String(r.msg))));
}

function lastStats(t: TracerProcess): Record<string, number> {
  const s = recs(t, "stats").at(-1);
  if (!s) throw new Error(`no stats line yet:\n${t.stderr}`);
  return s as Record<string, number>;
}

async function until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

const query = (s: ReceivedSpan): string => (s.attributes["url.query"] as { stringValue?: string } | undefined)?.stringValue ?? "";
const withMarker = (rx: OtlpReceiver, m: string) => rx.spans.filter((s) => query(s).includes(m));

/** Sends `n` GETs to the server, one curl process each, tagged `m=<marker>&i=<i>`. */
function getN(server: Server, marker: string, n: number, from = 0): void {
  for (let i = from; i < from + n; i++) curlOk(["-o", "/dev/null", `http://127.0.0.1:${server.port}/json?m=${marker}&i=${i}`]);
}

/** Spool files (`<seq>.otlp`) and the span ids their bodies hold, decoded like the receiver does. */
function spoolContents(dir: string): { files: string[]; spanIds: string[] } {
  if (!existsSync(dir)) return { files: [], spanIds: [] };
  const files = readdirSync(dir).filter((f) => /^\d{16}\.otlp$/.test(f)).sort();
  const spanIds: string[] = [];
  for (const f of files) {
    const b = readFileSync(join(dir, f));
    expect(b.subarray(0, 8).toString("latin1")).toBe("EBTSPOOL");
    const encoding = b[9] === 1 ? "application/json" : "application/x-protobuf";
    const compression = b[10]! & 2 ? "zstd" : b[10]! & 1 ? "gzip" : "";
    const count = b.readUInt32LE(12);
    const len = b.readUInt32LE(24);
    const spans = spansOfRequest(decodeBody(b.subarray(32, 32 + len), encoding, compression), 0);
    expect(spans).toHaveLength(count);
    spanIds.push(...spans.map((s) => s.traceId + s.spanId));
  }
  return { files, spanIds };
}

const str = (v: string): TypedValue => ({ stringValue: v });
const int = (v: number): TypedValue => ({ intValue: String(v) });

// ---- tests ------------------------------------------------------------------------------------

describe.skipIf(!!SKIP)("OTLP export end to end: span content", () => {
  const variants = [
    { encoding: "protobuf", compression: "gzip", contentType: "application/x-protobuf", contentEncoding: "gzip" },
    { encoding: "json", compression: "none", contentType: "application/json", contentEncoding: "" },
    { encoding: "protobuf", compression: "zstd", contentType: "application/x-protobuf", contentEncoding: "zstd" },
  ] as const;
  for (const v of variants) {
    test(`${v.encoding} + ${v.compression}: a POST with a JSON body arrives with every documented attribute, typed`, async () => {
      const s = await setup({
        reporting: { encoding: v.encoding, compression: v.compression },
        top: {
          environment: "e2e",
          custom_span_attributes: { team: "payments" },
          data_capture: { body_max_size_bytes: 32 },
        },
      });
      const t = await startAgent(s);
      const t0 = BigInt(Date.now()) * 1_000_000n;
      const body = JSON.stringify({ order: 42, items: ["a", "b"], note: "a body longer than thirty-two bytes" });
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const parent = "00f067aa0ba902b7";
      const r = curlOk(["-w", "<lp:%{local_port}>", "-X", "POST", "-H", "Content-Type: application/json", "-H", "X-Custom: one",
        "-H", `traceparent: 00-${traceId}-${parent}-01`, "--data-binary", body, `http://127.0.0.1:${s.server.port}/echo?q=1&r=two`]);
      expect(r.stdout).toStartWith(body);
      const lp = Number(/<lp:(\d+)>/.exec(r.stdout)![1]);
      curlOk(["-o", "/dev/null", `http://127.0.0.1:${s.server.port}/status/503`]);
      await s.rx.waitForSpans(2, 10_000);
      const t1 = BigInt(Date.now()) * 1_000_000n;
      const post = s.rx.spans.find((x) => x.name === "POST /echo")!;
      const err = s.rx.spans.find((x) => x.name === "GET /status/503")!;
      expect(post).toBeDefined();
      expect(err).toBeDefined();

      // the request as sent
      const req = s.rx.requests[post.request]!;
      expect(req.path).toBe("/v1/traces");
      expect(req.contentType).toBe(v.contentType);
      expect(req.contentEncoding).toBe(v.contentEncoding);
      expect(req.headers["user-agent"]).toBe(`ebpf-tracer/${pkg.version}`);

      // span fields
      expect(post.kind).toBe(2); // SERVER
      expect(post.traceId).toBe(traceId);
      expect(post.parentSpanId).toBe(parent);
      expect(post.spanId).toMatch(/^[0-9a-f]{16}$/);
      expect(post.spanId).not.toBe("0000000000000000");
      expect(post.status.code).toBe(0);
      expect(BigInt(post.startTimeUnixNano)).toBeGreaterThanOrEqual(t0);
      expect(BigInt(post.endTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(post.startTimeUnixNano));
      expect(BigInt(post.endTimeUnixNano)).toBeLessThanOrEqual(t1);
      expect(err.status.code).toBe(2); // ERROR for a 5xx server span
      expect(err.attributes["http.response.status_code"]).toEqual(int(503));
      expect(err.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(err.traceId).not.toBe(traceId);
      expect(err.parentSpanId).toBe("");

      const a = post.attributes;
      const len = Buffer.byteLength(body);
      expect(a).toMatchObject({
        "http.request.method": str("POST"),
        "url.path": str("/echo"),
        "url.query": str("q=1&r=two"),
        "url.scheme": str("http"),
        "http.response.status_code": int(200),
        "network.protocol.version": str("1.1"),
        "network.transport": str("tcp"),
        "server.address": str("127.0.0.1"),
        "server.port": int(s.server.port),
        "client.address": str("127.0.0.1"),
        "client.port": int(lp),
        "network.peer.address": str("127.0.0.1"),
        "network.peer.port": int(lp),
        "http.request.header.content-type": str("application/json"),
        "http.request.header.x-custom": str("one"),
        "http.request.header.host": str(`127.0.0.1:${s.server.port}`),
        "http.request.header.content-length": str(String(len)),
        "http.request.header.traceparent": str(`00-${traceId}-${parent}-01`),
        "http.response.header.content-type": str("application/json"),
        "http.response.header.content-length": str(String(len)),
        "http.response.header.connection": str("keep-alive"),
        "http.request.body": str(body.slice(0, 32)),
        "http.response.body": str(body.slice(0, 32)),
        "http.request.body.size": int(len),
        "http.response.body.size": int(len),
        "http.request.body.truncated": { boolValue: true },
        "http.response.body.truncated": { boolValue: true },
        "process.pid": int(s.server.pid),
        "process.executable.name": str("node"),
        "process.executable.path": str("/usr/bin/node"),
        "process.command_line": str("/usr/bin/node server.js"),
        "traceableai.module.name": str("ebpf"),
        team: str("payments"),
      });
      expect(a["user_agent.original"]).toEqual(a["http.request.header.user-agent"]!);
      expect((a["user_agent.original"] as { stringValue: string }).stringValue).toMatch(/^curl\/\d/);
      expect(a["http.response.header.date"]).toMatchObject({ stringValue: expect.stringMatching(/GMT$/) });
      for (const k of ["ebpf.partial", "ebpf.response.missing"]) expect(a[k]).toBeUndefined();
      // every attribute is a string, int or bool: nothing else is documented
      for (const [k, val] of Object.entries(a)) expect([k, Object.keys(val)[0]]).toEqual([k, expect.stringMatching(/^(stringValue|intValue|boolValue)$/)]);

      expect(post.resource).toMatchObject({
        "service.name": str("node"),
        "deployment.environment": str("e2e"),
        "process.pid": int(s.server.pid),
        "process.executable.name": str("node"),
      });
      expect(post.resource["host.name"]).toMatchObject({ stringValue: expect.stringMatching(/./) });
      expect(post.scope).toEqual({ name: "ebpf-tracer", version: pkg.version });

      expect(s.rx.decodeErrors).toEqual([]);
      expect(s.rx.duplicateSpanIds()).toEqual([]);
      expect(await t.stop("SIGTERM")).toBe(0);
      const stopped = recs(t, "otlp exporter stopped").at(-1)!;
      expect(stopped).toMatchObject({ TotalRequestsSent: 2, SpansDropped: 0, ExportErrorsTls: 0 });
    });
  }
});

describe.skipIf(!!SKIP)("OTLP export end to end: failures", () => {
  test("wrong CA: a clear TLS error line and no crash; the right CA written to the same file + SIGHUP delivers", async () => {
    const s = await setup({ ca: certs.otherCa.cert });
    const t = await startAgent(s);
    getN(s.server, "ca", 3);
    await until(() => recs(t, /^TLS error talking to the collector/).length > 0, 10_000, "TLS error line");
    const line = recs(t, /^TLS error talking to the collector/)[0]!;
    console.log(`wrong CA log line: ${JSON.stringify(line)}`);
    expect(line.level).toBe("error");
    expect(String(line.code)).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER|CERT/);
    expect(JSON.stringify(line.tlsFiles ?? line)).toContain(s.caPath);
    await Bun.sleep(1500);
    expect(s.rx.spans).toHaveLength(0);
    expect(t.proc.exitCode).toBeNull();
    // capture went on meanwhile
    getN(s.server, "ca", 2, 3);
    await until(() => (lastStats(t).SpansQueued ?? 0) >= 5, 5000, "5 spans queued");
    expect(lastStats(t).ExportErrorsTls).toBeGreaterThan(0);
    // one line per change of reason, not per attempt
    expect(recs(t, /^TLS error talking to the collector/)).toHaveLength(1);

    copyFileSync(certs.ca.cert, s.caPath);
    t.proc.kill("SIGHUP");
    await s.rx.waitForSpans(5, 10_000);
    expect(withMarker(s.rx, "m=ca&").map((x) => query(x)).sort()).toEqual([0, 1, 2, 3, 4].map((i) => `m=ca&i=${i}`));
    expect(recs(t, "otlp export recovered")).toHaveLength(1);
    expect(s.rx.duplicateSpanIds()).toEqual([]);
  });

  test("receiver down for 10 s while a counted curl loop runs: exactly N spans arrive after it is up, no duplicates", async () => {
    const s = await setup();
    const t = await startAgent(s);
    getN(s.server, "warm", 1);
    await s.rx.waitForSpans(1);
    // the receiver records before it answers: wait for the agent to have the answer, or taking the
    // receiver down can cut it off and the (then retried) warm-up batch arrives twice
    await until(() => (recs(t, "stats").at(-1)?.ExportRequestsOk as number | undefined ?? 0) >= 1, 5000, "warm-up batch acknowledged");
    await s.rx.down();
    const N = 25;
    const downAt = Date.now();
    for (let i = 0; i < N; i++) {
      getN(s.server, "down", 1, i);
      await Bun.sleep(10_000 / N);
    }
    await until(() => Date.now() - downAt >= 10_000, 2000, "10 s");
    expect(s.rx.spans).toHaveLength(1);
    const statsDown = lastStats(t);
    await s.rx.up();
    const upAt = Date.now();
    await until(() => withMarker(s.rx, "m=down&").length >= N, 40_000, `${N} spans after recovery`);
    console.log(`receiver down ${((upAt - downAt) / 1000).toFixed(1)} s: ${N} spans delivered ${((Date.now() - upAt) / 1000).toFixed(1)} s after it came back; ExportErrorsNetwork ${statsDown.ExportErrorsNetwork}, ExportRetries ${statsDown.ExportRetries} while down`);
    await Bun.sleep(1500);
    const got = withMarker(s.rx, "m=down&");
    expect(got).toHaveLength(N);
    expect(new Set(got.map(query)).size).toBe(N);
    expect(s.rx.duplicateSpanIds().map((id) => query(s.rx.spans.find((x) => x.traceId + x.spanId === id)!))).toEqual([]);
    expect(statsDown.ExportErrorsNetwork).toBeGreaterThan(0);
    expect(recs(t, "otlp export recovered")).toHaveLength(1);
    expect(recs(t).filter((r) => r.level === "error")).toEqual([]);
  });

  test("SIGKILL while the receiver is down, after spans were spooled (zstd); restart with the receiver up: the spooled spans arrive", async () => {
    const s = await setup({ reporting: { max_batch_spans: 2, max_queue_spans: 2, max_in_flight: 1, compression: "zstd" } });
    const t = await startAgent(s);
    await s.rx.down();
    getN(s.server, "kill", 12);
    await until(() => spoolContents(s.spoolDir).files.length >= 3, 10_000, "spool files");
    await Bun.sleep(500);
    t.proc.kill("SIGKILL");
    await t.proc.exited;
    const spooled = spoolContents(s.spoolDir);
    console.log(`spooled before SIGKILL: ${spooled.files.length} files, ${spooled.spanIds.length} spans (of 12 captured)`);
    expect(spooled.spanIds.length).toBeGreaterThanOrEqual(6);
    await s.rx.up();
    const t2 = await startAgent(s);
    await until(() => recs(t2, "spool: batches from a previous run will be sent first").length > 0, 5000, "spool replay line");
    const received = () => new Set(s.rx.spans.map((x) => x.traceId + x.spanId));
    await until(() => spooled.spanIds.every((id) => received().has(id)), 20_000, "every spooled span");
    await until(() => spoolContents(s.spoolDir).files.length === 0, 5000, "spool emptied");
    expect(s.rx.duplicateSpanIds()).toEqual([]);
    expect(withMarker(s.rx, "m=kill&").length).toBe(spooled.spanIds.length);
    // the restarted agent captures and delivers as usual
    getN(s.server, "after", 1);
    await until(() => withMarker(s.rx, "m=after&").length === 1, 10_000, "a span from the restarted agent");
  });

  test("compression zstd to a collector without zstd (HTTP 400): one warning, the batch and everything after delivered as gzip", async () => {
    const s = await setup({ reporting: { compression: "zstd", max_in_flight: 1 }, receiver: { refuseZstd: 400 } });
    const t = await startAgent(s);
    getN(s.server, "zfirst", 1);
    await until(() => withMarker(s.rx, "m=zfirst&").length === 1, 10_000, "the first span, as gzip");
    getN(s.server, "zlater", 3);
    await until(() => withMarker(s.rx, "m=zlater&").length === 3, 10_000, "later spans");
    expect(await t.stop("SIGTERM")).toBe(0);
    const seen = s.rx.requests.filter((r) => r.path === "/v1/traces").map((r) => `${r.contentEncoding} ${r.status}`);
    console.log(`requests: ${seen.join(", ")}`);
    expect(seen[0]).toBe("zstd 400");
    expect(seen.slice(1).every((x) => x === "gzip 200")).toBe(true);
    expect(recs(t, /refused a zstd-compressed batch/)).toHaveLength(1);
    const st = (recs(t, "otlp exporter stopped").at(-1) ?? lastStats(t)) as Record<string, number>;
    expect(st).toMatchObject({ ZstdRefused: 1, SpansDropped: 0 });
    expect(s.rx.duplicateSpanIds()).toEqual([]);
  });

  test("503 with Retry-After: 2 twice, then OK: delivered after the waits; retries in stats; 400 drops one batch; partial success counted", async () => {
    const s = await setup({ reporting: { max_in_flight: 1 } });
    const t = await startAgent(s);
    s.rx.enqueue({ status: 503, retryAfter: "2" }, { status: 503, retryAfter: "2" });
    const t0 = Date.now();
    getN(s.server, "r503", 1);
    await s.rx.waitFor(() => s.rx.requests.length >= 1, 5000, "first request");
    const firstAt = Date.now();
    await s.rx.waitForSpans(1, 15_000);
    const deliveredAt = Date.now();
    console.log(`503 + Retry-After: 2 (x2): first attempt ${firstAt - t0} ms after the request, delivered ${deliveredAt - firstAt} ms after the first attempt`);
    expect(s.rx.requests.map((r) => r.status)).toEqual([503, 503, 200]);
    expect(deliveredAt - firstAt).toBeGreaterThanOrEqual(3800);
    expect(withMarker(s.rx, "m=r503&")).toHaveLength(1);

    // 400: that batch is dropped and counted, the next one arrives
    s.rx.enqueue({ status: 400, body: "bad batch for test" });
    getN(s.server, "r400", 1);
    await s.rx.waitFor(() => s.rx.requests.length >= 4, 5000, "the 400 request");
    await until(() => recs(t, "collector refused a batch; not retried, dropped").length === 1, 5000, "400 log line");
    const refused = recs(t, "collector refused a batch; not retried, dropped")[0]!;
    expect(refused).toMatchObject({ status: 400, spans: 1 });
    expect(String(refused.response)).toContain("bad batch for test");
    getN(s.server, "after400", 1);
    await until(() => withMarker(s.rx, "m=after400&").length === 1, 5000, "span after the 400");
    expect(withMarker(s.rx, "m=r400&")).toHaveLength(0);

    // partial success: counted, not retried
    s.rx.enqueue({ status: 200, partialSuccess: { rejectedSpans: 1, errorMessage: "one span too many" } });
    getN(s.server, "partial", 1);
    await until(() => recs(t, "collector accepted the batch partially").length === 1, 5000, "partial success line");
    expect(recs(t, "collector accepted the batch partially")[0]).toMatchObject({ rejectedSpans: 1, message: "one span too many" });
    getN(s.server, "last", 1);
    await until(() => withMarker(s.rx, "m=last&").length === 1, 5000, "last span");

    expect(await t.stop("SIGTERM")).toBe(0);
    const st = (recs(t, "otlp exporter stopped").at(-1) ?? lastStats(t)) as Record<string, number>;
    console.log(`exporter stats at exit: ${JSON.stringify(st)}`);
    expect(st).toMatchObject({ ExportErrorsHttp5xx: 2, ExportErrorsHttp4xx: 1, SpansRejected: 1, SpansDropped: 1 });
    expect(st.ExportRetries).toBe(2);
    expect(st.TotalRequestsSent).toBe(3); // r503, after400, last (+ partial minus its rejected span)
    expect(s.rx.requests.map((r) => r.status)).toEqual([503, 503, 200, 400, 200, 200, 200]);
    expect(s.rx.duplicateSpanIds()).toEqual([]);
  });

  test("a receiver that accepts but never answers: capture goes on, stats keep coming, spans flow once it answers", async () => {
    const s = await setup({ reporting: { request_timeout: "2s" } });
    const t = await startAgent(s);
    getN(s.server, "pre", 1);
    await s.rx.waitForSpans(1);
    s.rx.hang(true);
    await until(() => recs(t, "stats").length >= 1, 3000, "a stats line");
    const before = lastStats(t);
    const statsLinesBefore = recs(t, "stats").length;
    const N = 10;
    for (let i = 0; i < N; i++) {
      getN(s.server, "hang", 1, i);
      await Bun.sleep(400);
    }
    await Bun.sleep(2500);
    const during = lastStats(t);
    console.log(`hung receiver: ${s.rx.hungRequests} requests held; DataEventReceived ${before.DataEventReceived} → ${during.DataEventReceived}, SpansEmitted ${before.SpansEmitted} → ${during.SpansEmitted}, ExportErrorsNetwork ${during.ExportErrorsNetwork}, SpansQueued ${during.SpansQueued}`);
    expect(s.rx.hungRequests).toBeGreaterThan(0);
    expect(recs(t, "stats").length).toBeGreaterThanOrEqual(statsLinesBefore + 5);
    expect(during.DataEventReceived).toBeGreaterThan(before.DataEventReceived!);
    expect(during.SpansEmitted).toBe(before.SpansEmitted! + N);
    expect(during.SpansQueued).toBe(N);
    expect(withMarker(s.rx, "m=hang&")).toHaveLength(0);
    expect(t.proc.exitCode).toBeNull();
    s.rx.hang(false);
    await until(() => withMarker(s.rx, "m=hang&").length >= N, 40_000, `${N} spans after the receiver answers again`);
    await Bun.sleep(1000);
    expect(new Set(withMarker(s.rx, "m=hang&").map(query)).size).toBe(N);
    expect(withMarker(s.rx, "m=hang&")).toHaveLength(N);
    expect(s.rx.duplicateSpanIds()).toEqual([]);
  });
});
