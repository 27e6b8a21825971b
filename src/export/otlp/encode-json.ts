/**
 * Span batch → ExportTraceServiceRequest in OTLP/JSON: camelCase field names, trace/span ids as
 * hex strings, 64-bit integers (times, intValue) as decimal strings, enums as numbers.
 */
import type { AttrValue, Attributes, Span } from "../../spans/span.ts";
import { allAttributes } from "../../spans/span.ts";
import { groupByResource } from "./resource-groups.ts";
import { SCOPE_NAME, SCOPE_VERSION, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, STATUS_CODE_ERROR } from "./scope.ts";

type JsonAnyValue = { stringValue: string } | { intValue: string } | { doubleValue: number } | { boolValue: boolean };

function anyValueJson(v: AttrValue): JsonAnyValue {
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  return Number.isSafeInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

function attributesJson(attrs: Attributes): { key: string; value: JsonAnyValue }[] {
  const out: { key: string; value: JsonAnyValue }[] = [];
  for (const key in attrs) {
    const v = attrs[key];
    if (v === undefined || v === null) continue;
    out.push({ key, value: anyValueJson(v) });
  }
  return out;
}

function spanJson(s: Span): Record<string, unknown> {
  const out: Record<string, unknown> = {
    traceId: s.traceId.toLowerCase(),
    spanId: s.spanId.toLowerCase(),
    ...(s.parentSpanId ? { parentSpanId: s.parentSpanId.toLowerCase() } : {}),
    name: s.name,
    kind: s.kind === "client" ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER,
    startTimeUnixNano: s.startTimeUnixNano.toString(),
    endTimeUnixNano: s.endTimeUnixNano.toString(),
    attributes: attributesJson(allAttributes(s)),
  };
  if (s.error) out.status = { code: STATUS_CODE_ERROR };
  return out;
}

export function tracesRequestJson(spans: readonly Span[], fallbackService: string): Record<string, unknown> {
  return {
    resourceSpans: groupByResource(spans, fallbackService).map((g) => ({
      resource: { attributes: attributesJson(g.resource) },
      scopeSpans: [{ scope: { name: SCOPE_NAME, version: SCOPE_VERSION }, spans: g.spans.map(spanJson) }],
    })),
  };
}

/** Encodes one ExportTraceServiceRequest as UTF-8 JSON. */
export function encodeTracesJson(spans: readonly Span[], fallbackService: string): Uint8Array {
  return Buffer.from(JSON.stringify(tracesRequestJson(spans, fallbackService)), "utf8");
}
