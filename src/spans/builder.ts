/**
 * Turns one HTTP exchange on one connection into a Span (attribute names in docs/spans.md).
 * Pure apart from random ids; the clock mapping is passed in.
 */
import type { HttpExchange } from "../protocols/http1/exchange.ts";
import type { HttpMessage } from "../protocols/http1/parser.ts";
import type { ConnectionMeta } from "../stream/meta.ts";
import type { ProcessDetails } from "../selection/process-registry.ts";
import type { Attributes, Span } from "./span.ts";
import { ROLE_CLIENT } from "../kernel/event-layout.ts";

export interface SpanContext {
  hostName: string;
  serviceName: string;   // configured default; "" = use the process's
  environment: string;
  customAttributes: Record<string, string>;
  /** CLOCK_MONOTONIC ns (as carried by events) → Unix epoch ns */
  toWallNs: (monoNs: bigint) => bigint;
}

const utf8 = new TextDecoder("utf-8");
const hex = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let s = "";
  for (let i = 0; i < bytes; i++) s += hex[b[i]!];
  return s;
}

/** W3C traceparent "00-<trace>-<span>-<flags>" → ids, when valid. */
export function parseTraceparent(v: string | undefined): { traceId: string; parentId: string } | undefined {
  if (!v) return undefined;
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}/.exec(v.trim());
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
  return { traceId: m[1]!, parentId: m[2]! };
}

/** Attribute keys by header name as sent: header names repeat across spans, so the
 * lower-casing and concatenation are done once per distinct name (bounded). */
const REQ_PREFIX = "http.request.header.";
const RES_PREFIX = "http.response.header.";
const keyCache = { [REQ_PREFIX]: new Map<string, string>(), [RES_PREFIX]: new Map<string, string>() };

function attrKey(prefix: typeof REQ_PREFIX | typeof RES_PREFIX, name: string): string {
  const cache = keyCache[prefix];
  let k = cache.get(name);
  if (k === undefined) {
    k = prefix + name.toLowerCase();
    if (cache.size >= 4096) cache.clear();
    cache.set(name, k);
  }
  return k;
}

/** Sets one attribute per header; repeated headers are joined with ",". */
function headerAttrs(attrs: Attributes, prefix: typeof REQ_PREFIX | typeof RES_PREFIX, headers: [string, string][]): void {
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    const k = attrKey(prefix, h[0]);
    const prev = attrs[k];
    attrs[k] = prev === undefined ? h[1] : `${prev},${h[1]}`;
  }
}

function reqHeader(attrs: Attributes, lowerName: string): string | undefined {
  const v = attrs[REQ_PREFIX + lowerName];
  return typeof v === "string" ? v : undefined;
}

function bodyAttrs(attrs: Attributes, prefix: string, m: HttpMessage): void {
  if (m.body.length > 0) attrs[`${prefix}.body`] = utf8.decode(m.body);
  attrs[`${prefix}.body.size`] = m.bodySize;
  if (m.bodyTruncated && m.body.length > 0) attrs[`${prefix}.body.truncated`] = true;
}

/** Splits a request-target into host (absolute-form only), path and query. */
export function splitTarget(target: string): { host?: string; path: string; query: string } {
  let rest = target;
  let host: string | undefined;
  const abs = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
  if (abs) {
    host = abs[1];
    rest = target.slice(abs[0].length) || "/";
  }
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  return q < 0 ? { host, path: rest, query: "" } : { host, path: rest.slice(0, q), query: rest.slice(q + 1) };
}

/** "host:port" / "[v6]:port" / "host" → parts. */
export function splitHostPort(h: string): { host: string; port?: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(h) ?? /^([^:]+)(?::(\d+))?$/.exec(h);
  if (!m) return { host: h };
  return { host: m[1]!, port: m[2] ? Number(m[2]) : undefined };
}

export function buildSpan(x: HttpExchange, conn: ConnectionMeta, proc: ProcessDetails, ctx: SpanContext): Span {
  const req = x.request;
  const res = x.response;
  const client = conn.role === ROLE_CLIENT;
  const attrs: Attributes = {};
  const { host: absHost, path, query } = splitTarget(req.target);
  attrs["http.request.method"] = req.method;
  attrs["url.path"] = path;
  if (query) attrs["url.query"] = query;
  attrs["url.scheme"] = "http";
  if (res) attrs["http.response.status_code"] = res.status;
  attrs["network.protocol.version"] = req.version;
  attrs["network.transport"] = conn.family === 1 ? "unix" : "tcp";

  headerAttrs(attrs, REQ_PREFIX, req.headers);
  if (res) headerAttrs(attrs, RES_PREFIX, res.headers);
  const hostHeader = absHost ?? reqHeader(attrs, "host");
  const hp = hostHeader ? splitHostPort(hostHeader) : undefined;
  const serverPort = client ? conn.remotePort : conn.localPort;
  attrs["server.address"] = hp?.host || (client ? conn.remoteAddr : conn.localAddr) || "localhost";
  if (hp?.port ?? serverPort) attrs["server.port"] = hp?.port ?? serverPort;
  const clientAddr = client ? conn.localAddr : conn.remoteAddr;
  const clientPort = client ? conn.localPort : conn.remotePort;
  if (clientAddr) attrs["client.address"] = clientAddr;
  if (clientPort) attrs["client.port"] = clientPort;
  if (conn.remoteAddr) attrs["network.peer.address"] = conn.remoteAddr;
  if (conn.remotePort) attrs["network.peer.port"] = conn.remotePort;
  const ua = reqHeader(attrs, "user-agent");
  if (ua !== undefined) attrs["user_agent.original"] = ua;

  bodyAttrs(attrs, "http.request", req);
  if (res) bodyAttrs(attrs, "http.response", res);

  attrs["process.pid"] = proc.pid;
  attrs["process.executable.name"] = proc.name || conn.comm;
  if (proc.exePath) attrs["process.executable.path"] = proc.exePath;
  if (proc.commandLine) attrs["process.command_line"] = proc.commandLine;
  if (proc.containerId) attrs["container.id"] = proc.containerId;
  if (proc.systemdUnit) attrs["systemd.unit"] = proc.systemdUnit;
  attrs["traceableai.module.name"] = "ebpf";
  if (x.partial) attrs["ebpf.partial"] = true;
  if (!res) attrs["ebpf.response.missing"] = true;
  for (const [k, v] of Object.entries(ctx.customAttributes)) attrs[k] = v;

  const status = res?.status ?? 0;
  const tp = parseTraceparent(reqHeader(attrs, "traceparent"));
  const unitService = proc.systemdUnit?.endsWith(".service") ? proc.systemdUnit.slice(0, -8) : undefined;
  const serviceName = proc.serviceName || ctx.serviceName || unitService || proc.name || conn.comm || "unknown";
  const resource: Attributes = { "service.name": serviceName, "host.name": ctx.hostName };
  if (ctx.environment) resource["deployment.environment"] = ctx.environment;
  resource["process.pid"] = proc.pid;
  resource["process.executable.name"] = attrs["process.executable.name"]!;
  return {
    traceId: tp?.traceId ?? randomHex(16),
    spanId: randomHex(8),
    parentSpanId: tp?.parentId,
    name: `${req.method} ${path}`,
    kind: client ? "client" : "server",
    startTimeUnixNano: ctx.toWallNs(req.firstByteNs),
    endTimeUnixNano: ctx.toWallNs(res ? res.lastByteNs : req.lastByteNs),
    error: client ? status >= 400 : status >= 500,
    attributes: attrs,
    resource,
  };
}
