/**
 * One HTTP/2 stream as an Exchange: what the session collected for the request and the response
 * half, turned into span attributes on demand (attribute names: see ATTRIBUTES below and
 * docs/spans.md).
 */
import type { Attributes } from "../../spans/span.ts";
import type { Exchange } from "../session.ts";
import { decodeGrpcMessage, GRPC_CODE_NAMES, grpcIsError, GrpcMessageCounter, parseGrpcStatus, splitGrpcPath } from "../grpc/grpc.ts";
import { errorCodeName } from "./frames.ts";
import { REQ_HEADER, RES_HEADER, spanName, writeBody, writeHeaderList, writeMethod } from "../http-attributes.ts";

/** One direction of a stream. Fields are flat [name, value, name, value, …] lists. */
export class Half {
  /** Regular fields of the (final) header block, then `trailers`. */
  fields: string[] = [];
  trailers: string[] | undefined = undefined;
  method: string | undefined = undefined;
  scheme: string | undefined = undefined;
  authority: string | undefined = undefined;
  path: string | undefined = undefined;
  status: number | undefined = undefined;
  /** Its initial header block was seen (decoded, even if partly unknown). */
  headersSeen = false;
  /** Fields left out because HPACK could not resolve them; header blocks that could not be read. */
  unknown = 0;
  lostBlocks = 0;
  /** Fields dropped by the header list size cap; a block that was malformed. */
  oversize = 0;
  corrupt = false;
  endStream = false;
  contentType: string | undefined = undefined;
  keep = false;
  body: Uint8Array | undefined = undefined;
  bodyLen = 0;
  bodySize = 0;
  truncated = false;
  grpc: GrpcMessageCounter | undefined = undefined;
  firstNs = 0n;
  lastNs = 0n;
  interim = 0;

  field(lowerName: string): string | undefined {
    let v: string | undefined;
    for (const list of [this.fields, this.trailers]) {
      if (list === undefined) continue;
      for (let i = 0; i < list.length; i += 2) {
        if (list[i] === lowerName) v = v === undefined ? list[i + 1]! : `${v},${list[i + 1]!}`;
      }
    }
    return v;
  }
}

export type EndReason = "complete" | "rst_stream" | "goaway" | "close" | "max_age" | "evicted";

/** What the session knows about a stream when it ends. */
export interface StreamRecord {
  id: number;
  req: Half;
  res: Half;
  startNs: bigint;
  pushedBy: number;
  rstCode: number;            // -1: none
  end: EndReason;
  /** Bytes of this connection were lost while the stream was open (sync lost, data gap). */
  gap: boolean;
  grpc: boolean;
}

const EMPTY = new Uint8Array(0);
function bodyAttrs(attrs: Attributes, prefix: "http.request" | "http.response", h: Half, maxDecoded: number): void {
  const b = h.body === undefined ? EMPTY : h.body.length === h.bodyLen ? h.body : h.body.subarray(0, h.bodyLen);
  writeBody(attrs, prefix, b, h.bodySize, h.truncated, true, b.length > 0 ? h.field("content-encoding") : undefined, maxDecoded);
}

export class Http2Exchange implements Exchange {
  readonly protocol = "http2" as const;
  readonly startNs: bigint;
  readonly endNs: bigint;
  readonly partial: boolean;
  readonly responseMissing: boolean;
  readonly name: string;
  readonly authority: string | undefined;
  readonly traceparent: string | undefined;
  readonly grpcStatus: number | undefined;
  readonly unresolved: number;

  /** `maxDecoded`: the most decoded bytes kept of a compressed body (body_max_size_bytes). */
  constructor(readonly s: StreamRecord, private readonly maxDecoded = 131072) {
    const { req, res } = s;
    this.startNs = s.startNs;
    this.endNs = res.lastNs > req.lastNs ? res.lastNs : req.lastNs;
    this.unresolved = req.unknown + res.unknown;
    this.responseMissing = !res.headersSeen && res.lostBlocks === 0;
    this.partial = s.gap || s.end === "close" || s.end === "max_age" || s.end === "evicted" ||
      this.unresolved > 0 || req.lostBlocks > 0 || res.lostBlocks > 0 || req.corrupt || res.corrupt ||
      req.oversize > 0 || res.oversize > 0 || this.responseMissing;
    this.authority = req.authority ?? req.field("host");
    this.traceparent = req.field("traceparent");
    // grpc-status from the trailers, or from the response headers of a trailers-only response
    this.grpcStatus = s.grpc ? parseGrpcStatus(res.trailers !== undefined ? fieldOf(res.trailers, "grpc-status") : fieldOf(res.fields, "grpc-status")) : undefined;
    const rpc = s.grpc ? splitGrpcPath(req.path) : undefined;
    if (rpc !== undefined) this.name = `${rpc[0]}/${rpc[1]}`;
    else if (req.method !== undefined) this.name = req.path !== undefined && req.method !== "CONNECT" ? spanName(req.method, pathOnly(req.path)) : spanName(req.method, "").trimEnd();
    else this.name = "HTTP";
  }

  isError(client: boolean): boolean {
    const s = this.s;
    if (s.rstCode > 0 || s.end === "goaway") return true;
    if (s.grpc && this.grpcStatus !== undefined) return grpcIsError(this.grpcStatus, client);
    const st = s.res.status;
    if (st === undefined) return false;
    return client ? st >= 400 : st >= 500;
  }

  writeAttributes(attrs: Attributes, client: boolean): void {
    const { req, res } = this.s;
    const s = this.s;
    attrs["network.protocol.version"] = "2";
    if (req.method !== undefined) writeMethod(attrs, req.method);
    if (req.path !== undefined) {
      const q = req.path.indexOf("?");
      attrs["url.path"] = q < 0 ? req.path : req.path.slice(0, q);
      if (q >= 0 && q < req.path.length - 1) attrs["url.query"] = req.path.slice(q + 1);
    }
    if (req.scheme !== undefined) attrs["url.scheme"] = req.scheme;
    if (res.status !== undefined) attrs["http.response.status_code"] = res.status;
    writeHeaderList(attrs, REQ_HEADER, req.fields);
    writeHeaderList(attrs, REQ_HEADER, req.trailers);
    writeHeaderList(attrs, RES_HEADER, res.fields);
    writeHeaderList(attrs, RES_HEADER, res.trailers);
    const ua = attrs[REQ_HEADER + "user-agent"];
    if (typeof ua === "string") attrs["user_agent.original"] = ua;
    bodyAttrs(attrs, "http.request", req, this.maxDecoded);
    if (res.headersSeen || res.bodySize > 0) bodyAttrs(attrs, "http.response", res, this.maxDecoded);
    attrs["ebpf.http2.stream_id"] = s.id;
    if (this.unresolved > 0 || req.lostBlocks > 0 || res.lostBlocks > 0 || req.corrupt || res.corrupt) {
      attrs["ebpf.http2.headers_incomplete"] = true;
      attrs["ebpf.http2.unresolved_headers"] = this.unresolved;
      if (req.lostBlocks + res.lostBlocks > 0) attrs["ebpf.http2.lost_header_blocks"] = req.lostBlocks + res.lostBlocks;
    }
    if (req.oversize + res.oversize > 0) attrs["ebpf.http2.headers_dropped"] = req.oversize + res.oversize;
    if (s.pushedBy > 0) attrs["ebpf.http2.pushed_by_stream"] = s.pushedBy;
    if (s.rstCode >= 0) attrs["ebpf.http2.rst_stream"] = true;
    if (s.end === "goaway") attrs["ebpf.http2.goaway"] = true;
    if (s.end === "close" || s.end === "max_age" || s.end === "evicted") {
      attrs["ebpf.http2.incomplete"] = true;
      attrs["ebpf.http2.end_reason"] = s.end;
    }
    if (s.gap) attrs["ebpf.http2.gap"] = true;
    if (res.firstNs > 0n && res.firstNs >= req.firstNs) attrs["ebpf.http2.time_to_first_response_ns"] = Number(res.firstNs - req.firstNs);
    if (s.grpc) {
      attrs["rpc.system"] = "grpc";
      const rpc = splitGrpcPath(req.path);
      if (rpc !== undefined) {
        attrs["rpc.service"] = rpc[0];
        attrs["rpc.method"] = rpc[1];
      }
      if (this.grpcStatus !== undefined) attrs["rpc.grpc.status_code"] = this.grpcStatus;
      const msg = res.trailers !== undefined ? fieldOf(res.trailers, "grpc-message") : fieldOf(res.fields, "grpc-message");
      if (msg !== undefined) attrs["rpc.grpc.status_message"] = decodeGrpcMessage(msg);
      grpcCounts(attrs, "request", req.grpc);
      grpcCounts(attrs, "response", res.grpc);
    }
    if (this.isError(client)) {
      if (s.grpc && this.grpcStatus !== undefined && this.grpcStatus !== 0) attrs["error.type"] = GRPC_CODE_NAMES[this.grpcStatus] ?? String(this.grpcStatus);
      else if (s.rstCode > 0) attrs["error.type"] = errorCodeName(s.rstCode);
      else if (s.end === "goaway") attrs["error.type"] = "GOAWAY";
      else if (res.status !== undefined) attrs["error.type"] = String(res.status);
    }
  }
}

function grpcCounts(attrs: Attributes, dir: string, c: GrpcMessageCounter | undefined): void {
  if (c === undefined) return;
  attrs[`rpc.grpc.${dir}.message_count`] = c.messages;
  attrs[`rpc.grpc.${dir}.message_bytes`] = c.bytes;
  if (c.compressed > 0) attrs[`rpc.grpc.${dir}.compressed_messages`] = c.compressed;
  if (c.lost || c.malformed) attrs[`rpc.grpc.${dir}.messages_incomplete`] = true;
}

function pathOnly(p: string): string {
  const q = p.indexOf("?");
  return q < 0 ? p : p.slice(0, q);
}

function fieldOf(list: string[], lowerName: string): string | undefined {
  for (let i = list.length - 2; i >= 0; i -= 2) if (list[i] === lowerName) return list[i + 1];
  return undefined;
}

/** Every attribute an HTTP/2 exchange may write (for docs/spans.md). */
export const ATTRIBUTES = [
  "network.protocol.version", "http.request.method", "http.request.method_original", "url.path", "url.query",
  "url.scheme", "http.response.status_code", "http.request.header.<name>", "http.response.header.<name>",
  "http.request.body", "http.request.body.size", "http.request.body.truncated", "http.response.body",
  "http.response.body.size", "http.response.body.truncated", "error.type", "rpc.system", "rpc.service", "rpc.method",
  "rpc.grpc.status_code", "rpc.grpc.status_message", "rpc.grpc.request.message_count", "rpc.grpc.request.message_bytes",
  "rpc.grpc.request.compressed_messages", "rpc.grpc.request.messages_incomplete", "rpc.grpc.response.message_count",
  "rpc.grpc.response.message_bytes", "rpc.grpc.response.compressed_messages", "rpc.grpc.response.messages_incomplete",
  "ebpf.http2.stream_id", "ebpf.http2.headers_incomplete", "ebpf.http2.unresolved_headers", "ebpf.http2.lost_header_blocks",
  "ebpf.http2.headers_dropped", "ebpf.http2.pushed_by_stream", "ebpf.http2.rst_stream", "ebpf.http2.goaway",
  "ebpf.http2.incomplete", "ebpf.http2.end_reason", "ebpf.http2.gap", "ebpf.http2.time_to_first_response_ns",
];
