/**
 * An encoded batch: one ExportTraceServiceRequest body, ready to POST or to spool. Spans are
 * encoded as they join the open batch (OpenBatch) and the batch is compressed once, when sealed;
 * memory queue, spool and retries all hold these bytes.
 * `seq` orders batches across the memory queue, the spool and restarts.
 */
import type { Span } from "../../spans/span.ts";
import { encodeTracesProto, encodeTracesProtoView, ProtoSpanStream } from "./encode-proto.ts";
import { encodeTracesJson } from "./encode-json.ts";

export type OtlpEncoding = "protobuf" | "json";
/** The body's Content-Encoding. zstd (RFC 8878) where the collector takes it: at level 1 it
 * is ~20 % faster than gzip level 1 on these bodies and ~37 % smaller (bench/README). */
export type Compression = "gzip" | "zstd" | "none";

export interface EncodedBatch {
  seq: number;
  spans: number;
  body: Uint8Array;
  encoding: OtlpEncoding;
  compression: Compression;
  createdMs: number;
  /** what the body is: an ExportTraceServiceRequest (absent) or an ExportMetricsServiceRequest
   * (always protobuf; `spans` is 0), posted to /v1/metrics */
  signal?: "metrics";
}

export interface EncodeOptions {
  encoding: OtlpEncoding;
  compression: Compression;
  fallbackService: string;
  /** zlib level; 1 is ~3x faster than 6 for ~10-15% more bytes. */
  gzipLevel?: number;
}

const GZIP_LEVEL = 1;
/** zstd level 1: faster than gzip level 1 and smaller; higher levels cost more than they save
 * on a loopback or LAN link. */
const ZSTD_LEVEL = 1;

export function contentTypeOf(encoding: OtlpEncoding): string {
  return encoding === "json" ? "application/json" : "application/x-protobuf";
}

/** The Content-Encoding header value of a body compressed with `c`, undefined for none. */
export function contentEncodingOf(c: Compression): string | undefined {
  return c === "none" ? undefined : c;
}

export function encodeSpans(spans: readonly Span[], o: EncodeOptions): Uint8Array {
  if (o.compression === "none") return o.encoding === "json" ? encodeTracesJson(spans, o.fallbackService) : encodeTracesProto(spans, o.fallbackService);
  return compress(o.encoding === "json" ? encodeTracesJson(spans, o.fallbackService) : encodeTracesProtoView(spans, o.fallbackService), o.compression, o.gzipLevel);
}

/** `raw` compressed with `c` (a new array), or `raw` itself for "none". */
export function compress(raw: Uint8Array, c: Compression, gzipLevel = GZIP_LEVEL): Uint8Array {
  if (c === "zstd") return Bun.zstdCompressSync(raw as Uint8Array<ArrayBuffer>, { level: ZSTD_LEVEL });
  if (c === "gzip") return Bun.gzipSync(raw as Uint8Array<ArrayBuffer>, { level: gzipLevel as 1 });
  return raw;
}

/** The body of `b` without its compression. Throws on a body that does not decompress. */
export function decompress(body: Uint8Array, c: Compression): Uint8Array {
  if (c === "zstd") return Bun.zstdDecompressSync(body as Uint8Array<ArrayBuffer>);
  if (c === "gzip") return Bun.gunzipSync(body as Uint8Array<ArrayBuffer>);
  return body;
}

/** `b` with its body compressed as gzip instead of zstd (for a collector that refuses zstd);
 * the same batch otherwise. */
export function asGzip(b: EncodedBatch): EncodedBatch {
  if (b.compression !== "zstd") return b;
  return { ...b, body: compress(decompress(b.body, "zstd"), "gzip"), compression: "gzip" };
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

  /** The sealed batch, compressed with `compression` (spans are held uncompressed until now: the
   * exporter passes gzip here for zstd once the collector refused zstd); the open batch is empty
   * afterwards. */
  seal(seq: number, compression: Compression = this.o.compression): EncodedBatch {
    const o = this.o;
    const n = this.count;
    let body: Uint8Array;
    if (this.stream) {
      const raw = this.stream.finishView();
      // the stream's view is reused: uncompressed, it is copied
      body = compression === "none" ? new Uint8Array(raw) : compress(raw, compression, o.gzipLevel);
    } else {
      const spans = this.spans;
      this.spans = [];
      body = encodeSpans(spans, { ...o, compression });
    }
    return { seq, spans: n, body, encoding: o.encoding, compression, createdMs: Date.now() };
  }
}
