/**
 * Span batch → ExportTraceServiceRequest (opentelemetry/proto/collector/trace/v1) in protobuf
 * binary. Field numbers are those of the official .proto files (test/fixtures/otlp-proto).
 * Integers become int_value, booleans bool_value, strings string_value, fractions double_value.
 */
import type { AttrValue, Attributes, Span } from "../../spans/span.ts";
import { ProtoWriter, varintSize } from "./proto-writer.ts";
import { ResourceIndex } from "./resource-groups.ts";
import { SCOPE_NAME, SCOPE_VERSION, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, STATUS_CODE_ERROR } from "./scope.ts";

// ExportTraceServiceRequest.resource_spans = 1
// ResourceSpans: resource = 1, scope_spans = 2 · Resource: attributes = 1
// ScopeSpans: scope = 1, spans = 2 · InstrumentationScope: name = 1, version = 2
// Span: trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6, start 7, end 8, attributes 9, status 15
// Status: code 3 · KeyValue: key 1, value 2 · AnyValue: string 1, bool 2, int 3, double 4

const KEY_CACHE_MAX = 4096;
/** Values up to this many characters may have their whole KeyValue entry cached. */
const ENTRY_MAX_CHARS = 256;

/**
 * Per attribute name: its `key` field (tag + length + UTF-8), and the whole KeyValue entry of
 * the value it last had when that value came twice in a row. A connection's spans repeat most
 * values (peers, process, most headers): the third span on copies the entry's bytes instead of
 * encoding it again. Values that change every span (ids, ports of other connections, sizes)
 * never allocate an entry; long strings (bodies) are not compared at all.
 */
interface KeyEntry {
  key: Uint8Array;
  last: AttrValue | undefined;
  /** the encoded entry of `last` for field `entryField`, once `last` repeated */
  entry: Uint8Array | undefined;
  entryField: number;
}
const keyCache = new Map<string, KeyEntry>();
const keyWriter = new ProtoWriter(256);

function keyEntry(key: string): KeyEntry {
  let e = keyCache.get(key);
  if (e) return e;
  keyWriter.reset();
  keyWriter.stringField(1, key);
  e = { key: keyWriter.finish(), last: undefined, entry: undefined, entryField: 0 };
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
  keyCache.set(key, e);
  return e;
}

/** Bytes of an AnyValue holding string `v` when it is ASCII (1 tag + length + bytes). */
function anyStringSize(v: string): number {
  return 1 + varintSize(v.length) + v.length;
}

/** `any`: anyStringSize(v) for a string (the length reserve), unused otherwise. */
function writeAnyValue(w: ProtoWriter, v: AttrValue, any: number): void {
  if (typeof v === "string") {
    // Length reserves sized for ASCII text: exact for nearly every value, so end() rarely has
    // to move the content (a guess of 3 bytes for every string of 40+ characters moved most).
    const m = w.begin(2, varintSize(any));
    w.stringField(1, v);
    w.end(m);
  } else if (typeof v === "number") {
    const m = w.begin(2, 1);
    if (Number.isSafeInteger(v)) w.int64Field(3, v);
    else w.doubleField(4, v);
    w.end(m);
  } else {
    const m = w.begin(2, 1);
    w.varintField(2, v ? 1 : 0);
    w.end(m);
  }
}

export function writeAttributes(w: ProtoWriter, field: number, attrs: Attributes): void {
  for (const key in attrs) {
    const v = attrs[key];
    if (v === undefined || v === null) continue;
    const e = keyEntry(key);
    const cacheable = typeof v !== "string" || v.length <= ENTRY_MAX_CHARS;
    const repeated = cacheable && v === e.last;
    if (repeated && e.entry !== undefined && e.entryField === field) {
      w.raw(e.entry);
      continue;
    }
    const start = w.pos;
    const kb = e.key;
    const any = typeof v === "string" ? anyStringSize(v) : 0;
    const m = w.begin(field, any ? varintSize(kb.length + 1 + varintSize(any) + any) : 1);
    w.raw(kb);
    writeAnyValue(w, v, any);
    w.end(m);
    if (repeated) {
      e.entry = new Uint8Array(w.buf.subarray(start, w.pos));
      e.entryField = field;
    } else {
      e.last = cacheable ? v : undefined;
      e.entry = undefined;
    }
  }
}

/** Per shared attributes object (Span.shared), its KeyValue entries as Span field 9, encoded once. */
const sharedBytes = new WeakMap<Attributes, Uint8Array>();
const sharedWriter = new ProtoWriter(1024);
function sharedEntries(sh: Attributes): Uint8Array {
  let b = sharedBytes.get(sh);
  if (b === undefined) {
    sharedWriter.reset();
    writeAttributes(sharedWriter, 9, sh);
    b = sharedWriter.finish();
    if (Object.isFrozen(sh)) sharedBytes.set(sh, b);
  }
  return b;
}

function writeSpan(w: ProtoWriter, s: Span): void {
  // 2 length bytes fit spans of 128 B to 16 KiB: all but those with large bodies.
  const m = w.begin(2, 2);
  w.hexBytesField(1, s.traceId);
  w.hexBytesField(2, s.spanId);
  if (s.parentSpanId) w.hexBytesField(4, s.parentSpanId);
  w.stringField(5, s.name);
  w.varintField(6, s.kind === "client" ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER);
  w.fixed64Field(7, s.startTimeUnixNano);
  w.fixed64Field(8, s.endTimeUnixNano);
  writeAttributes(w, 9, s.attributes);
  if (s.shared !== undefined) w.raw(sharedEntries(s.shared));
  if (s.error) {
    const st = w.begin(15, 1);
    w.varintField(3, STATUS_CODE_ERROR);
    w.end(st);
  }
  w.end(m);
}

export function writeScope(w: ProtoWriter): void {
  const m = w.begin(1, 1);
  w.stringField(1, SCOPE_NAME);
  w.stringField(2, SCOPE_VERSION);
  w.end(m);
}

const shared = new ProtoWriter();

/** Encodes one ExportTraceServiceRequest. The result is a fresh copy. */
export function encodeTracesProto(spans: readonly Span[], fallbackService: string): Uint8Array {
  return new Uint8Array(encodeTracesProtoView(spans, fallbackService));
}

/** Like encodeTracesProto, without the copy: valid only until the next encode (e.g. to gzip it). */
export function encodeTracesProtoView(spans: readonly Span[], fallbackService: string): Uint8Array {
  // the exporter's own path (ProtoSpanStream), with one stream kept for its buffers
  let s = batchStream;
  if (s === undefined || s.fallbackService !== fallbackService) s = batchStream = new ProtoSpanStream(fallbackService);
  try {
    for (let i = 0; i < spans.length; i++) s.add(spans[i]!);
  } catch (e) {
    s.finishView(); // empties the stream: the next batch starts clean
    throw e;
  }
  return s.finishView();
}
let batchStream: ProtoSpanStream | undefined;

/**
 * An ExportTraceServiceRequest built as its spans come: each span is encoded when added, into
 * its resource group's buffer, so an open batch holds bytes instead of span objects (spans kept
 * for a whole batch outlived the engine's young collections and piled up in its old generation
 * until a full one). encodeTracesProto encodes a whole batch through one.
 */
export class ProtoSpanStream {
  private groups: { resource: Attributes; w: ProtoWriter }[] = [];
  private readonly index: ResourceIndex<{ resource: Attributes; w: ProtoWriter }>;
  private readonly pool: ProtoWriter[] = [];
  count = 0;

  constructor(readonly fallbackService: string) {
    this.index = new ResourceIndex(fallbackService, (resource) => {
      const w = this.pool.pop() ?? new ProtoWriter(64 * 1024);
      w.reset();
      const g = { resource, w };
      this.groups.push(g);
      return g;
    });
  }

  /** Throws on a span that cannot be encoded, leaving the stream as it was before the call. */
  add(span: Span): void {
    const w = this.index.get(span.resource).w;
    const at = w.pos;
    try {
      writeSpan(w, span);
    } catch (e) {
      w.pos = at;
      throw e;
    }
    this.count++;
  }

  /** The request (valid until the next encode); the stream is empty again afterwards. */
  finishView(): Uint8Array {
    const w = shared;
    w.reset();
    for (const g of this.groups) {
      if (g.w.pos === 0) continue; // made for a span that could not be encoded
      const m = beginResourceScope(w, g.resource);
      w.raw(g.w.view());
      endResourceScope(w, m);
      // a writer that grew past a few batches' worth is not kept
      if (g.w.buf.length <= 4 * 1024 * 1024) this.pool.push(g.w);
    }
    this.groups = [];
    this.index.clear();
    this.count = 0;
    return w.view();
  }
}

/**
 * Opens ResourceSpans { resource, ScopeSpans { scope, … } } — or ResourceMetrics { resource,
 * ScopeMetrics { scope, … } }: the same field numbers — up to its items; the markers go to
 * endResourceScope. Length reserves of 3 bytes fit bodies up to 2 MiB (a batch of 512 typical
 * spans is ~0.7 MB): a larger reserve made end() move the whole batch, twice.
 */
export function beginResourceScope(w: ProtoWriter, resource: Attributes): [number, number] {
  const outer = w.begin(1, 3);
  const res = w.begin(1, 2);
  writeAttributes(w, 1, resource);
  w.end(res);
  const scope = w.begin(2, 3);
  writeScope(w);
  return [outer, scope];
}

export function endResourceScope(w: ProtoWriter, [outer, scope]: [number, number]): void {
  w.end(scope);
  w.end(outer);
}
