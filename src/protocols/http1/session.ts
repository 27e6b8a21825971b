/**
 * HTTP/1.x behind the protocol seam: bytes from the client are requests, bytes from the server
 * responses (Http1Connection pairs them), and each pair becomes an Http1Exchange. A `101
 * Switching Protocols` to `h2c` hands the connection to HTTP/2, with the upgrade request as its
 * stream 1 and the bytes after the switch.
 */
import type { Attributes } from "../../spans/span.ts";
import { headerValue, REQ_HEADER, RES_HEADER, spanName, splitTarget, writeBody, writeHeaders, writeMethod } from "../http-attributes.ts";
import type { Exchange, ProtocolSession, Sender, SessionEnv } from "../session.ts";
import { Http1Connection, type HttpExchange, type UpgradeSinks } from "./exchange.ts";
import { sameLower, type HttpMessage } from "./parser.ts";
import { decodeHttp2Settings } from "../http2/frames.ts";

export class Http1Exchange implements Exchange {
  readonly protocol = "http1" as const;
  readonly startNs: bigint;
  readonly endNs: bigint;
  readonly partial: boolean;
  readonly responseMissing: boolean;
  readonly authority: string | undefined;
  readonly traceparent: string | undefined;
  private readonly path: string;
  private readonly query: string;
  private readonly userAgent: string | undefined;

  /** `bodyMaxSize`: the most decoded bytes kept of a compressed body. */
  constructor(readonly x: HttpExchange, private readonly bodyMaxSize = 131072) {
    const req = x.request;
    this.startNs = req.firstByteNs;
    this.endNs = x.response ? x.response.lastByteNs : req.lastByteNs;
    this.partial = x.partial;
    this.responseMissing = x.response === undefined;
    const t = splitTarget(req.target);
    this.path = t.path;
    this.query = t.query;
    // One pass over the headers for the three the span needs by name.
    let host: string | undefined, tp: string | undefined, ua: string | undefined;
    const hs = req.headers;
    for (let i = 0; i < hs.length; i++) {
      const n = hs[i]![0];
      if (n.length === 4) { if (host === undefined && sameLower(n, "host")) host = hs[i]![1]; }
      else if (n.length === 10) { if (ua === undefined && sameLower(n, "user-agent")) ua = hs[i]![1]; }
      else if (n.length === 11) { if (tp === undefined && sameLower(n, "traceparent")) tp = hs[i]![1]; }
    }
    this.authority = t.host ?? host;
    this.traceparent = tp;
    this.userAgent = ua;
  }

  get name(): string {
    return spanName(this.x.request.method, this.path);
  }

  isError(client: boolean): boolean {
    const s = this.x.response?.status ?? 0;
    return client ? s >= 400 : s >= 500;
  }

  writeAttributes(attrs: Attributes): void {
    const req = this.x.request;
    const res = this.x.response;
    writeMethod(attrs, req.method);
    attrs["url.path"] = this.path;
    if (this.query) attrs["url.query"] = this.query;
    if (res) attrs["http.response.status_code"] = res.status;
    attrs["network.protocol.version"] = req.version;
    writeHeaders(attrs, REQ_HEADER, req.headers);
    if (res) writeHeaders(attrs, RES_HEADER, res.headers);
    if (this.userAgent !== undefined) attrs["user_agent.original"] = this.userAgent;
    if (req.malformed !== undefined) attrs["ebpf.http.malformed"] = req.malformed;
    writeBody(attrs, "http.request", req.body, req.bodySize, req.bodyTruncated, req.bodySizeExact, headerValue(req.headers, "content-encoding"), this.bodyMaxSize);
    if (res) {
      writeBody(attrs, "http.response", res.body, res.bodySize, res.bodyTruncated, res.bodySizeExact, headerValue(res.headers, "content-encoding"), this.bodyMaxSize);
    }
  }
}


function upgradesTo(m: HttpMessage, token: string): boolean {
  const v = headerValue(m.headers, "upgrade");
  return v !== undefined && v.toLowerCase().split(",").some((p) => p.trim() === token);
}

export class Http1Session implements ProtocolSession {
  readonly protocol = "http1" as const;
  private readonly http: Http1Connection;

  constructor(private readonly env: SessionEnv) {
    this.http = new Http1Connection({
      bodyMaxSize: env.bodyMaxSize,
      keepBody: (ct) => env.keepBody(ct),
      onExchange: (x) => env.emit(new Http1Exchange(x, env.bodyMaxSize)),
      onRequestError: (r) => env.error("client", r),
      onResponseError: (r) => env.error("server", r),
      onUpgrade: (req, res) => this.upgrade(req, res),
    });
  }

  private upgrade(req: HttpMessage, res: HttpMessage): UpgradeSinks | undefined {
    if (res.status !== 101 || !upgradesTo(req, "h2c") || !upgradesTo(res, "h2c")) return undefined;
    const next = this.env.handoff("http2", {
      upgradeRequest: { method: req.method, target: req.target, headers: req.headers, startNs: req.firstByteNs, endNs: req.lastByteNs },
      settings: ((v) => (v === undefined ? undefined : decodeHttp2Settings(v)))(headerValue(req.headers, "http2-settings")),
    });
    return {
      request: (b, ts) => next.data("client", b, ts, true),
      response: (b, ts) => next.data("server", b, ts, true),
    };
  }

  data(from: Sender, bytes: Uint8Array, tsNs: bigint): void {
    if (from === "client") this.http.request(bytes, tsNs);
    else this.http.response(bytes, tsNs);
  }

  gap(from: Sender, n: number, tsNs: bigint, lost: boolean): void {
    this.http.gap(from === "client" ? "request" : "response", n, tsNs, lost);
  }

  close(tsNs: bigint): void {
    this.http.close(tsNs);
  }
}
