/**
 * A real OTLP/HTTP trace receiver for tests (Bun.serve, HTTPS or plain HTTP). It decodes every
 * `POST /v1/traces` with protobufjs and the official .proto files in test/fixtures/otlp-proto —
 * protobuf or JSON, gzip or not — and records each span in a normalised form (ReceivedSpan).
 *
 * Controls, for failure tests:
 *   enqueue(...responses)  scripted answers for the next requests (503 + Retry-After, 400, partial success)
 *   hang(true)             accept requests but never answer them (and record nothing)
 *   down() / up()          stop listening / listen again on the same port
 *   waitForSpans(n)        resolves when n spans were recorded (rejects after a timeout)
 *
 * Usage:
 *   const certs = makeTestCerts();
 *   const rx = await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key } });
 *   ... export to rx.endpoint (https://localhost:PORT) with agent_config.ca_cert_file = certs.ca.cert
 *   await rx.waitForSpans(10); expect(rx.spans[0].attributes["http.status_code"]).toEqual({ intValue: "200" });
 *   await rx.close();
 */
import { join } from "node:path";
import protobuf from "protobufjs";
import { readPem } from "./certs.ts";

export const OTLP_PROTO_DIR = join(import.meta.dir, "..", "fixtures", "otlp-proto", "proto");

/** An attribute value as OTLP/JSON writes it: ints as decimal strings. */
export type TypedValue =
  | { stringValue: string }
  | { intValue: string }
  | { boolValue: boolean }
  | { doubleValue: number }
  | { other: unknown };

export interface ReceivedSpan {
  traceId: string; // lower-case hex
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Record<string, TypedValue>;
  status: { code: number; message: string };
  resource: Record<string, TypedValue>;
  scope: { name: string; version: string };
  /** index into `requests` */
  request: number;
}

export interface ReceivedRequest {
  path: string;
  headers: Record<string, string>;
  contentType: string;
  contentEncoding: string;
  bodyBytes: number;
  spans: number;
  /** HTTP status answered */
  status: number;
  /** true when the spans were recorded (2xx answers) */
  recorded: boolean;
}

export interface ScriptedResponse {
  status: number;
  /** Retry-After header value (seconds or HTTP date) */
  retryAfter?: string;
  /** response body (text); default a short message */
  body?: string;
  /** answer 200 with ExportTraceServiceResponse.partial_success set */
  partialSuccess?: { rejectedSpans: number; errorMessage: string };
  /** record the request's spans; default: only for 2xx */
  record?: boolean;
}

export interface ReceiverTls {
  /** paths to PEM files */
  cert: string;
  key: string;
  /** CA for client certificates; with requestCert the server demands a client cert signed by it */
  ca?: string;
  requestCert?: boolean;
}

export interface ReceiverOptions {
  tls?: ReceiverTls;
  port?: number;
  hostname?: string;
  /** Benchmarks: count the spans of protobuf trace posts (`spanCount`) without decoding or
   * keeping them, so the receiver answers as fast as a collector would and does not grow. */
  countOnly?: boolean;
  /** A collector without zstd: trace posts with `Content-Encoding: zstd` are answered with this
   * status (415, or 400 as from a server that hands the body on undecoded) and recorded as not
   * kept. */
  refuseZstd?: number;
}

/** A request body without its Content-Encoding (gzip or zstd; anything else as it is). */
function unpack(body: Uint8Array, contentEncoding: string | null): Uint8Array {
  if (contentEncoding === "gzip") return Bun.gunzipSync(body as Uint8Array<ArrayBuffer>);
  if (contentEncoding === "zstd") return Bun.zstdDecompressSync(body as Uint8Array<ArrayBuffer>);
  return body;
}

/** Spans in an ExportTraceServiceRequest (resource_spans 1 → scope_spans 2 → spans 2), by walking
 * the wire format; throws on a malformed message. */
export function countProtoSpans(buf: Uint8Array): number {
  const varint = (at: { p: number }): number => {
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      if (at.p >= buf.length || shift > 49) throw new Error("truncated varint");
      const b = buf[at.p++]!;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
  };
  const walk = (start: number, end: number, path: number[]): number => {
    let n = 0;
    const at = { p: start };
    while (at.p < end) {
      const key = varint(at);
      const wire = key & 7;
      if (wire === 0) varint(at);
      else if (wire === 1) at.p += 8;
      else if (wire === 5) at.p += 4;
      else if (wire === 2) {
        const len = varint(at);
        if (at.p + len > end) throw new Error("length past the end of its message");
        if (Math.floor(key / 8) === path[0]) n += path.length === 1 ? 1 : walk(at.p, at.p + len, path.slice(1));
        at.p += len;
      } else throw new Error(`wire type ${wire}`);
    }
    if (at.p !== end) throw new Error("field past the end of its message");
    return n;
  };
  return walk(0, buf.length, [1, 2, 2]);
}

let rootCache: protobuf.Root | undefined;

/** The OTLP trace protos loaded by protobufjs from the copied official files. */
export function loadOtlpRoot(): protobuf.Root {
  if (rootCache) return rootCache;
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(OTLP_PROTO_DIR, target);
  root.loadSync(["opentelemetry/proto/collector/trace/v1/trace_service.proto", "opentelemetry/proto/collector/metrics/v1/metrics_service.proto"], { keepCase: false });
  root.resolveAll();
  rootCache = root;
  return root;
}

export function otlpType(name: "ExportTraceServiceRequest" | "ExportTraceServiceResponse"): protobuf.Type {
  return loadOtlpRoot().lookupType(`opentelemetry.proto.collector.trace.v1.${name}`);
}

const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? []).toString("hex");

function typed(v: Record<string, unknown> | undefined | null): TypedValue {
  if (!v) return { other: null };
  if (v.stringValue !== undefined && v.stringValue !== null) return { stringValue: String(v.stringValue) };
  if (v.intValue !== undefined && v.intValue !== null) return { intValue: String(v.intValue) };
  if (v.boolValue !== undefined && v.boolValue !== null) return { boolValue: Boolean(v.boolValue) };
  if (v.doubleValue !== undefined && v.doubleValue !== null) return { doubleValue: Number(v.doubleValue) };
  return { other: v };
}

function attrMap(list: unknown): Record<string, TypedValue> {
  const out: Record<string, TypedValue> = {};
  for (const kv of (list as { key?: string; value: Record<string, unknown> }[] | undefined) ?? []) {
    const key = kv.key ?? ""; // proto3 default: an empty key is not on the wire
    if (key in out) throw new Error(`duplicate attribute key ${key}`);
    out[key] = typed(kv.value);
  }
  return out;
}

/** Decodes an ExportMetricsServiceRequest (protobuf bytes) into a plain object (longs as strings). */
export function decodeMetricsProto(bytes: Uint8Array): Record<string, unknown> {
  const T = loadOtlpRoot().lookupType("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest");
  return T.toObject(T.decode(bytes), { longs: String, enums: Number, bytes: Array, defaults: false, arrays: true }) as Record<string, unknown>;
}

/** Decodes an ExportTraceServiceRequest (protobuf bytes) into a plain object (longs as strings). */
export function decodeRequestProto(bytes: Uint8Array): Record<string, unknown> {
  const T = otlpType("ExportTraceServiceRequest");
  return T.toObject(T.decode(bytes), { longs: String, enums: Number, bytes: Array, defaults: false, arrays: true }) as Record<string, unknown>;
}

/** Checks every key of an OTLP/JSON object against the schema (protobufjs ignores unknown keys). */
export function assertKnownJsonFields(type: protobuf.Type, obj: unknown, path = ""): void {
  if (obj === null || typeof obj !== "object") return;
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    const field = type.fields[k];
    if (!field) throw new Error(`unknown OTLP/JSON field ${path}${k} in ${type.name}`);
    if (field.resolvedType instanceof protobuf.Type) {
      const sub = field.resolvedType;
      for (const item of field.repeated ? (v as unknown[]) : [v]) assertKnownJsonFields(sub, item, `${path}${k}.`);
    }
  }
}

/** OTLP/JSON → the same plain object as decodeRequestProto (ids converted from hex). */
export function decodeRequestJson(text: string): Record<string, unknown> {
  const json = JSON.parse(text) as Record<string, unknown>;
  const T = otlpType("ExportTraceServiceRequest");
  assertKnownJsonFields(T, json);
  for (const rs of (json.resourceSpans as Record<string, unknown>[] | undefined) ?? []) {
    for (const ss of (rs.scopeSpans as Record<string, unknown>[] | undefined) ?? []) {
      for (const s of (ss.spans as Record<string, unknown>[] | undefined) ?? []) {
        for (const k of ["traceId", "spanId", "parentSpanId"]) {
          if (typeof s[k] === "string") {
            if (!/^([0-9a-fA-F]{2})*$/.test(s[k] as string)) throw new Error(`${k} is not hex: ${s[k]}`);
            s[k] = Buffer.from(s[k] as string, "hex").toString("base64");
          }
        }
      }
    }
  }
  const msg = T.fromObject(json);
  return T.toObject(msg, { longs: String, enums: Number, bytes: Array, defaults: false, arrays: true }) as Record<string, unknown>;
}

/** Flattens a decoded request into one record per span. */
export function spansOfRequest(req: Record<string, unknown>, requestIndex: number): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of (req.resourceSpans as Record<string, any>[] | undefined) ?? []) {
    const resource = attrMap(rs.resource?.attributes);
    for (const ss of (rs.scopeSpans as Record<string, any>[] | undefined) ?? []) {
      const scope = { name: ss.scope?.name ?? "", version: ss.scope?.version ?? "" };
      for (const s of (ss.spans as Record<string, any>[] | undefined) ?? []) {
        out.push({
          traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId),
          name: s.name ?? "", kind: s.kind ?? 0,
          startTimeUnixNano: String(s.startTimeUnixNano ?? "0"), endTimeUnixNano: String(s.endTimeUnixNano ?? "0"),
          attributes: attrMap(s.attributes),
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? "" },
          resource, scope, request: requestIndex,
        });
      }
    }
  }
  return out;
}

/** Decodes a request body as the receiver does: gzip or zstd undone if so encoded, then protobuf or JSON. */
export function decodeBody(body: Uint8Array, contentType: string, contentEncoding: string): Record<string, unknown> {
  const raw = unpack(body, contentEncoding);
  if (contentType.startsWith("application/json")) return decodeRequestJson(new TextDecoder().decode(raw));
  if (contentType.startsWith("application/x-protobuf")) return decodeRequestProto(raw);
  throw new Error(`unsupported content-type ${contentType}`);
}

function partialSuccessBody(json: boolean, p: { rejectedSpans: number; errorMessage: string }): string | Uint8Array<ArrayBuffer> {
  if (json) return JSON.stringify({ partialSuccess: { rejectedSpans: String(p.rejectedSpans), errorMessage: p.errorMessage } });
  const T = otlpType("ExportTraceServiceResponse");
  return T.encode(T.fromObject({ partialSuccess: p })).finish() as Uint8Array<ArrayBuffer>;
}

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly requests: ReceivedRequest[] = [];
  /** decoded ExportMetricsServiceRequests posted to /v1/metrics, in arrival order */
  readonly metrics: Record<string, unknown>[] = [];
  /** requests being handled right now (hung ones included) and the highest count seen */
  openRequests = 0;
  maxOpenRequests = 0;
  /** requests that arrived while hang(true) was on */
  hungRequests = 0;
  /** spans counted in countOnly mode */
  spanCount = 0;
  /** request bodies received (as sent: compressed when so encoded) and their bytes, in countOnly mode */
  bodies = 0;
  bodyBytes = 0;
  /** bodies that failed to decode (answered 400) with the reason */
  readonly decodeErrors: string[] = [];
  private script: ScriptedResponse[] = [];
  private hanging = false;
  private hung: (() => void)[] = [];
  private server: ReturnType<typeof Bun.serve> | undefined;
  private waiters: (() => void)[] = [];
  port = 0;

  private constructor(private readonly opts: ReceiverOptions) {}

  static async start(opts: ReceiverOptions = {}): Promise<OtlpReceiver> {
    const r = new OtlpReceiver(opts);
    loadOtlpRoot();
    await r.up();
    return r;
  }

  /** `https://localhost:PORT` (or http:// without tls): the value for agent_config.reporting.endpoint */
  get endpoint(): string {
    const host = this.opts.hostname && this.opts.hostname !== "127.0.0.1" ? this.opts.hostname : "localhost";
    return `${this.opts.tls ? "https" : "http"}://${host}:${this.port}`;
  }

  get isUp(): boolean {
    return this.server !== undefined;
  }

  /** Scripted answers for the next requests, in order; afterwards requests get 200. */
  enqueue(...responses: ScriptedResponse[]): void {
    this.script.push(...responses);
  }

  /** Hold every request without answering (true), or answer normally again (false). */
  hang(on: boolean): void {
    this.hanging = on;
    if (!on) this.releaseHung();
  }

  /** Stops listening and drops open connections; the port is kept for up(). */
  async down(): Promise<void> {
    this.releaseHung();
    await this.server?.stop(true);
    this.server = undefined;
  }

  /** Listens (again) on the same port; retries briefly while the port is still busy. */
  async up(): Promise<void> {
    if (this.server) return;
    for (let i = 0; ; i++) {
      try {
        this.server = this.listen();
        this.port = this.server.port ?? 0;
        return;
      } catch (e) {
        if (i >= 50) throw e;
        await Bun.sleep(50);
      }
    }
  }

  async close(): Promise<void> {
    await this.down();
  }

  /** Resolves once at least `n` spans were recorded; rejects after `timeoutMs`. */
  async waitForSpans(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.spans.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`receiver: waited ${timeoutMs} ms for ${n} spans, got ${this.spans.length}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, Math.min(left, 100));
        this.waiters.push(() => { clearTimeout(t); res(); });
      });
    }
  }

  /** Resolves once `pred()` holds (polled every 20 ms); rejects after `timeoutMs`. */
  async waitFor(pred: () => boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`receiver: timed out after ${timeoutMs} ms waiting for ${what}`);
      await Bun.sleep(20);
    }
  }

  /** span ids seen more than once (should stay empty: each batch is delivered exactly once) */
  duplicateSpanIds(): string[] {
    const seen = new Set<string>();
    const dups: string[] = [];
    for (const s of this.spans) {
      const id = s.traceId + s.spanId;
      if (seen.has(id)) dups.push(id);
      seen.add(id);
    }
    return dups;
  }

  private releaseHung(): void {
    const hung = this.hung;
    this.hung = [];
    for (const release of hung) release();
  }

  private listen(): ReturnType<typeof Bun.serve> {
    const t = this.opts.tls;
    return Bun.serve({
      port: this.port || this.opts.port || 0,
      hostname: this.opts.hostname ?? "127.0.0.1",
      idleTimeout: 0,
      tls: t
        ? {
            cert: readPem(t.cert),
            key: readPem(t.key),
            ...(t.ca ? { ca: readPem(t.ca) } : {}),
            ...(t.requestCert ? { requestCert: true, rejectUnauthorized: true } : {}),
          }
        : undefined,
      fetch: (req) => this.handle(req),
    });
  }

  private async handle(req: Request): Promise<Response> {
    this.openRequests++;
    this.maxOpenRequests = Math.max(this.maxOpenRequests, this.openRequests);
    try {
      return await this.answer(req);
    } finally {
      this.openRequests--;
    }
  }

  private async answer(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (req.method === "POST" && url.pathname === "/v1/metrics") {
      const raw = new Uint8Array(await req.arrayBuffer());
      try {
        this.metrics.push(decodeMetricsProto(unpack(raw, req.headers.get("content-encoding"))));
      } catch (e) {
        this.decodeErrors.push(String(e));
        return new Response(`bad request: ${String(e)}`, { status: 400 });
      }
      return new Response(new Uint8Array(0), { status: 200, headers: { "content-type": "application/x-protobuf" } });
    }
    if (req.method !== "POST" || url.pathname !== "/v1/traces") return new Response("not found", { status: 404 });
    const body = new Uint8Array(await req.arrayBuffer());
    if (this.hanging) {
      this.hungRequests++;
      // held until hang(false)/down(), or until the client gives up (then it is no longer open)
      await new Promise<void>((res) => {
        this.hung.push(res);
        req.signal.addEventListener("abort", () => res(), { once: true });
      });
      return new Response("released", { status: 503 });
    }
    const contentType = req.headers.get("content-type") ?? "";
    const contentEncoding = req.headers.get("content-encoding") ?? "";
    if (this.opts.countOnly && contentType === "application/x-protobuf") {
      this.bodies++;
      this.bodyBytes += body.length;
      try {
        this.spanCount += countProtoSpans(unpack(body, contentEncoding));
      } catch (e) {
        this.decodeErrors.push(String(e));
        return new Response(`bad request: ${String(e)}`, { status: 400 });
      }
      return new Response(new Uint8Array(0), { status: 200, headers: { "content-type": "application/x-protobuf" } });
    }
    // a collector without zstd answers before reading the body, and leaves the script alone
    const refused = contentEncoding === "zstd" ? this.opts.refuseZstd : undefined;
    let spans: ReceivedSpan[] = [];
    if (refused === undefined) {
      let decoded: Record<string, unknown>;
      try {
        decoded = decodeBody(body, contentType, contentEncoding);
      } catch (e) {
        this.decodeErrors.push(String(e));
        return new Response(`bad request: ${String(e)}`, { status: 400 });
      }
      spans = spansOfRequest(decoded, this.requests.length);
    }
    const scripted: ScriptedResponse = refused !== undefined
      ? { status: refused, body: "unsupported Content-Encoding: zstd", record: false }
      : this.script.shift() ?? { status: 200 };
    const record = scripted.record ?? (scripted.status >= 200 && scripted.status < 300);
    this.requests.push({
      path: url.pathname, headers: Object.fromEntries(req.headers.entries()), contentType, contentEncoding,
      bodyBytes: body.length, spans: spans.length, status: scripted.status, recorded: record,
    });
    if (record) {
      this.spans.push(...spans);
      const w = this.waiters;
      this.waiters = [];
      for (const wake of w) wake();
    }
    return this.respond(scripted, contentType.startsWith("application/json"));
  }

  private respond(s: ScriptedResponse, json: boolean): Response {
    const headers: Record<string, string> = {};
    if (s.retryAfter !== undefined) headers["retry-after"] = s.retryAfter;
    if (s.partialSuccess) {
      headers["content-type"] = json ? "application/json" : "application/x-protobuf";
      return new Response(partialSuccessBody(json, s.partialSuccess), { status: s.status, headers });
    }
    if (s.status >= 200 && s.status < 300) {
      headers["content-type"] = json ? "application/json" : "application/x-protobuf";
      return new Response(json ? "{}" : new Uint8Array(0), { status: s.status, headers });
    }
    headers["content-type"] = "text/plain";
    return new Response(s.body ?? `scripted ${s.status}`, { status: s.status, headers });
  }
}
