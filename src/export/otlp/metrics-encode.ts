/**
 * RED metrics snapshot → ExportMetricsServiceRequest (opentelemetry/proto/collector/metrics/v1)
 * in protobuf binary. Field numbers are those of the official .proto files
 * (test/fixtures/otlp-proto). One ResourceMetrics per resource (service), one ScopeMetrics
 * (scope `ebpf-tracer`), one Metric per instrument name holding a Histogram with CUMULATIVE
 * temporality and one HistogramDataPoint per series. Histograms without observations are left out.
 */
import type { Attributes } from "../../spans/span.ts";
import type { Histogram, Instrument, RedSnapshot } from "../../metrics/red.ts";
import { beginResourceScope, endResourceScope, writeAttributes } from "./encode-proto.ts";
import { ProtoWriter } from "./proto-writer.ts";

// ExportMetricsServiceRequest: resource_metrics 1 · ResourceMetrics: resource 1, scope_metrics 2
// ScopeMetrics: scope 1, metrics 2 · Metric: name 1, description 2, unit 3, histogram 9
// Histogram: data_points 1, aggregation_temporality 2 (CUMULATIVE = 2)
// HistogramDataPoint: start_time_unix_nano 2, time_unix_nano 3, count 4 (fixed64), sum 5,
//   bucket_counts 6 (packed fixed64), explicit_bounds 7 (packed double), attributes 9, min 11, max 12
const AGGREGATION_TEMPORALITY_CUMULATIVE = 2;

interface Point {
  attributes: Attributes;
  h: Histogram;
}

function writePoint(w: ProtoWriter, p: Point, start: bigint, time: bigint): void {
  const h = p.h;
  // Weighted (sampled) counts are fractional: round the cumulative counts, so the buckets still
  // add up to the count. Unweighted counts are whole and pass unchanged.
  const buckets = new Array<number>(h.counts.length);
  let cum = 0;
  let prev = 0;
  for (let i = 0; i < h.counts.length; i++) {
    cum += h.counts[i]!;
    const r = Math.round(cum);
    buckets[i] = r - prev;
    prev = r;
  }
  const m = w.begin(1, 2);
  w.fixed64Field(2, start);
  w.fixed64Field(3, time);
  w.fixed64Field(4, BigInt(prev));
  w.doubleField(5, h.sum);
  w.tag(6, 2);
  w.varint32(buckets.length * 8);
  w.ensure(buckets.length * 8);
  for (let i = 0; i < buckets.length; i++) {
    w.buf.writeBigUInt64LE(BigInt(buckets[i]!), w.pos);
    w.pos += 8;
  }
  w.tag(7, 2);
  w.varint32(h.bounds.length * 8);
  w.ensure(h.bounds.length * 8);
  for (let i = 0; i < h.bounds.length; i++) {
    w.buf.writeDoubleLE(h.bounds[i]!, w.pos);
    w.pos += 8;
  }
  writeAttributes(w, 9, p.attributes);
  if (h.count > 0) {
    w.doubleField(11, h.min);
    w.doubleField(12, h.max);
  }
  w.end(m);
}

/** Groups non-empty histograms: resource → instrument name → points (first-seen order). */
function group(snap: RedSnapshot): Map<Attributes, Map<string, { ins: Instrument; points: Point[] }>> {
  const out = new Map<Attributes, Map<string, { ins: Instrument; points: Point[] }>>();
  for (const s of snap.series) {
    let byName = out.get(s.resource);
    if (!byName) out.set(s.resource, (byName = new Map()));
    for (let i = 0; i < 3; i++) {
      const h = s.histograms[i]!;
      if (h.count === 0) continue;
      const ins = s.instruments[i]!;
      let m = byName.get(ins.name);
      if (!m) byName.set(ins.name, (m = { ins, points: [] }));
      m.points.push({ attributes: s.attributes, h });
    }
  }
  return out;
}

/** Encodes one ExportMetricsServiceRequest; `points` = data points written. */
export function encodeMetricsProto(snap: RedSnapshot): { body: Uint8Array; points: number } {
  const w = new ProtoWriter(64 * 1024);
  let points = 0;
  for (const [resource, byName] of group(snap)) {
    if (byName.size === 0) continue;
    const m = beginResourceScope(w, resource);
    for (const { ins, points: pts } of byName.values()) {
      const mm = w.begin(2, 3);
      w.stringField(1, ins.name);
      w.stringField(2, ins.description);
      w.stringField(3, ins.unit);
      const hm = w.begin(9, 3);
      for (const p of pts) writePoint(w, p, snap.startTimeUnixNano, snap.timeUnixNano);
      w.varintField(2, AGGREGATION_TEMPORALITY_CUMULATIVE);
      w.end(hm);
      w.end(mm);
      points += pts.length;
    }
    endResourceScope(w, m);
  }
  return { body: w.finish(), points };
}
