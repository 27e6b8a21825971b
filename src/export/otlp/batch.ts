/**
 * An encoded batch: one ExportTraceServiceRequest body, ready to POST or to spool. Batches are
 * encoded (and gzipped) once, when sealed; memory queue, spool and retries all hold these bytes.
 * `seq` orders batches across the memory queue, the spool and restarts.
 */
import type { Span } from "../../spans/span.ts";
import { encodeTracesProto, encodeTracesProtoView } from "./encode-proto.ts";
import { encodeTracesJson } from "./encode-json.ts";

export type OtlpEncoding = "protobuf" | "json";

export interface EncodedBatch {
  seq: number;
  spans: number;
  body: Uint8Array;
  encoding: OtlpEncoding;
  gzip: boolean;
  createdMs: number;
  /** what the body is: an ExportTraceServiceRequest (absent) or an ExportMetricsServiceRequest
   * (always protobuf; `spans` is 0), posted to /v1/metrics */
  signal?: "metrics";
}

export interface EncodeOptions {
  encoding: OtlpEncoding;
  gzip: boolean;
  fallbackService: string;
  /** zlib level; 1 is ~3x faster than 6 for ~10-15% more bytes. */
  gzipLevel?: number;
}

const GZIP_LEVEL = 1;

export function contentTypeOf(encoding: OtlpEncoding): string {
  return encoding === "json" ? "application/json" : "application/x-protobuf";
}

export function encodeSpans(spans: readonly Span[], o: EncodeOptions): Uint8Array {
  if (!o.gzip) return o.encoding === "json" ? encodeTracesJson(spans, o.fallbackService) : encodeTracesProto(spans, o.fallbackService);
  const raw = o.encoding === "json" ? encodeTracesJson(spans, o.fallbackService) : encodeTracesProtoView(spans, o.fallbackService);
  return Bun.gzipSync(raw as Uint8Array<ArrayBuffer>, { level: (o.gzipLevel ?? GZIP_LEVEL) as 1 });
}

export function encodeBatch(spans: readonly Span[], seq: number, o: EncodeOptions): EncodedBatch {
  return { seq, spans: spans.length, body: encodeSpans(spans, o), encoding: o.encoding, gzip: o.gzip, createdMs: Date.now() };
}
