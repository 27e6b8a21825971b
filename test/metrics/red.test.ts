/**
 * RED metrics: series keys, histograms, the cardinality cap, the Prometheus text and the OTLP
 * metrics encoding decoded with protobufjs from the official protos (test/fixtures/otlp-proto).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_BUCKETS, HTTP_DURATION_BUCKETS, RedMetrics } from "../../src/metrics/red.ts";
import { parsePrometheus, renderRedPrometheus } from "../../src/metrics/prometheus.ts";
import { encodeMetricsProto } from "../../src/export/otlp/metrics-encode.ts";
import { ApiTap } from "../../src/metrics/tap.ts";
import { defaultConfig } from "../../src/config/config.ts";
import { SCOPE_NAME } from "../../src/export/otlp/scope.ts";
import type { Span, SpanSink } from "../../src/spans/span.ts";
import { decodeMetricsProto } from "../support/otlp-receiver.ts";

const T0 = 1_700_000_000_000_000_000n;

function span(path: string, status: number, ms: number, o: { kind?: "server" | "client"; service?: string; method?: string; req?: number; res?: number; rpc?: boolean } = {}): Span {
  const kind = o.kind ?? "server";
  const attributes: Span["attributes"] = { "http.request.method": o.method ?? "GET", "url.path": path, "url.scheme": "http" };
  if (o.rpc) Object.assign(attributes, { "rpc.system": "grpc", "rpc.service": "shop.Cart", "rpc.method": "Add", "rpc.grpc.status_code": status });
  else attributes["http.response.status_code"] = status;
  if (o.req !== undefined) attributes["http.request.body.size"] = o.req;
  if (o.res !== undefined) attributes["http.response.body.size"] = o.res;
  return {
    traceId: "a".repeat(32), spanId: "b".repeat(16), name: `GET ${path}`, kind,
    startTimeUnixNano: T0, endTimeUnixNano: T0 + BigInt(Math.round(ms * 1e6)),
    error: o.rpc ? status !== 0 : kind === "client" ? status >= 400 : status >= 500,
    attributes, resource: { "service.name": o.service ?? "shop", "host.name": "h1", "process.pid": 1 },
  };
}

class Collect implements SpanSink {
  spans: Span[] = [];
  snaps = 0;
  export(s: Span) { this.spans.push(s); }
  async shutdown() {}
  stats() { return { Collected: this.spans.length }; }
}

function tapWith(over: Partial<ReturnType<typeof defaultConfig>["metrics"]> = {}): { tap: ApiTap; sink: Collect } {
  const cfg = defaultConfig();
  cfg.metrics = { ...cfg.metrics, export_interval: 0, ...over };
  const sink = new Collect();
  return { tap: new ApiTap(sink, cfg), sink };
}

describe("RED metrics", () => {
  test("50 distinct /users/<n> paths: one route on spans, one series, exact counts", () => {
    const { tap, sink } = tapWith();
    for (let i = 0; i < 50; i++) tap.export(span(`/users/${i + 1}`, 200, 3, { res: 100 }));
    expect(new Set(sink.spans.map((s) => s.attributes["http.route"]))).toEqual(new Set(["/users/{id}"]));
    const snap = tap.red.snapshot();
    expect(snap.series.length).toBe(1);
    const s = snap.series[0]!;
    expect(s.attributes).toEqual({ "http.request.method": "GET", "http.route": "/users/{id}", "http.response.status_code": 200 });
    expect(s.histograms[0].count).toBe(50);
    expect(s.histograms[0].counts[0]).toBe(50); // 3 ms <= 5 ms
    expect(s.histograms[2].count).toBe(50);
    expect(s.histograms[1].count).toBe(0); // no request body size on these spans
    expect(tap.stats()).toMatchObject({ Collected: 50, TrackedRoutes: 1, TrackedMetricSeries: 1 });
  });

  test("series split by direction, status, method and service; errors carry error.type", () => {
    const red = new RedMetrics();
    red.record(span("/a", 200, 1), "/a");
    red.record(span("/a", 500, 1), "/a");
    red.record(span("/a", 404, 1, { kind: "client" }), "/a");
    red.record(span("/a", 200, 1, { method: "POST" }), "/a");
    red.record(span("/a", 200, 1, { service: "billing" }), "/a");
    red.record(span("/shop.Cart/Add", 13, 7, { rpc: true }), "/shop.Cart/Add");
    const snap = red.snapshot();
    expect(snap.series.length).toBe(6);
    const e500 = snap.series.find((s) => s.attributes["http.response.status_code"] === 500)!;
    expect(e500.attributes["error.type"]).toBe("500");
    expect(e500.instruments[0].name).toBe("http.server.request.duration");
    const c404 = snap.series.find((s) => s.direction === "client")!;
    expect(c404.attributes["error.type"]).toBe("404");
    expect(c404.instruments.map((i) => i.name)).toEqual(["http.client.request.duration", "http.client.request.body.size", "http.client.response.body.size"]);
    const g = snap.series.find((s) => s.family === "rpc")!;
    expect(g.instruments[0]).toMatchObject({ name: "rpc.server.duration", unit: "ms" });
    expect(g.attributes).toEqual({ "rpc.system": "grpc", "rpc.service": "shop.Cart", "rpc.method": "Add", "rpc.grpc.status_code": 13, "error.type": "13" });
    expect(g.histograms[0].sum).toBeCloseTo(7, 6);
  });

  test("cardinality is capped: overflow series with otel.metric.overflow, counted", () => {
    const red = new RedMetrics({ maxSeries: 3 });
    for (let i = 0; i < 10; i++) red.record(span(`/r${i}`, 200, 1), `/r${i}`);
    const snap = red.snapshot();
    expect(snap.series.length).toBe(4);
    const over = snap.series.find((s) => s.attributes["otel.metric.overflow"] === true)!;
    expect(over.histograms[0].count).toBe(7);
    expect(red.stats()).toEqual({ TrackedMetricSeries: 4, MetricSeriesOverflow: 7 });
  });

  test("services past 1024 share one _OTHER resource", () => {
    const red = new RedMetrics();
    for (let i = 0; i < 1100; i++) red.record(span("/a", 200, 1, { service: `svc-${i}` }), "/a");
    const snap = red.snapshot();
    expect(snap.series.length).toBe(1025);
    expect(snap.series.at(-1)!.resource["service.name"]).toBe("_OTHER");
    expect(snap.series.at(-1)!.histograms[0].count).toBe(76);
  });

  test("Prometheus text: cumulative buckets, sum, count, labels, units in names", () => {
    const red = new RedMetrics();
    for (const ms of [1, 7, 30, 30, 2000]) red.record(span("/users/1", 200, ms, { req: 10, res: 300 }), "/users/{id}");
    const text = renderRedPrometheus(red.snapshot());
    expect(text).toContain("# TYPE http_server_request_duration_seconds histogram");
    expect(text).toContain("# TYPE http_server_request_body_size_bytes histogram");
    const samples = parsePrometheus(text);
    const dur = samples.filter((s) => s.name === "http_server_request_duration_seconds_bucket");
    expect(dur.length).toBe(HTTP_DURATION_BUCKETS.length + 1);
    const at = (le: string) => dur.find((s) => s.labels.le === le)!.value;
    expect([at("0.005"), at("0.01"), at("0.025"), at("0.05"), at("1"), at("2.5"), at("+Inf")]).toEqual([1, 2, 2, 4, 4, 5, 5]);
    expect(dur[0]!.labels).toMatchObject({ service_name: "shop", host_name: "h1", http_route: "/users/{id}", http_request_method: "GET", http_response_status_code: "200" });
    const count = samples.find((s) => s.name === "http_server_request_duration_seconds_count")!;
    expect(count.value).toBe(5);
    const sum = samples.find((s) => s.name === "http_server_request_duration_seconds_sum")!;
    expect(sum.value).toBeCloseTo(2.068, 6);
    const resSize = samples.filter((s) => s.name === "http_server_response_body_size_bytes_bucket");
    expect(resSize.find((s) => s.labels.le === "250")!.value).toBe(0);
    expect(resSize.find((s) => s.labels.le === "500")!.value).toBe(5);
  });

  test("spans captured while shedding (ebpf.sampling.ratio < 1) count 1/ratio requests; OTLP rounds consistently", () => {
    const red = new RedMetrics();
    for (let i = 0; i < 3; i++) {
      const s = span("/a", 200, 1);
      s.attributes["ebpf.sampling.ratio"] = 0.3;
      red.record(s, "/a");
    }
    const plain = span("/a", 200, 30);
    plain.attributes["ebpf.sampling.ratio"] = 1;
    red.record(plain, "/a");
    const h = red.snapshot().series[0]!.histograms[0];
    expect(h.count).toBeCloseTo(11, 9);
    const pts = (decodeMetricsProto(encodeMetricsProto(red.snapshot()).body) as any).resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints;
    expect(pts[0].count).toBe("11");
    expect(pts[0].bucketCounts.reduce((a: number, b: string) => a + Number(b), 0)).toBe(11);
    expect(pts[0].bucketCounts.slice(0, 5).map(Number)).toEqual([10, 0, 0, 1, 0]); // 1 ms x 3 x (1/0.3), then 30 ms in (25, 50] ms
  });

  test("label values are escaped", () => {
    const red = new RedMetrics();
    red.record(span('/a"b\\c', 200, 1), '/a"b\\c');
    const text = renderRedPrometheus(red.snapshot());
    expect(text).toContain('http_route="/a\\"b\\\\c"');
    expect(parsePrometheus(text)[0]!.labels.http_route).toBe('/a"b\\c');
  });

  test("OTLP: ExportMetricsServiceRequest decodes with the official protos and agrees with the histograms", () => {
    const red = new RedMetrics({ now: () => T0 + 5_000_000_000n });
    for (let i = 0; i < 20; i++) red.record(span(`/users/${i}`, i < 15 ? 200 : 503, 4 + i, { req: 0, res: 120 }), "/users/{id}");
    red.record(span("/x", 200, 1, { service: "billing" }), "/x");
    red.record(span("/shop.Cart/Add", 0, 12, { rpc: true }), "/shop.Cart/Add");
    const { body, points } = encodeMetricsProto(red.snapshot());
    const req = decodeMetricsProto(body) as any;
    const rms = req.resourceMetrics as any[];
    expect(rms.length).toBe(2);
    const shop = rms.find((r) => r.resource.attributes.some((a: any) => a.key === "service.name" && a.value.stringValue === "shop"));
    expect(shop.scopeMetrics[0].scope.name).toBe(SCOPE_NAME);
    const metrics = shop.scopeMetrics[0].metrics as any[];
    // the gRPC span has no body sizes: its size histograms are empty and left out
    expect(metrics.map((m) => m.name).sort()).toEqual(["http.server.request.body.size", "http.server.request.duration", "http.server.response.body.size", "rpc.server.duration"]);
    const dur = metrics.find((m) => m.name === "http.server.request.duration");
    expect(dur.unit).toBe("s");
    expect(dur.histogram.aggregationTemporality).toBe(2);
    const pts = dur.histogram.dataPoints as any[];
    expect(pts.length).toBe(2);
    const ok = pts.find((p) => p.attributes.some((a: any) => a.key === "http.response.status_code" && a.value.intValue === "200"));
    const bad = pts.find((p) => p.attributes.some((a: any) => a.key === "error.type" && a.value.stringValue === "503"));
    expect([ok.count, bad.count]).toEqual(["15", "5"]);
    expect(ok.explicitBounds).toEqual([...HTTP_DURATION_BUCKETS]);
    expect(ok.bucketCounts.length).toBe(HTTP_DURATION_BUCKETS.length + 1);
    expect(ok.bucketCounts.reduce((a: number, b: string) => a + Number(b), 0)).toBe(15);
    expect(ok.startTimeUnixNano).toBe((T0 + 5_000_000_000n).toString());
    expect(ok.timeUnixNano).toBe((T0 + 5_000_000_000n).toString());
    expect(ok.sum).toBeCloseTo((4 + 18) * 15 / 2 / 1000, 9);
    expect(ok.min).toBeCloseTo(0.004, 9);
    expect(ok.max).toBeCloseTo(0.018, 9);
    const rpc = metrics.find((m) => m.name === "rpc.server.duration");
    expect(rpc.unit).toBe("ms");
    expect(rpc.histogram.dataPoints[0].explicitBounds).toEqual([...DEFAULT_BUCKETS]);
    expect(points).toBe(2 + 2 + 2 + 1 + 1); // shop: 3 http instruments x 2 series, rpc 1; billing 1
  });

  test("the tap pushes snapshots to a sink that takes metrics, and at shutdown", async () => {
    const cfg = defaultConfig();
    cfg.metrics.export_interval = 0;
    const got: number[] = [];
    const sink = { ...new Collect(), export() {}, async shutdown() {}, stats: () => ({}), exportMetrics: (s: { series: readonly unknown[] }) => got.push(s.series.length) };
    const tap = new ApiTap(sink, cfg);
    tap.export(span("/a", 200, 1));
    tap.push();
    await tap.shutdown(100);
    expect(got).toEqual([1, 1]);
  });

  test("swap (exporter changed on reload) keeps routes and metrics; update reaches the new sink", () => {
    const { tap, sink } = tapWith();
    tap.export(span("/users/1", 200, 1));
    const next = new Collect() as Collect & { updated?: boolean };
    (next as { update?: () => void }).update = () => { next.updated = true; };
    expect(tap.swap(next)).toBe(sink);
    tap.export(span("/users/2", 200, 1));
    tap.update(defaultConfig());
    expect([sink.spans.length, next.spans.length, next.updated]).toEqual([1, 1, true]);
    expect(tap.red.snapshot().series[0]!.histograms[0].count).toBe(2);
  });

  test("metrics.enabled: false leaves spans untouched", () => {
    const { tap, sink } = tapWith({ enabled: false });
    tap.export(span("/users/1", 200, 1));
    expect(sink.spans[0]!.attributes["http.route"]).toBeUndefined();
    expect(tap.prometheus()).toBe("");
  });
});

describe("tap with inventory", () => {
  test("inventory path from config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "et-inv-"));
    try {
      const cfg = defaultConfig();
      cfg.metrics = { ...cfg.metrics, export_interval: 0, inventory_path: join(dir, "apis.json") };
      const tap = new ApiTap(new Collect(), cfg, { inventory: true });
      tap.export(span("/users/9", 200, 1));
      await tap.shutdown(100);
      expect(await Bun.file(join(dir, "apis.json")).json()).toMatchObject({ version: 1, entries: [{ service: "shop", route: "/users/{id}", count: 1 }] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
