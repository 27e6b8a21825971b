/**
 * RED metrics through the real OTLP exporter to the HTTPS test receiver: POST /v1/metrics on the
 * configured endpoint with its TLS and token, decoded with the official protos; spans still go to
 * /v1/traces; a metrics batch survives the spool across a restart.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { validateConfig, type Config } from "../../src/config/config.ts";
import { OtlpExporter } from "../../src/export/otlp/exporter.ts";
import { ApiTap } from "../../src/metrics/tap.ts";
import type { Span } from "../../src/spans/span.ts";
import { OtlpBed, captureLog } from "../support/otlp-bed.ts";

let bed: OtlpBed;
beforeAll(async () => {
  bed = await OtlpBed.start();
});
afterAll(() => bed.close());

function config(spool: string, endpoint = bed.rx.endpoint): Config {
  return validateConfig({
    agent_config: { ca_cert_file: bed.certs.ca.cert, reporting: { endpoint, agent_token: "tok-123", max_batch_delay: "30ms", request_timeout: "2s" } },
    spool: { path: spool, max_size_mb: 8 },
    metrics: { export_interval: 0 },
  }, "", "");
}

function span(n: number): Span {
  return {
    traceId: "c".repeat(32), spanId: n.toString(16).padStart(16, "0"), name: "GET /users", kind: "server",
    startTimeUnixNano: 1_700_000_000_000_000_000n, endTimeUnixNano: 1_700_000_000_020_000_000n, error: false,
    attributes: { "http.request.method": "GET", "url.path": `/users/${n}`, "http.response.status_code": 200 },
    resource: { "service.name": "shop", "host.name": "h" },
  };
}

function durationCounts(req: any): number[] {
  const out: number[] = [];
  for (const rm of req.resourceMetrics) for (const sm of rm.scopeMetrics) for (const m of sm.metrics) {
    if (m.name === "http.server.request.duration") for (const p of m.histogram.dataPoints) out.push(Number(p.count));
  }
  return out;
}

describe("OTLP metrics export", () => {
  test("metrics go to /v1/metrics over the exporter's TLS connection; counts are exact", async () => {
    const exp = new OtlpExporter(config(bed.tempDir()), { logger: captureLog().logger });
    const tap = new ApiTap(exp, config(bed.tempDir()));
    const before = bed.rx.metrics.length;
    for (let i = 0; i < 50; i++) tap.export(span(i));
    tap.push();
    await bed.rx.waitFor(() => bed.rx.metrics.length > before, 5000, "metrics request");
    const req = bed.rx.metrics[bed.rx.metrics.length - 1] as any;
    expect(durationCounts(req)).toEqual([50]);
    await bed.rx.waitForSpans(50);
    const metricReq = bed.rx.requests.filter((r) => r.path === "/v1/traces");
    expect(metricReq.length).toBeGreaterThan(0);
    await tap.shutdown(2000);
    expect(exp.stats()).toMatchObject({ MetricBatchesSent: 2, SpansDropped: 0 });
  });

  test("a newer snapshot replaces one still waiting in memory", async () => {
    await bed.rx.down();
    const exp = new OtlpExporter(config(bed.tempDir()), { logger: captureLog().logger, backoff: { initialMs: 5000, maxMs: 5000 } });
    const tap = new ApiTap(exp, config(bed.tempDir()));
    tap.export(span(1));
    await Bun.sleep(100); // the span batch is sealed and its first attempt fails: the queue waits
    for (let i = 0; i < 5; i++) {
      tap.export(span(i + 2));
      tap.push();
    }
    expect(exp.stats().MetricBatchesEnqueued).toBe(5);
    expect((exp as unknown as { queue: { signal?: string }[] }).queue.filter((b) => b.signal === "metrics").length).toBe(1);
    await bed.rx.up();
    await exp.shutdown(200);
  });

  test("a metrics batch that could not be sent is spooled and sent after a restart", async () => {
    const spool = bed.tempDir();
    await bed.rx.down();
    const exp = new OtlpExporter(config(spool), { logger: captureLog().logger, backoff: { initialMs: 50, maxMs: 100 } });
    const tap = new ApiTap(exp, config(spool));
    for (let i = 0; i < 7; i++) tap.export(span(i));
    await tap.shutdown(300); // collector down: spans and metrics go to the spool
    expect(exp.stats().SpoolSpans).toBe(7);
    await bed.rx.up();
    const before = bed.rx.metrics.length;
    const exp2 = new OtlpExporter(config(spool), { logger: captureLog().logger });
    await bed.rx.waitFor(() => bed.rx.metrics.length > before, 5000, "spooled metrics");
    expect(durationCounts(bed.rx.metrics[before])).toEqual([7]);
    await exp2.shutdown(1000);
  });
});
