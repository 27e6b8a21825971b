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

/**
 * Finds the group of a resource: by object identity first, then by contents. `make` creates a
 * group for a resource not seen yet (given it with the fallback service name applied).
 */
export class ResourceIndex<G> {
  private byObject = new Map<Attributes, G>();
  private byKey = new Map<string, G>();

  constructor(
    private readonly fallbackService: string,
    private readonly make: (resource: Attributes) => G,
  ) {}

  get(resource: Attributes): G {
    let g = this.byObject.get(resource);
    if (g === undefined) {
      const key = resourceKey(resource);
      g = this.byKey.get(key);
      if (g === undefined) {
        g = this.make(withServiceName(resource, this.fallbackService));
        this.byKey.set(key, g);
      }
      this.byObject.set(resource, g);
    }
    return g;
  }

  clear(): void {
    this.byObject.clear();
    this.byKey.clear();
  }
}

export function groupByResource(spans: readonly Span[], fallbackService: string): ResourceGroup[] {
  const groups: ResourceGroup[] = [];
  const index = new ResourceIndex<ResourceGroup>(fallbackService, (resource) => {
    const g = { resource, spans: [] };
    groups.push(g);
    return g;
  });
  for (const span of spans) index.get(span.resource).spans.push(span);
  return groups;
}
