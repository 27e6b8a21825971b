/**
 * The span model shared by the pipeline and every exporter. Attribute names are listed in
 * docs/spans.md. Values keep their type: integers are `number` (always whole), flags `boolean`.
 */
export type AttrValue = string | number | boolean;
export type Attributes = Record<string, AttrValue>;

export type SpanKind = "server" | "client";

export interface Span {
  traceId: string;            // 32 lower-case hex chars
  spanId: string;             // 16 lower-case hex chars
  /** From a W3C traceparent request header, when the caller sent one: the span joins that trace. */
  parentSpanId?: string;
  name: string;               // "<METHOD> <path>"
  kind: SpanKind;             // server = ingress (accepted socket), client = egress (connected socket)
  startTimeUnixNano: bigint;  // first request byte seen
  endTimeUnixNano: bigint;    // last response byte seen
  /** true when the response status is 5xx (server) or 4xx/5xx (client), per OTel HTTP conventions */
  error: boolean;
  /** This exchange's attributes (and whatever later stages add: http.route, ebpf.redacted). */
  attributes: Attributes;
  /**
   * The attributes every span of its connection has (scheme, peers, process, sampling ratio):
   * one frozen object shared by those spans while its values stay the same, so exporters encode
   * it once per object instead of once per span. The span's attribute set is `attributes` and
   * `shared` together; no key is in both. Read one attribute with attr(), all with
   * allAttributes(); nothing may write to it (the redactor replaces it with a redacted copy).
   */
  shared?: Attributes;
  /** Resource attributes: service.name, host.name, deployment.environment, process.* */
  resource: Attributes;
}

/** Where finished spans go. Implementations must not throw from `export`. */
export interface SpanSink {
  export(span: Span): void;
  /** Flush what is queued; resolves when done or when `timeoutMs` passed. */
  shutdown(timeoutMs: number): Promise<void>;
  /** Counters for the stats line (names as in the reference tracer where one exists). */
  stats(): Record<string, number>;
}

/** The JSON line printed by `capture --json` and the stdout/file exporters. */
export function spanToJson(s: Span): Record<string, unknown> {
  return {
    name: s.name,
    kind: s.kind,
    traceId: s.traceId,
    spanId: s.spanId,
    ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
    start: nanosToIso(s.startTimeUnixNano),
    durationMs: Number(s.endTimeUnixNano - s.startTimeUnixNano) / 1e6,
    error: s.error,
    attributes: allAttributes(s),
    resource: s.resource,
  };
}

/** One attribute of the span, wherever it is kept. */
export function attr(s: Span, key: string): AttrValue | undefined {
  const v = s.attributes[key];
  return v !== undefined ? v : s.shared?.[key];
}

/** Every attribute of the span: its own first, then the shared ones (a new object when there are
 * shared ones; for consumers off the hot path). */
export function allAttributes(s: Span): Attributes {
  const sh = s.shared;
  if (sh === undefined) return s.attributes;
  const out: Attributes = {};
  for (const k in s.attributes) out[k] = s.attributes[k]!;
  for (const k in sh) out[k] = sh[k]!;
  return out;
}

export function nanosToIso(ns: bigint): string {
  // Spans arrive in time order, many per second: while `ns` falls in the second last seen, the
  // fraction is one BigInt subtraction from that second's start (the 19-digit toString and its
  // slices, which this replaced, were 3 % of capture's profile); the "YYYY-MM-DDTHH:MM:SS." part
  // is reused. The division runs once per new second.
  let d = Number(ns - isoSecNs);
  if (!(d >= 0 && d < 1e9)) {
    if (ns < 1_000_000_000n) return "1970-01-01T00:00:00." + (ns < 0n ? "000000000" : ns.toString().padStart(9, "0")) + "Z";
    const sec = ns / 1_000_000_000n;
    isoSecNs = sec * 1_000_000_000n;
    isoPrefix = new Date(Number(sec) * 1000).toISOString().slice(0, 20);
    d = Number(ns - isoSecNs);
  }
  return isoPrefix + (d >= 100_000_000 ? String(d) : String(d).padStart(9, "0")) + "Z";
}
/** the second `isoPrefix` shows, in ns since the epoch (at first far from any time: none yet) */
let isoSecNs = -(1n << 100n);
let isoPrefix = "";
