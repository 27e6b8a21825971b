/**
 * Groups a batch's spans by resource, keeping first-seen order. Spans from one process usually
 * share one `resource` object, so identity is checked first; equal contents in different objects
 * still land in one group. A resource without `service.name` gets the fallback (OTel requires it).
 */
import type { Attributes, Span } from "../../spans/span.ts";

export interface ResourceGroup {
  resource: Attributes;
  spans: Span[];
}

function resourceKey(r: Attributes): string {
  const keys = Object.keys(r).sort();
  let out = "";
  for (const k of keys) {
    const v = r[k]!;
    out += `${k}\u0000${typeof v}\u0000${String(v)}\u0001`;
  }
  return out;
}

function withServiceName(r: Attributes, fallback: string): Attributes {
  if (typeof r["service.name"] === "string" && r["service.name"] !== "") return r;
  return { ...r, "service.name": fallback || "unknown_service:ebpf-tracer" };
}

export function groupByResource(spans: readonly Span[], fallbackService: string): ResourceGroup[] {
  const byObject = new Map<Attributes, ResourceGroup>();
  const byKey = new Map<string, ResourceGroup>();
  const groups: ResourceGroup[] = [];
  for (const span of spans) {
    let g = byObject.get(span.resource);
    if (!g) {
      const key = resourceKey(span.resource);
      g = byKey.get(key);
      if (!g) {
        g = { resource: withServiceName(span.resource, fallbackService), spans: [] };
        byKey.set(key, g);
        groups.push(g);
      }
      byObject.set(span.resource, g);
    }
    g.spans.push(span);
  }
  return groups;
}
