/**
 * An encoded batch: one ExportTraceServiceRequest body, ready to POST or to spool. Spans are
 * encoded as they join the open batch (OpenBatch) and the batch is gzipped once, when sealed;
 * memory queue, spool and retries all hold these bytes.
 * `seq` orders batches across the memory queue, the spool and restarts.
 */
import type { Span } from "../../spans/span.ts";
import { encodeTracesProto, encodeTracesProtoView, ProtoSpanStream } from "./encode-proto.ts";
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
  return compress(o.encoding === "json" ? encodeTracesJson(spans, o.fallbackService) : encodeTracesProtoView(spans, o.fallbackService), o);
}

function compress(raw: Uint8Array, o: EncodeOptions): Uint8Array {
  return Bun.gzipSync(raw as Uint8Array<ArrayBuffer>, { level: (o.gzipLevel ?? GZIP_LEVEL) as 1 });
}

/**
 * The batch being filled. Protobuf: spans are encoded as they are added (ProtoSpanStream), so
 * the exporter holds bytes, not span objects, until the batch is sealed. JSON (a debugging
 * encoding) keeps the spans and encodes them at seal. Built for one set of options: a reload
 * that changes them seals first.
 */
export class OpenBatch {
  private readonly stream: ProtoSpanStream | undefined;
  private spans: Span[] = [];

  constructor(readonly o: EncodeOptions) {
    this.stream = o.encoding === "protobuf" ? new ProtoSpanStream(o.fallbackService) : undefined;
  }

  get count(): number {
    return this.stream ? this.stream.count : this.spans.length;
  }

  /** Encodes (protobuf) or keeps (JSON) one span; throws only on a span that cannot be encoded. */
  add(span: Span): void {
    if (this.stream) this.stream.add(span);
    else this.spans.push(span);
  }

  /** The sealed batch; the open batch is empty afterwards. */
  seal(seq: number): EncodedBatch {
    const o = this.o;
    const n = this.count;
    let body: Uint8Array;
    if (this.stream) {
      const raw = this.stream.finishView();
      body = o.gzip ? compress(raw, o) : new Uint8Array(raw);
    } else {
      const spans = this.spans;
      this.spans = [];
      body = encodeSpans(spans, o);
    }
    return { seq, spans: n, body, encoding: o.encoding, gzip: o.gzip, createdMs: Date.now() };
  }
}
