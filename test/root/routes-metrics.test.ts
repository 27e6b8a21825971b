/**
 * Root end-to-end test of routes and RED metrics through the compiled binary: `ebpf-tracer run`
 * captures a Node server driven by curl, exports spans and metrics over HTTPS to the test OTLP
 * receiver and serves /metrics on its admin endpoint. 50 distinct /users/<n> paths must become
 * one route on the spans, in the Prometheus histogram and in the OTLP metrics, with exact counts,
 * and the two metric outputs must agree bucket by bucket.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { port, startNode } from "../support/servers.ts";
import { Cleanups, curlOk, NODE_APP } from "../support/http-kit.ts";
import { OtlpBed } from "../support/otlp-bed.ts";
import { toYaml } from "../support/yaml.ts";
import { parsePrometheus } from "../../src/metrics/prometheus.ts";
import { HTTP_DURATION_BUCKETS } from "../../src/metrics/red.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/routes-metrics.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());
setDefaultTimeout(90_000);

const str = (v: unknown): string | undefined => (v as { stringValue?: string } | undefined)?.stringValue;

interface OtlpPoint {
  route: string;
  status: string;
  error?: string;
  count: number;
  bucketCounts: number[];
}

/** http.server.request.duration points of one decoded ExportMetricsServiceRequest. */
function otlpPoints(req: any): OtlpPoint[] {
  const out: OtlpPoint[] = [];
  for (const rm of req.resourceMetrics ?? []) for (const sm of rm.scopeMetrics ?? []) for (const m of sm.metrics ?? []) {
    if (m.name !== "http.server.request.duration") continue;
    expect(m.unit).toBe("s");
    expect(m.histogram.aggregationTemporality).toBe(2);
    for (const p of m.histogram.dataPoints) {
      const a = Object.fromEntries(p.attributes.map((kv: any) => [kv.key, kv.value]));
      expect(p.explicitBounds).toEqual([...HTTP_DURATION_BUCKETS]);
      out.push({
        route: a["http.route"]?.stringValue, status: a["http.response.status_code"]?.intValue, error: a["error.type"]?.stringValue,
        count: Number(p.count), bucketCounts: p.bucketCounts.map(Number),
      });
    }
  }
  return out;
}

describe.skipIf(!!SKIP)("routes and RED metrics (root, compiled binary)", () => {
  test("50 distinct /users/<n> paths: one route in spans, /metrics and OTLP metrics; counts exact; outputs agree", async () => {
    const dir = c.add(mkdtempSync(join(tmpdir(), "et-red-")), (d) => rmSync(d, { recursive: true, force: true }));
    const { rx, certs } = c.add(await OtlpBed.start(), (b) => b.close());
    const server = c.add(await startNode(NODE_APP), (s) => s.stop());
    const admin = `127.0.0.1:${port()}`;
    const cfgPath = join(dir, "cfg.yaml");
    writeFileSync(cfgPath, toYaml({
      exporter: "otlp",
      service_name: "red-test",
      stats_interval: "0s",
      shutdown_timeout: "2s",
      admin: { enabled: true, address: admin },
      targets: [{ port: server.port, service_name: "users-api" }],
      agent_config: { ca_cert_file: certs.ca.cert, reporting: { endpoint: `https://127.0.0.1:${rx.port}`, max_batch_delay: "200ms" } },
      spool: { path: join(dir, "spool") },
      metrics: { export_interval: "1s", inventory_path: join(dir, "apis.json") },
    }).replace(/^\n/, ""));
    c.add(await TracerProcess.start(["run", "-c", cfgPath], "capture started"), (t) => t.stop("SIGTERM"));

    const base = `http://127.0.0.1:${server.port}`;
    const users = Array.from({ length: 50 }, (_, i) => `${base}/users/${1000 + i * 37}`);
    curlOk(["-o", "/dev/null", ...users.flatMap((u) => [u, "-o", "/dev/null"]).slice(0, -2)]);
    curlOk([...Array.from({ length: 5 }, () => `${base}/status/503`), ...Array.from({ length: 3 }, () => `${base}/json`)]);

    await rx.waitForSpans(58, 20_000);
    const userSpans = rx.spans.filter((s) => str(s.attributes["url.path"])?.startsWith("/users/"));
    expect(userSpans.length).toBe(50);
    expect(new Set(userSpans.map((s) => str(s.attributes["url.path"]))).size).toBe(50);
    expect(new Set(userSpans.map((s) => str(s.attributes["http.route"])))).toEqual(new Set(["/users/{id}"]));
    expect(new Set(rx.spans.filter((s) => str(s.attributes["url.path"]) === "/status/503").map((s) => str(s.attributes["http.route"])))).toEqual(new Set(["/status/{id}"]));

    // Prometheus: the admin endpoint's /metrics
    const text = await (await fetch(`http://${admin}/metrics`)).text();
    const samples = parsePrometheus(text).filter((s) => s.name.startsWith("http_server_request_duration_seconds") && s.labels.service_name === "users-api");
    const count = (route: string) => samples.filter((s) => s.name.endsWith("_count") && s.labels.http_route === route).reduce((a, s) => a + s.value, 0);
    expect(count("/users/{id}")).toBe(50);
    expect(count("/status/{id}")).toBe(5);
    expect(count("/json")).toBe(3);
    const err = samples.find((s) => s.name.endsWith("_count") && s.labels.http_route === "/status/{id}")!;
    expect(err.labels).toMatchObject({ http_response_status_code: "503", error_type: "503", http_request_method: "GET" });
    const userBuckets = samples.filter((s) => s.name.endsWith("_bucket") && s.labels.http_route === "/users/{id}").map((s) => s.value);
    expect(userBuckets.length).toBe(HTTP_DURATION_BUCKETS.length + 1);
    expect(userBuckets.every((v, i) => i === 0 || v >= userBuckets[i - 1]!)).toBe(true);
    expect(userBuckets.at(-1)).toBe(50);
    expect(userBuckets.at(-3)).toBe(50); // loopback requests to a Node server: all under 5 s
    const sum = samples.find((s) => s.name.endsWith("_sum") && s.labels.http_route === "/users/{id}")!.value;
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(50 * 1.0);

    // OTLP: wait for a metrics export that has seen all 58 requests
    await rx.waitFor(() => {
      const last = rx.metrics.at(-1);
      return last !== undefined && otlpPoints(last).reduce((a, p) => a + p.count, 0) === 58;
    }, 15_000, "an OTLP metrics export with all 58 requests");
    const pts = otlpPoints(rx.metrics.at(-1));
    const users1 = pts.filter((p) => p.route === "/users/{id}");
    expect(users1.length).toBe(1);
    expect(users1[0]!.count).toBe(50);
    expect(pts.find((p) => p.route === "/status/{id}")).toMatchObject({ count: 5, error: "503", status: "503" });
    // the same histogram in both outputs: OTLP bucket counts are per bucket, Prometheus' cumulative
    let cum = 0;
    expect(users1[0]!.bucketCounts.map((n) => (cum += n))).toEqual(userBuckets);
    expect(rx.decodeErrors).toEqual([]);
  });
});
