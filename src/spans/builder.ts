/**
 * Turns one protocol exchange on one connection into a Span (attribute names in docs/spans.md).
 * This is the part every protocol shares: peers, process, resource, trace context, custom
 * attributes and the flags of partial exchanges; the exchange writes its own attributes.
 * Pure apart from random ids; the clock mapping is passed in.
 */
import type { Exchange } from "../protocols/session.ts";
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

/** Random bytes drawn 4 KiB at a time and hex-encoded once per draw (one getRandomValues and one
 * native hex encoding per ~170 spans): an id is a substring of the pool's hex, not a
 * concatenation of byte pairs. */
const pool = new Uint8Array(4096);
let poolHex = "";
let poolAt = pool.length;

export function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    crypto.getRandomValues(pool);
    poolHex = Buffer.from(pool.buffer, pool.byteOffset, pool.length).toString("hex");
    poolAt = 0;
  }
  const s = poolHex.slice(2 * poolAt, 2 * (poolAt + bytes));
  poolAt += bytes;
  return s;
}

/**
 * One frozen resource object per process (while its service name, host, environment and
 * executable name stay the same): a process's spans share it, so exporters group them by
 * identity instead of building a key from the contents of a new object per span. Frozen because
 * it is shared: nothing may write to a span's resource. Held weakly by the process's details.
 */
const resources = new WeakMap<object, Attributes>();
function resourceOf(proc: ProcessDetails, serviceName: string, ctx: SpanContext, exeName: string): Attributes {
  let r = resources.get(proc);
  if (r && r["service.name"] === serviceName && r["host.name"] === ctx.hostName && r["process.executable.name"] === exeName &&
    r["process.pid"] === proc.pid && (r["deployment.environment"] ?? "") === ctx.environment) return r;
  r = { "service.name": serviceName, "host.name": ctx.hostName };
  if (ctx.environment) r["deployment.environment"] = ctx.environment;
  r["process.pid"] = proc.pid;
  r["process.executable.name"] = exeName;
  Object.freeze(r);
  resources.set(proc, r);
  return r;
}

/** W3C traceparent "00-<trace>-<span>-<flags>" → ids, when valid. */
export function parseTraceparent(v: string | undefined): { traceId: string; parentId: string } | undefined {
  if (!v) return undefined;
  // "vv-" 32 hex "-" 16 hex "-ff" (lowercase hex only, W3C Trace Context); trace and parent ids
  // of all zeros are invalid. A character loop: the regex this replaces was 3 % of a replay.
  let s = 0;
  while (s < v.length && (v.charCodeAt(s) === 32 || v.charCodeAt(s) === 9)) s++;
  if (v.length - s < 55) return undefined;
  let traceZero = true;
  let parentZero = true;
  for (let i = 0; i < 55; i++) {
    const c = v.charCodeAt(s + i);
    if (i === 2 || i === 35 || i === 52) {
      if (c !== 45) return undefined; // "-"
      continue;
    }
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return undefined;
    if (c !== 48) {
      if (i > 2 && i < 35) traceZero = false;
      else if (i > 35 && i < 52) parentZero = false;
    }
  }
  if (traceZero || parentZero) return undefined;
  return { traceId: v.slice(s + 3, s + 35), parentId: v.slice(s + 36, s + 52) };
}

/** "host:port" / "[v6]:port" / "host" → parts. */
export function splitHostPort(h: string): { host: string; port?: number } {
  if (h === lastAuthority) return lastHostPort;
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(h) ?? /^([^:]+)(?::(\d+))?$/.exec(h);
  const r = !m ? { host: h } : { host: m[1]!, port: m[2] ? Number(m[2]) : undefined };
  // a connection's requests name the same authority: the last answer is usually this one
  lastAuthority = h;
  lastHostPort = r;
  return r;
}
let lastAuthority = "";
let lastHostPort: { host: string; port?: number } = { host: "" };

/** Writes the attributes every span of `conn` has into `a` (Span.shared's keys). */
function writeConnectionAttributes(a: Attributes, conn: ConnectionMeta, proc: ProcessDetails): void {
  const client = conn.role === ROLE_CLIENT;
  a["url.scheme"] = conn.tls ? "https" : "http";
  if (conn.tls && conn.tlsLibrary) a["ebpf.tls.library"] = conn.tlsLibrary;
  if (conn.tls && conn.tlsCorrelation) a["ebpf.tls.correlation"] = conn.tlsCorrelation === "exact" ? "exact" : "inferred";
  a["network.transport"] = conn.family === 1 ? "unix" : "tcp";
  const clientAddr = client ? conn.localAddr : conn.remoteAddr;
  const clientPort = client ? conn.localPort : conn.remotePort;
  if (clientAddr) a["client.address"] = clientAddr;
  if (clientPort) a["client.port"] = clientPort;
  if (conn.remoteAddr) a["network.peer.address"] = conn.remoteAddr;
  if (conn.remotePort) a["network.peer.port"] = conn.remotePort;
  a["process.pid"] = proc.pid;
  a["process.executable.name"] = proc.name || conn.comm;
  if (proc.exePath) a["process.executable.path"] = proc.exePath;
  if (proc.commandLine) a["process.command_line"] = proc.commandLine;
  if (proc.containerId) a["container.id"] = proc.containerId;
  if (proc.systemdUnit) a["systemd.unit"] = proc.systemdUnit;
  a["traceableai.module.name"] = "ebpf";
  a["ebpf.sampling.ratio"] = conn.samplingRatio ?? 1;
}

/**
 * The attributes a connection's spans share (Span.shared): one frozen object per connection,
 * made again only when one of the values it is made of changes (a process's details filled in
 * later, the TLS library or correlation learned, the sampling ratio). Keys a custom attribute
 * names are left out: custom attributes are the span's own and win, as they always did. The
 * protocols write none of these keys (test/spans/builder.test.ts). A connection's first span
 * has them as its own instead: most connections that close after one exchange would pay for the
 * object and the encoders' caches without a second span to gain from them.
 */
interface SharedOf {
  role: number; family: number; localAddr: string; localPort: number; remoteAddr: string; remotePort: number; comm: string;
  tls: boolean | undefined; tlsLibrary: string | undefined; tlsCorrelation: string | undefined; samplingRatio: number | undefined;
  proc: ProcessDetails; pid: number; name: string; exePath: string; commandLine: string; containerId: string | undefined; systemdUnit: string | undefined;
  custom: Record<string, string>;
  attrs: Attributes;
}
const sharedByConn = new WeakMap<ConnectionMeta, SharedOf>();

function sharedOf(conn: ConnectionMeta, proc: ProcessDetails, custom: Record<string, string>): Attributes {
  const e = sharedByConn.get(conn);
  if (e !== undefined && e.role === conn.role && e.tls === conn.tls && e.tlsLibrary === conn.tlsLibrary && e.tlsCorrelation === conn.tlsCorrelation &&
    e.samplingRatio === conn.samplingRatio && e.proc === proc && e.pid === proc.pid && e.name === proc.name && e.exePath === proc.exePath &&
    e.commandLine === proc.commandLine && e.containerId === proc.containerId && e.systemdUnit === proc.systemdUnit && e.custom === custom &&
    e.family === conn.family && e.localAddr === conn.localAddr && e.localPort === conn.localPort && e.remoteAddr === conn.remoteAddr &&
    e.remotePort === conn.remotePort && e.comm === conn.comm) return e.attrs;
  const a: Attributes = {};
  writeConnectionAttributes(a, conn, proc);
  for (const k in custom) delete a[k];
  Object.freeze(a);
  sharedByConn.set(conn, {
    role: conn.role, family: conn.family, localAddr: conn.localAddr, localPort: conn.localPort, remoteAddr: conn.remoteAddr, remotePort: conn.remotePort, comm: conn.comm,
    tls: conn.tls, tlsLibrary: conn.tlsLibrary, tlsCorrelation: conn.tlsCorrelation, samplingRatio: conn.samplingRatio,
    proc, pid: proc.pid, name: proc.name, exePath: proc.exePath, commandLine: proc.commandLine, containerId: proc.containerId, systemdUnit: proc.systemdUnit,
    custom, attrs: a,
  });
  return a;
}

export function buildSpan(x: Exchange, conn: ConnectionMeta, proc: ProcessDetails, ctx: SpanContext): Span {
  const client = conn.role === ROLE_CLIENT;
  const attrs: Attributes = {};
  x.writeAttributes(attrs, client);
  const first = !conn.spans;
  conn.spans = (conn.spans ?? 0) + 1;
  // HTTP/2's :scheme is what the client claims; the connection's own scheme overrides it, as it
  // always did. No other shared key is written by a protocol (builder.test.ts).
  if (first) writeConnectionAttributes(attrs, conn, proc);
  else if (attrs["url.scheme"] !== undefined) delete attrs["url.scheme"];
  const hp = x.authority ? splitHostPort(x.authority) : undefined;
  const serverPort = client ? conn.remotePort : conn.localPort;
  attrs["server.address"] = hp?.host || (client ? conn.remoteAddr : conn.localAddr) || "localhost";
  if (hp?.port ?? serverPort) attrs["server.port"] = hp?.port ?? serverPort;
  if (x.partial) attrs["ebpf.partial"] = true;
  if (x.responseMissing) attrs["ebpf.response.missing"] = true;
  for (const k in ctx.customAttributes) attrs[k] = ctx.customAttributes[k]!;
  const shared = first ? undefined : sharedOf(conn, proc, ctx.customAttributes);

  const tp = parseTraceparent(x.traceparent);
  const unitService = proc.systemdUnit?.endsWith(".service") ? proc.systemdUnit.slice(0, -8) : undefined;
  const serviceName = proc.serviceName || ctx.serviceName || unitService || proc.name || conn.comm || "unknown";
  const resource = resourceOf(proc, serviceName, ctx, String(attrs["process.executable.name"] ?? shared?.["process.executable.name"]));
  return {
    traceId: tp?.traceId ?? randomHex(16),
    spanId: randomHex(8),
    parentSpanId: tp?.parentId,
    name: x.name,
    kind: client ? "client" : "server",
    startTimeUnixNano: ctx.toWallNs(x.startNs),
    endTimeUnixNano: ctx.toWallNs(x.endNs),
    error: x.isError(client),
    attributes: attrs,
    shared,
    resource,
  };
}
