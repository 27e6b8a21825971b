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
  attributes: Attributes;
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
    attributes: s.attributes,
    resource: s.resource,
  };
}

export function nanosToIso(ns: bigint): string {
  // Digits, not BigInt arithmetic (a division and a subtraction per span were 5 % of capture's
  // profile): the last nine are the fraction, the rest the second. Spans arrive in time order,
  // many per second: the "YYYY-MM-DDTHH:MM:SS" part is reused while the second is the same.
  const digits = ns.toString();
  if (ns < 1_000_000_000n) return "1970-01-01T00:00:00." + (ns < 0n ? "000000000" : digits.padStart(9, "0")) + "Z";
  const cut = digits.length - 9;
  const sec = digits.slice(0, cut);
  if (sec !== isoSec) {
    isoSec = sec;
    isoPrefix = new Date(Number(sec) * 1000).toISOString().slice(0, 19);
  }
  return isoPrefix + "." + digits.slice(cut) + "Z";
}
let isoSec = "";
let isoPrefix = "";
