/**
 * RED metrics (rate, errors, duration) per service, route, method, status and direction, from
 * finished spans, with the OpenTelemetry semantic-convention names:
 *
 *   HTTP  http.{server,client}.request.duration (s), http.{server,client}.request.body.size (By),
 *         http.{server,client}.response.body.size (By)
 *   gRPC  rpc.{server,client}.duration (ms, as that name is defined), rpc.{server,client}.request.size
 *         and .response.size (By)
 *
 * Sampling: a span captured while connections were shed (`ebpf.sampling.ratio` r < 1, see the
 * overhead budget) stands for 1/r requests and is counted with that weight, so counts stay
 * estimates of the requests made rather than silently dropping; with r = 1 (normal) every count
 * is exact. Weighted counts are fractional; the OTLP encoder rounds the cumulative bucket counts.
 *
 * Every instrument is a histogram with cumulative temporality: its count is the request count;
 * errors are the series carrying `error.type` (the status code as a string for HTTP, the gRPC
 * status code for gRPC, `_OTHER` otherwise), so error count = count over those series. Duration
 * buckets are the conventions' advice for http.*.duration; the rest use the SDK default
 * explicit buckets.
 *
 * Bounded memory: at most `maxSeries` series (one series = one attribute set of one direction,
 * holding its three histograms); spans past that go to one overflow series per service and
 * direction with `otel.metric.overflow: true` (as the SDK cardinality limit does) and are counted
 * in MetricSeriesOverflow. Never throws from record().
 */
import type { AttrValue, Attributes, Span } from "../spans/span.ts";
import { attr } from "../spans/span.ts";

/** Advised bucket boundaries of http.server/client.request.duration, seconds. */
export const HTTP_DURATION_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
/** The SDK's default explicit bucket boundaries (sizes in bytes, rpc durations in ms). */
export const DEFAULT_BUCKETS: readonly number[] = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];

export interface Instrument {
  name: string;
  unit: string;
  description: string;
  buckets: readonly number[];
}

type Direction = "server" | "client";
type Family = "http" | "rpc";

function instruments(f: Family, d: Direction): [Instrument, Instrument, Instrument] {
  if (f === "http") {
    const who = d === "server" ? "server" : "client";
    return [
      { name: `http.${who}.request.duration`, unit: "s", description: `Duration of HTTP ${who} requests.`, buckets: HTTP_DURATION_BUCKETS },
      { name: `http.${who}.request.body.size`, unit: "By", description: `Size of HTTP ${who} request bodies.`, buckets: DEFAULT_BUCKETS },
      { name: `http.${who}.response.body.size`, unit: "By", description: `Size of HTTP ${who} response bodies.`, buckets: DEFAULT_BUCKETS },
    ];
  }
  const dir = d === "server" ? "inbound" : "outbound";
  return [
    { name: `rpc.${d}.duration`, unit: "ms", description: `Measures the duration of ${dir} RPC.`, buckets: DEFAULT_BUCKETS },
    { name: `rpc.${d}.request.size`, unit: "By", description: `Measures the size of RPC request messages (uncompressed).`, buckets: DEFAULT_BUCKETS },
    { name: `rpc.${d}.response.size`, unit: "By", description: `Measures the size of RPC response messages (uncompressed).`, buckets: DEFAULT_BUCKETS },
  ];
}

const INSTRUMENTS: Record<string, [Instrument, Instrument, Instrument]> = {
  "http|server": instruments("http", "server"),
  "http|client": instruments("http", "client"),
  "rpc|server": instruments("rpc", "server"),
  "rpc|client": instruments("rpc", "client"),
};

/** A histogram with fixed explicit bounds; counts[i] = observations in (bounds[i-1], bounds[i]]. */
export class Histogram {
  readonly counts: Float64Array;
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  /** `w`: how many requests this observation stands for (1 unless sampled). */
  observe(v: number, w = 1): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]! += w;
    this.count += w;
    this.sum += v * w;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }
}

export interface Series {
  family: Family;
  /** what the series is matched on in record() (the attributes hold the same, for export) */
  readonly method: AttrValue | undefined;
  readonly status: AttrValue | undefined;
  direction: Direction;
  /** service.name, host.name, deployment.environment */
  resource: Attributes;
  /** data point attributes (semantic-convention names) */
  attributes: Attributes;
  instruments: [Instrument, Instrument, Instrument];
  /** duration, request size, response size; sizes only count spans that had one */
  histograms: [Histogram, Histogram, Histogram];
  error: boolean;
}

export interface RedSnapshot {
  startTimeUnixNano: bigint;
  timeUnixNano: bigint;
  series: readonly Series[];
}

export interface RedOptions {
  maxSeries?: number;
  now?: () => bigint;
}

/** Resources (service, host, environment) with their own series; the rest share one. */
const MAX_GROUPS = 1024;
const OTHER_SERVICE = "_OTHER";

const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n;

function str(v: AttrValue | undefined): string {
  return v === undefined ? "" : String(v);
}

/** Series of one resource (service, host, environment): by route, then a short list. */
interface Group {
  host: AttrValue | undefined;
  env: AttrValue | undefined;
  resource: Attributes;
  routes: Map<string, Series[]>;
  overflow: Map<string, Series>;
  next: Group | undefined;
}

export class RedMetrics {
  /** service.name → groups; lookups use the strings the spans carry, no key is built per span */
  private readonly groups = new Map<string, Group>();
  private readonly series: Series[] = [];
  private readonly maxSeries: number;
  private readonly now: () => bigint;
  readonly startTimeUnixNano: bigint;

  constructor(o: RedOptions = {}) {
    this.maxSeries = Math.max(1, o.maxSeries ?? 10_000);
    this.now = o.now ?? nowNs;
    this.startTimeUnixNano = this.now();
  }

  /** Counts one finished span under `route` (from RouteTable; undefined = no route). */
  record(span: Span, route: string | undefined): void {
    const a = span.attributes;
    const family: Family = a["rpc.system"] !== undefined ? "rpc" : "http";
    const direction: Direction = span.kind;
    const r = span.resource;
    const service = r["service.name"];
    const host = r["host.name"];
    const env = r["deployment.environment"];
    const sk = typeof service === "string" ? service : str(service);
    let g = this.groups.get(sk);
    while (g !== undefined && (g.host !== host || g.env !== env)) g = g.next;
    if (g === undefined) g = this.groups.size < MAX_GROUPS ? this.newGroup(sk, r) : (this.groups.get(OTHER_SERVICE) ?? this.newGroup(OTHER_SERVICE, {}));
    const rk = route ?? "";
    let list = g.routes.get(rk);
    if (list === undefined) g.routes.set(rk, (list = []));
    const method = a["http.request.method"];
    const status = family === "rpc" ? a["rpc.grpc.status_code"] : a["http.response.status_code"];
    const error = span.error;
    let s: Series | undefined;
    for (let i = 0; i < list.length; i++) {
      const x = list[i]!;
      if (x.status === status && x.method === method && x.direction === direction && x.family === family && x.error === error) {
        s = x;
        break;
      }
    }
    if (s === undefined) s = this.newSeries(g, list, span, family, direction, route, method, status);
    const h = s.histograms;
    const ratio = attr(span, "ebpf.sampling.ratio");
    const w = typeof ratio === "number" && ratio > 0 && ratio < 1 ? 1 / ratio : 1;
    const ns = Number(span.endTimeUnixNano - span.startTimeUnixNano);
    h[0].observe(family === "rpc" ? ns / 1e6 : ns / 1e9, w);
    const req = a["http.request.body.size"];
    if (typeof req === "number") h[1].observe(req, w);
    const res = a["http.response.body.size"];
    if (typeof res === "number") h[2].observe(res, w);
  }

  private newGroup(service: string, r: Attributes): Group {
    const resource: Attributes = { "service.name": service || "unknown_service:ebpf-tracer" };
    if (r["host.name"] !== undefined) resource["host.name"] = r["host.name"];
    if (r["deployment.environment"] !== undefined) resource["deployment.environment"] = r["deployment.environment"];
    const g: Group = { host: r["host.name"], env: r["deployment.environment"], resource, routes: new Map(), overflow: new Map(), next: this.groups.get(service) };
    this.groups.set(service, g);
    return g;
  }

  private newSeries(g: Group, list: Series[], span: Span, family: Family, direction: Direction, route: string | undefined, method: AttrValue | undefined, status: AttrValue | undefined): Series {
    const resource = g.resource;
    let attributes: Attributes;
    const overflow = this.series.length >= this.maxSeries;
    if (overflow) {
      const existing = g.overflow.get(`${family}|${direction}`);
      if (existing) return existing;
      attributes = { "otel.metric.overflow": true };
    } else {
      const a = span.attributes;
      attributes = {};
      if (family === "rpc") {
        attributes["rpc.system"] = a["rpc.system"]!;
        if (a["rpc.service"] !== undefined) attributes["rpc.service"] = a["rpc.service"];
        if (a["rpc.method"] !== undefined) attributes["rpc.method"] = a["rpc.method"];
        if (status !== undefined) attributes["rpc.grpc.status_code"] = status;
      } else {
        if (a["http.request.method"] !== undefined) attributes["http.request.method"] = a["http.request.method"];
        if (route !== undefined) attributes["http.route"] = route;
        if (status !== undefined) attributes["http.response.status_code"] = status;
      }
      if (span.error) attributes["error.type"] = status !== undefined ? String(status) : "_OTHER";
    }
    const ins = INSTRUMENTS[`${family}|${direction}`]!;
    const s: Series = {
      family, direction, method: overflow ? undefined : method, status: overflow ? undefined : status, resource, attributes, instruments: ins,
      error: span.error && !overflow,
      histograms: [new Histogram(ins[0].buckets), new Histogram(ins[1].buckets), new Histogram(ins[2].buckets)],
    };
    this.series.push(s);
    if (overflow) g.overflow.set(`${family}|${direction}`, s);
    else list.push(s);
    return s;
  }

  /** The live series (not copies): read them on the same thread, between record() calls. */
  snapshot(): RedSnapshot {
    return { startTimeUnixNano: this.startTimeUnixNano, timeUnixNano: this.now(), series: this.series.slice() };
  }

  stats(): Record<string, number> {
    let overflowed = 0;
    for (const s of this.series) if (s.attributes["otel.metric.overflow"] === true) overflowed += s.histograms[0].count;
    return { TrackedMetricSeries: this.series.length, MetricSeriesOverflow: overflowed };
  }
}
