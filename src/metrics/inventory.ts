/**
 * The API inventory: every (service, direction, route) seen since the agent first ran on this
 * host, with the methods, status codes, content types and auth schemes seen, first/last seen,
 * request count, whether redaction fired on it (span attribute `ebpf.redacted`) and whether it
 * was seen over TLS (`url.scheme` https) or in clear text.
 *
 * Auth schemes come from header names and the scheme word of Authorization-type headers only
 * (`bearer`, `basic`, `header:x-api-key`, `cookie`); header values are never stored.
 *
 * Persisted as JSON (`metrics.inventory_path`, default /var/lib/ebpf-tracer/apis.json), written
 * as a temp file (fsynced) + rename so a crash leaves the old or the new file, at most every
 * FLUSH_MS while something changed and at shutdown; loaded at start, so it survives restarts.
 * Bounded: MAX_ENTRIES entries (routes are already capped per service by RouteTable) and
 * MAX_VALUES distinct values per list; past that, counted (InventoryOverflow).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "../log/log.ts";
import { attr, type Span } from "../spans/span.ts";

export const MAX_ENTRIES = 20_000;
const MAX_VALUES = 16;
export const FLUSH_MS = 5000;
const FORMAT_VERSION = 1;

export interface ApiEntry {
  service: string;
  direction: "server" | "client";
  route: string;
  methods: string[];
  statusCodes: number[];
  firstSeen: number; // Unix ms
  lastSeen: number;
  count: number;
  requestContentTypes: string[];
  responseContentTypes: string[];
  authSchemes: string[];
  /** redaction fired on at least one call */
  redacted: boolean;
  /** seen over TLS (https) / in clear text (http) */
  tls: boolean;
  plaintext: boolean;
}

const AUTH_HEADERS = ["authorization", "proxy-authorization"];
const KEY_HEADERS = ["x-api-key", "api-key", "x-auth-token", "x-access-token", "cookie"];
/** [attribute key, header] pairs, built once: record() runs for every span */
const AUTH_ATTRS = AUTH_HEADERS.map((h) => [`http.request.header.${h}`, h] as const);
const KEY_ATTRS = KEY_HEADERS.map((h) => [`http.request.header.${h}`, h === "cookie" ? "cookie" : `header:${h}`] as const);
const SCHEME_RE = /^([A-Za-z][A-Za-z0-9._~+-]{0,31})(?:\s|$)/;

function addValue<T>(list: T[], v: T): boolean {
  if (list.includes(v)) return true;
  if (list.length >= MAX_VALUES) return false;
  list.push(v);
  return true;
}

/** "application/json; charset=utf-8" → "application/json" (at most 64 chars). */
export function baseContentType(v: unknown): string | undefined {
  if (typeof v !== "string") return undefined;
  const known = baseTypes.get(v);
  if (known !== undefined || baseTypes.has(v)) return known;
  const semi = v.indexOf(";");
  const t = (semi < 0 ? v : v.slice(0, semi)).trim().toLowerCase();
  const base = t && t.length <= 64 ? t : undefined;
  // A service answers with a handful of content types: each is taken apart once. Bounded: a
  // full cache starts over (header values come from the traffic).
  if (baseTypes.size >= 256) baseTypes.clear();
  if (v.length <= 128) baseTypes.set(v, base);
  return base;
}
const baseTypes = new Map<string, string | undefined>();

/** Auth schemes of a span's request headers: scheme words and header names, never values. */
export function authSchemesOf(attrs: Span["attributes"]): string[] {
  const out: string[] = [];
  for (const [key, h] of AUTH_ATTRS) {
    const v = attrs[key];
    if (typeof v !== "string") continue;
    const m = SCHEME_RE.exec(v.trim());
    out.push(m ? m[1]!.toLowerCase() : `header:${h}`);
  }
  for (const [key, scheme] of KEY_ATTRS) if (attrs[key] !== undefined) out.push(scheme);
  return out;
}

export class ApiInventory {
  /** service → direction → route → entry: looked up with the strings a span carries, no key built */
  private readonly entries = new Map<string, { server: Map<string, ApiEntry>; client: Map<string, ApiEntry> }>();
  private dirty = false;
  private timer: ReturnType<typeof setInterval> | undefined;
  private overflow = 0;
  private writeErrors = 0;

  /** `path` "" keeps the inventory in memory only. Reads what an earlier run saved. */
  constructor(readonly path: string, private readonly log?: Logger) {
    if (path) this.load();
  }

  private load(): void {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") this.log?.warn("api inventory: cannot read; starting empty", { file: this.path, error: (e as NodeJS.ErrnoException).code ?? String(e) });
      return;
    }
    try {
      const doc = JSON.parse(text) as { version?: number; entries?: ApiEntry[] };
      if (doc.version !== FORMAT_VERSION || !Array.isArray(doc.entries)) throw new Error(`unknown format (version ${doc.version})`);
      for (const e of doc.entries.slice(0, MAX_ENTRIES)) this.routesOf(String(e.service), e.direction === "client" ? "client" : "server").set(e.route, e);
    } catch (e) {
      this.log?.warn("api inventory: file is not a valid inventory; starting empty (it is replaced at the next save)", { file: this.path, error: String((e as Error).message ?? e) });
    }
  }

  /** Saves every FLUSH_MS while something changed. */
  start(): void {
    if (!this.path || this.timer) return;
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }

  record(span: Span, route: string | undefined): void {
    if (route === undefined) return;
    const a = span.attributes;
    const sv = span.resource["service.name"];
    const service = typeof sv === "string" ? sv : String(sv ?? "");
    const routes = this.routesOf(service, span.kind);
    let e = routes.get(route);
    const t = Number(span.startTimeUnixNano / 1_000_000n);
    if (!e) {
      if (this.count() >= MAX_ENTRIES) {
        this.overflow++;
        return;
      }
      e = {
        service, direction: span.kind, route, methods: [], statusCodes: [], firstSeen: t, lastSeen: t, count: 0,
        requestContentTypes: [], responseContentTypes: [], authSchemes: [], redacted: false, tls: false, plaintext: false,
      };
      routes.set(route, e);
    }
    e.count++;
    if (t > e.lastSeen) e.lastSeen = t;
    if (t < e.firstSeen) e.firstSeen = t;
    let ok = true;
    const method = a["http.request.method"];
    if (typeof method === "string") ok = addValue(e.methods, method) && ok;
    const status = a["rpc.system"] !== undefined ? a["rpc.grpc.status_code"] : a["http.response.status_code"];
    if (typeof status === "number") ok = addValue(e.statusCodes, status) && ok;
    const reqCt = baseContentType(a["http.request.header.content-type"]);
    if (reqCt) ok = addValue(e.requestContentTypes, reqCt) && ok;
    const resCt = baseContentType(a["http.response.header.content-type"]);
    if (resCt) ok = addValue(e.responseContentTypes, resCt) && ok;
    for (const s of authSchemesOf(a)) ok = addValue(e.authSchemes, s) && ok;
    if (a["ebpf.redacted"] !== undefined) e.redacted = true;
    if (attr(span, "url.scheme") === "https") e.tls = true;
    else e.plaintext = true;
    if (!ok) this.overflow++;
    this.dirty = true;
  }

  list(): ApiEntry[] {
    const out: ApiEntry[] = [];
    for (const d of this.entries.values()) out.push(...d.server.values(), ...d.client.values());
    return out;
  }

  /** Entries held (a new entry's check: services are few) */
  private count(): number {
    let n = 0;
    for (const d of this.entries.values()) n += d.server.size + d.client.size;
    return n;
  }

  private routesOf(service: string, direction: "server" | "client"): Map<string, ApiEntry> {
    let d = this.entries.get(service);
    if (!d) this.entries.set(service, (d = { server: new Map(), client: new Map() }));
    return d[direction];
  }

  /** Writes the file when something changed; failures are logged once per change and counted. */
  flush(): void {
    if (!this.path || !this.dirty) return;
    this.dirty = false;
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o750 });
      const tmp = `${this.path}.tmp`;
      const data = Buffer.from(JSON.stringify({ version: FORMAT_VERSION, savedAt: Date.now(), entries: this.list() }));
      const fd = openSync(tmp, "w", 0o640);
      try {
        let off = 0;
        while (off < data.length) off += writeSync(fd, data, off, data.length - off);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
    } catch (e) {
      if (this.writeErrors++ === 0) this.log?.error("api inventory: cannot save", { file: this.path, error: (e as NodeJS.ErrnoException).code ?? String(e) });
      this.dirty = true;
    }
  }

  stats(): Record<string, number> {
    return { TrackedApis: this.count(), InventoryOverflow: this.overflow, InventoryWriteErrors: this.writeErrors };
  }
}

/** Reads a saved inventory file (for `ebpf-tracer apis`); throws with the reason. */
export function readInventoryFile(path: string): { savedAt: number; entries: ApiEntry[] } {
  const doc = JSON.parse(readFileSync(path, "utf8")) as { version?: number; savedAt?: number; entries?: ApiEntry[] };
  if (doc.version !== FORMAT_VERSION || !Array.isArray(doc.entries)) throw new Error(`${path}: not an API inventory file (version ${doc.version})`);
  return { savedAt: doc.savedAt ?? 0, entries: doc.entries };
}
