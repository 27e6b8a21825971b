/**
 * The OTLP encoders against the official .proto files (test/fixtures/otlp-proto) through
 * protobufjs: every field of every span, typed attribute values, grouping by resource, JSON rules.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { allAttributes, type Attributes, type Span } from "../../src/spans/span.ts";
import { encodeTracesProto, ProtoSpanStream } from "../../src/export/otlp/encode-proto.ts";
import { encodeTracesJson, tracesRequestJson } from "../../src/export/otlp/encode-json.ts";
import { asGzip, contentEncodingOf, decompress, encodeSpans, OpenBatch } from "../../src/export/otlp/batch.ts";
import { ProtoWriter } from "../../src/export/otlp/proto-writer.ts";
import { SCOPE_NAME, SCOPE_VERSION } from "../../src/export/otlp/scope.ts";
import { decodePartialSuccess } from "../../src/export/otlp/response.ts";
import pkg from "../../package.json" with { type: "json" };
import {
  countProtoSpans, decodeBody, decodeRequestJson, decodeRequestProto, otlpType, spansOfRequest, type ReceivedSpan, type TypedValue,
} from "../support/otlp-receiver.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures", "otlp-proto");

const resA: Attributes = { "service.name": "orders", "host.name": "node-1", "process.pid": 4242, "process.executable.name": "java" };
const resB: Attributes = { "service.name": "billing", "host.name": "node-1", "process.pid": 77, "process.runtime.name": "go" };

function span(i: number, over: Partial<Span> = {}): Span {
  return {
    traceId: (i + 1).toString(16).padStart(32, "0").replace(/^0/, "a"),
    spanId: (i + 1).toString(16).padStart(16, "f"),
    name: `GET /api/items/${i}`,
    kind: i % 2 ? "client" : "server",
    startTimeUnixNano: 1_700_000_000_123_456_789n + BigInt(i),
    endTimeUnixNano: 1_700_000_000_223_456_789n + BigInt(i),
    error: i % 3 === 0,
    attributes: {
      "http.method": "GET",
      "http.status_code": 200 + i,
      "net.peer.port": 443,
      "http.request.body.size": 1024 * 1024 * 1024 * 5, // > 2^32: int64
      "http.request.header.x-negative": -42,
      "http.latency.ratio": 0.25,
      "http.response.truncated": i % 2 === 0,
      "http.response.body": "é€😀 unicode ".repeat(i + 1),
      "http.request.body": "x".repeat(1000 + i),
      "http.url": `https://example.com/api/items/${i}?q=${"y".repeat(50)}`,
      "": "empty key",
      "empty.value": "",
      "zero": 0,
      "false.flag": false,
    },
    resource: i % 2 ? resA : resB,
    ...over,
  };
}

function expectedValue(v: string | number | boolean): TypedValue {
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  return Number.isSafeInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

function expectSpanMatches(got: ReceivedSpan, s: Span): void {
  expect(got.traceId).toBe(s.traceId);
  expect(got.spanId).toBe(s.spanId);
  expect(got.parentSpanId).toBe("");
  expect(got.name).toBe(s.name);
  expect(got.kind).toBe(s.kind === "server" ? 2 : 3);
  expect(got.startTimeUnixNano).toBe(s.startTimeUnixNano.toString());
  expect(got.endTimeUnixNano).toBe(s.endTimeUnixNano.toString());
  expect(got.status).toEqual({ code: s.error ? 2 : 0, message: "" });
  expect(got.scope).toEqual({ name: SCOPE_NAME, version: SCOPE_VERSION });
  const attrs: Record<string, TypedValue> = {};
  for (const [k, v] of Object.entries(allAttributes(s))) attrs[k] = expectedValue(v);
  expect(got.attributes).toEqual(attrs);
  const res: Record<string, TypedValue> = {};
  for (const [k, v] of Object.entries(s.resource)) res[k] = expectedValue(v);
  expect(got.resource).toEqual(res);
}

const spans = Array.from({ length: 9 }, (_, i) => span(i));

describe("protobuf encoding", () => {
  test("every span field and typed attribute decodes with the official protos", () => {
    const got = spansOfRequest(decodeRequestProto(encodeTracesProto(spans, "fallback")), 0);
    expect(got.length).toBe(spans.length);
    const byId = new Map(got.map((g) => [g.spanId, g]));
    for (const s of spans) expectSpanMatches(byId.get(s.spanId)!, s);
  });

  test("values repeated span after span (entries copied from the cache) decode exactly, in every pattern", () => {
    // The same value twice, three times and more in a row; alternating values; a value that
    // comes back; 0 and -0; NaN; a key both in the resource (field 1) and in span attributes
    // (field 9); a long string repeated (never cached) and one at the length limit.
    const long = "L".repeat(257);
    const limit = "l".repeat(256);
    const patterns: ((k: number) => Attributes)[] = [
      (k) => ({ "process.pid": 4242, "client.port": 5000 + (k % 2), "server.address": k < 4 ? "a" : "b", "x.same": "v", "x.long": long, "x.limit": limit }),
      (k) => ({ "x.num": k % 3 === 0 ? 0 : -0, "x.nan": NaN, "x.bool": k % 4 < 2, "x.same": "v", "process.pid": k < 6 ? 4242 : 4243 }),
    ];
    for (const make of patterns) {
      const batch = Array.from({ length: 9 }, (_, k) => span(k, { attributes: make(k) }));
      for (let round = 0; round < 3; round++) {
        const got = spansOfRequest(decodeRequestProto(encodeTracesProto(batch, "fallback")), 0);
        const byId = new Map(got.map((g) => [g.spanId, g]));
        for (const s of batch) {
          const want: Record<string, TypedValue> = {};
          for (const [k, v] of Object.entries(s.attributes)) want[k] = Number.isNaN(v) ? { doubleValue: NaN } : expectedValue(v);
          expect(byId.get(s.spanId)!.attributes).toEqual(want);
          expect(byId.get(s.spanId)!.resource["process.pid"]).toEqual(expectedValue(s.resource["process.pid"]!));
        }
      }
    }
  });

  test("streamed as they come (ProtoSpanStream): the same bytes as encoding the batch at once, batch after batch", () => {
    const stream = new ProtoSpanStream("fallback");
    const resC: Attributes = { ...resA }; // equal contents, another object: same group
    const noService: Attributes = { "host.name": "h" }; // gets the fallback service name
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
    for (let b = 0; b < 6; b++) {
      const n = 1 + rnd(40);
      const batch = Array.from({ length: n }, (_, i) => span(b * 100 + i, { resource: [resA, resB, resC, noService][rnd(4)]! }));
      for (const s of batch) stream.add(s);
      expect(stream.count).toBe(n);
      expect(Buffer.from(stream.finishView())).toEqual(Buffer.from(encodeTracesProto(batch, "fallback")));
      expect(stream.count).toBe(0);
    }
  });

  test("a span that cannot be encoded is refused whole; the batch around it stays exact", () => {
    const stream = new ProtoSpanStream("fallback");
    const good = [span(1), span(2)];
    stream.add(good[0]!);
    const bad = { ...span(3), startTimeUnixNano: "yesterday" } as unknown as Span;
    expect(() => stream.add(bad)).toThrow();
    expect(() => stream.add({ ...bad, resource: { "service.name": "only-the-bad-one" } })).toThrow();
    stream.add(good[1]!);
    expect(stream.count).toBe(2);
    expect(Buffer.from(stream.finishView())).toEqual(Buffer.from(encodeTracesProto(good, "fallback")));
  });

  test("OpenBatch: protobuf streamed, JSON kept; both seal to what encodeSpans gives", () => {
    for (const encoding of ["protobuf", "json"] as const) {
      for (const compression of ["none", "gzip", "zstd"] as const) {
        const o = { encoding, compression, fallbackService: "f" };
        const ob = new OpenBatch(o);
        for (const s of spans) ob.add(s);
        expect(ob.count).toBe(spans.length);
        const sealed = ob.seal(42);
        expect(sealed).toMatchObject({ seq: 42, spans: spans.length, encoding, compression });
        expect(ob.count).toBe(0);
        const plain = (b: Uint8Array) => decompress(b, compression);
        expect(Buffer.from(plain(sealed.body))).toEqual(Buffer.from(plain(encodeSpans(spans, o))));
      }
    }
  });

  test("spans are grouped by resource, one scope each, order kept inside a group", () => {
    const req = decodeRequestProto(encodeTracesProto(spans, "fallback")) as any;
    expect(req.resourceSpans.length).toBe(2);
    for (const rs of req.resourceSpans) {
      expect(rs.scopeSpans.length).toBe(1);
      expect(rs.scopeSpans[0].scope).toEqual({ name: "ebpf-tracer", version: pkg.version, attributes: [] });
    }
    const names = req.resourceSpans[0].scopeSpans[0].spans.map((s: any) => s.name);
    expect(names).toEqual(spans.filter((_, i) => i % 2 === 0).map((s) => s.name));
  });

  test("equal resources in different objects share one group; missing service.name gets the fallback", () => {
    const a = span(1, { resource: { ...resA } });
    const b = span(3, { resource: { ...resA } });
    const c = span(5, { resource: { "host.name": "h" } });
    const req = decodeRequestProto(encodeTracesProto([a, b, c], "my-svc")) as any;
    expect(req.resourceSpans.length).toBe(2);
    expect(req.resourceSpans[0].scopeSpans[0].spans.length).toBe(2);
    const r2 = spansOfRequest(req, 0)[2]!.resource;
    expect(r2).toEqual({ "host.name": { stringValue: "h" }, "service.name": { stringValue: "my-svc" } });
  });

  test("large batches (nested lengths > 2 MiB) and an empty batch", () => {
    const big = Array.from({ length: 600 }, (_, i) => span(i, { attributes: { body: "z".repeat(5000), n: i } }));
    const got = spansOfRequest(decodeRequestProto(encodeTracesProto(big, "f")), 0);
    expect(got.length).toBe(600);
    expect(got[599]!.attributes.n).toEqual({ intValue: "599" });
    expect(decodeRequestProto(encodeTracesProto([], "f"))).toEqual({ resourceSpans: [] });
  });

  test("string lengths around varint boundaries and non-ASCII at every length", () => {
    const T = otlpType("ExportTraceServiceResponse").lookupType("ExportTracePartialSuccess");
    const w = new ProtoWriter(8); // tiny: every string forces the buffer to grow
    for (const n of [0, 1, 42, 43, 127, 128, 129, 16383, 16384, 70000]) {
      for (const s of ["a".repeat(n), "é".repeat(n), "a".repeat(n) + "😀", "😀" + "a".repeat(n)]) {
        w.reset();
        w.stringField(2, s);
        expect((T.decode(w.finish()) as any).errorMessage).toBe(s);
      }
    }
  });

  test("the derived reference request decodes to the same objects as our reader expects", () => {
    const bytes = readFileSync(join(FIXTURES, "derived", "trace.ExportRequest.pb"));
    const fromPb = decodeRequestProto(bytes);
    const fromJson = decodeRequestJson(readFileSync(join(FIXTURES, "examples", "trace.json"), "utf8"));
    expect(fromPb).toEqual(fromJson);
    const gz = readFileSync(join(FIXTURES, "derived", "trace.ExportRequest.pb.gz"));
    expect(decodeBody(gz, "application/x-protobuf", "gzip")).toEqual(fromPb);
  });
});

describe("shared attributes (Span.shared)", () => {
  // a connection's attributes, one frozen object held by several spans; one span with none of
  // its own, one with an empty shared object, one whose shared object is not frozen (not cached)
  const connA = Object.freeze({ "url.scheme": "https", "client.port": 40000, "process.command_line": "app --x é", "ebpf.sampling.ratio": 0.5 });
  const connB = Object.freeze({ "url.scheme": "http", "client.port": 40001, "process.command_line": "app --x é", "ebpf.sampling.ratio": 1 });
  const mixed: Span[] = [
    ...Array.from({ length: 5 }, (_, i) => span(20 + i, { shared: i % 2 ? connA : connB })),
    span(30, { attributes: {}, shared: connA }),
    span(31, { shared: Object.freeze({}) }),
    span(32, { shared: { "client.port": 1, "x": "unfrozen" } }),
    span(33),
  ];
  test("protobuf: every span decodes to its own attributes and the shared ones, batch after batch", () => {
    for (let round = 0; round < 3; round++) {
      const got = spansOfRequest(decodeRequestProto(encodeTracesProto(mixed, "fallback")), 0);
      const byId = new Map(got.map((g) => [g.spanId, g]));
      expect(got.length).toBe(mixed.length);
      for (const s of mixed) expectSpanMatches(byId.get(s.spanId)!, s);
    }
  });
  test("OTLP/JSON decodes to what the protobuf encoding decodes to", () => {
    expect(decodeRequestJson(new TextDecoder().decode(encodeTracesJson(mixed, "fallback")))).toEqual(decodeRequestProto(encodeTracesProto(mixed, "fallback")));
  });
});

describe("OTLP/JSON encoding", () => {
  test("decodes (hex ids, string int64, int enums, camelCase) to exactly what the protobuf encoding decodes to", () => {
    const fromJson = decodeRequestJson(new TextDecoder().decode(encodeTracesJson(spans, "fallback")));
    const fromProto = decodeRequestProto(encodeTracesProto(spans, "fallback"));
    expect(fromJson).toEqual(fromProto);
    const got = spansOfRequest(fromJson, 0);
    const byId = new Map(got.map((g) => [g.spanId, g]));
    for (const s of spans) expectSpanMatches(byId.get(s.spanId)!, s);
  });

  test("follows the OTLP/JSON rules literally", () => {
    const j = tracesRequestJson([span(0)], "f") as any;
    const s = j.resourceSpans[0].scopeSpans[0].spans[0];
    expect(s.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(s.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(s.kind).toBe(2);
    expect(s.startTimeUnixNano).toBe("1700000000123456789");
    expect(s.status).toEqual({ code: 2 });
    const attr = (k: string) => s.attributes.find((a: any) => a.key === k).value;
    expect(attr("http.status_code")).toEqual({ intValue: "200" });
    expect(attr("http.response.truncated")).toEqual({ boolValue: true });
    expect(attr("http.latency.ratio")).toEqual({ doubleValue: 0.25 });
    expect(attr("http.method")).toEqual({ stringValue: "GET" });
  });
});

describe("compression", () => {
  for (const encoding of ["protobuf", "json"] as const) {
    for (const compression of ["gzip", "zstd", "none"] as const) {
      test(`${encoding} ${compression} body decodes`, () => {
        const body = encodeSpans(spans, { encoding, compression, fallbackService: "f" });
        const ct = encoding === "json" ? "application/json" : "application/x-protobuf";
        if (compression === "gzip") expect([body[0], body[1]]).toEqual([0x1f, 0x8b]);
        if (compression === "zstd") expect([...body.subarray(0, 4)]).toEqual([0x28, 0xb5, 0x2f, 0xfd]); // RFC 8878 frame magic
        const got = spansOfRequest(decodeBody(body, ct, contentEncodingOf(compression) ?? ""), 0);
        expect(got.length).toBe(spans.length);
      });
    }
  }
  test("asGzip: a zstd batch becomes the same request as gzip; other batches stay as they are", () => {
    const raw = encodeSpans(spans, { encoding: "protobuf", compression: "none", fallbackService: "f" });
    const z = new OpenBatch({ encoding: "protobuf", compression: "zstd", fallbackService: "f" });
    for (const s of spans) z.add(s);
    const zb = z.seal(3);
    const g = asGzip(zb);
    expect(g).toMatchObject({ seq: 3, spans: spans.length, encoding: "protobuf", compression: "gzip", createdMs: zb.createdMs });
    expect(Buffer.from(Bun.gunzipSync(g.body as Uint8Array<ArrayBuffer>))).toEqual(Buffer.from(raw));
    expect(asGzip(g)).toBe(g);
  });
});

describe("ExportTraceServiceResponse decoding", () => {
  const read = (name: string) => new Uint8Array(readFileSync(join(FIXTURES, "derived", name)));
  test("reference protobuf responses", () => {
    expect(decodePartialSuccess(read("trace.ExportResponse.full-success.pb"), "application/x-protobuf")).toBeUndefined();
    expect(decodePartialSuccess(read("trace.ExportResponse.partial-success.pb"), "application/x-protobuf"))
      .toEqual({ rejectedSpans: 1, errorMessage: "1 span rejected: invalid trace id" });
    expect(decodePartialSuccess(read("trace.ExportResponse.warning-only.pb"), "application/x-protobuf"))
      .toEqual({ rejectedSpans: 0, errorMessage: "warning: attribute values truncated" });
  });
  test("JSON responses (int64 as string or number), empty bodies and garbage", () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(decodePartialSuccess(enc('{"partialSuccess":{"rejectedSpans":"3","errorMessage":"bad"}}'), "application/json"))
      .toEqual({ rejectedSpans: 3, errorMessage: "bad" });
    expect(decodePartialSuccess(enc('{"partialSuccess":{"rejectedSpans":2}}'), "application/json; charset=utf-8"))
      .toEqual({ rejectedSpans: 2, errorMessage: "" });
    expect(decodePartialSuccess(enc("{}"), "application/json")).toBeUndefined();
    expect(decodePartialSuccess(enc(""), "application/json")).toBeUndefined();
    expect(decodePartialSuccess(enc("not json"), "application/json")).toBeUndefined();
    expect(decodePartialSuccess(new Uint8Array([0xff, 0xff, 0xff]), "application/x-protobuf")).toBeUndefined();
  });
  test("a response encoded by protobufjs with unknown fields is read", () => {
    const T = otlpType("ExportTraceServiceResponse");
    const bytes = T.encode(T.fromObject({ partialSuccess: { rejectedSpans: 5000000000, errorMessage: "many" } })).finish();
    const withUnknown = new Uint8Array([...bytes, 0x28, 0x01, 0x32, 0x01, 0x41]); // field 5 varint, field 6 bytes
    expect(decodePartialSuccess(withUnknown, "application/x-protobuf")).toEqual({ rejectedSpans: 5000000000, errorMessage: "many" });
  });
});

describe("countProtoSpans (the benchmarks' count-only receiver)", () => {
  test("counts what protobufjs decodes, across resources, and rejects a truncated body", () => {
    for (const n of [0, 1, 7, 300]) {
      const body = encodeTracesProto(Array.from({ length: n }, (_, i) => span(i)), "svc");
      expect(countProtoSpans(body)).toBe(spansOfRequest(decodeRequestProto(body), 0).length);
      expect(countProtoSpans(body)).toBe(n);
      if (n > 0) expect(() => countProtoSpans(body.subarray(0, body.length - 3))).toThrow();
    }
  });
});
