/**
 * Downloads a BTFHub-style `<release>.btf.tar.xz`, extracts the BTF in-process, validates it and
 * stores it atomically, so a half-written or bogus file is never left where the cache looks.
 *
 * Transport: undici's real client (imported as "undici/index.js" because Bun maps the bare
 * "undici" specifier to a built-in shim whose ProxyAgent is an inert stub). HTTPS_PROXY /
 * https_proxy (HTTP_PROXY / http_proxy for http: URLs) select an undici ProxyAgent, NO_PROXY is
 * honoured. Redirects are followed (GitHub "raw" URLs redirect). Trust: system CAs unless `ca`
 * is given, which replaces them (tests use it with a throwaway CA). The whole exchange, headers
 * and body, must finish within `timeoutMs`.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { Agent, ProxyAgent, interceptors, request, type Dispatcher } from "undici/index.js";
import { parseBtf, BtfError } from "./validate.ts";
import { extractBtfFromTarXz, ArchiveError } from "./tar-xz.ts";

/** Compressed archives are 1–3 MB; 64 MiB only stops a runaway server. */
export const MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024;

export type DownloadFailure = "http" | "timeout" | "network" | "archive" | "invalid" | "io";

export class DownloadError extends Error {
  override name = "DownloadError";
  constructor(
    readonly kind: DownloadFailure,
    message: string,
    readonly url: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface UrlVars {
  id: string;
  version_id: string;
  arch: string;
  release: string;
}

/** Fills {id} {version_id} {arch} {release} in a download_url template; values are URL-encoded. */
export function expandUrl(template: string, vars: UrlVars): string {
  return template.replace(/\{(id|version_id|arch|release)\}/g, (_, k: keyof UrlVars) => encodeURIComponent(vars[k]));
}

type Env = Record<string, string | undefined>;

/** Proxy URL to use for `url` per the usual *_PROXY / NO_PROXY variables, or undefined for direct. */
export function proxyFor(url: string, env: Env = process.env): string | undefined {
  const u = new URL(url);
  const proxy = u.protocol === "https:"
    ? env.https_proxy || env.HTTPS_PROXY
    : env.http_proxy || env.HTTP_PROXY;
  if (!proxy) return undefined;
  return bypassed(u, env.no_proxy || env.NO_PROXY || "") ? undefined : proxy;
}

function bypassed(u: URL, noProxy: string): boolean {
  const host = u.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = u.port || (u.protocol === "https:" ? "443" : "80");
  return noProxy.split(/[\s,]+/).filter(Boolean).some((raw) => {
    if (raw === "*") return true;
    const [h, p] = raw.toLowerCase().replace(/^\*?\./, ".").split(/:(?=\d+$)/);
    if (p && p !== port) return false;
    const name = h!.replace(/^\./, "");
    return host === name || host.endsWith(`.${name}`);
  });
}

export interface FetchOptions {
  url: string;
  timeoutMs: number;
  /** PEM CA(s) to trust instead of the system store (tests) */
  ca?: string | Buffer;
  env?: Env;
  maxBytes?: number;
}

function makeDispatcher(o: FetchOptions): Dispatcher {
  const tls = o.ca ? { ca: o.ca } : {};
  const timeouts = { headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs };
  const proxy = proxyFor(o.url, o.env);
  const base = proxy
    ? new ProxyAgent({ uri: proxy, requestTls: tls, ...timeouts })
    : new Agent({ connect: tls, ...timeouts });
  return base.compose(interceptors.redirect({ maxRedirections: 5 }));
}

/** GETs the archive bytes. Throws DownloadError (kind http/timeout/network); its message omits the URL (see .url). */
export async function fetchArchive(o: FetchOptions): Promise<Uint8Array> {
  const dispatcher = makeDispatcher(o);
  const signal = AbortSignal.timeout(o.timeoutMs);
  try {
    const res = await request(o.url, { dispatcher, signal, headers: { "user-agent": "ebpf-tracer" } });
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => undefined);
      throw new DownloadError("http", `HTTP ${res.statusCode}`, o.url, res.statusCode);
    }
    return await readCapped(res.body, o.maxBytes ?? MAX_DOWNLOAD_BYTES, o.url);
  } catch (e) {
    if (e instanceof DownloadError) throw e;
    if (signal.aborted) throw new DownloadError("timeout", `no complete answer within ${o.timeoutMs} ms`, o.url);
    const err = e as Error & { code?: string };
    throw new DownloadError("network", `${err.code ? `${err.code} ` : ""}${err.message}`, o.url);
  } finally {
    void dispatcher.destroy().catch(() => undefined);
  }
}

async function readCapped(body: AsyncIterable<Uint8Array> & { destroy(): unknown }, max: number, url: string): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const c of body) {
    total += c.byteLength;
    if (total > max) {
      body.destroy();
      throw new DownloadError("network", `download exceeds ${max} bytes`, url);
    }
    chunks.push(c);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) { out.set(c, off); off += c.byteLength; }
  return out;
}

export interface DownloadOptions extends FetchOptions {
  /** kernel release; picks `<release>.btf` inside the archive */
  release: string;
  /** where the validated BTF is stored (the cache file) */
  destPath: string;
}

export interface Downloaded {
  path: string;
  bytes: number;
  typeCount: number;
}

/** Fetch → extract → validate → atomic write to destPath. Nothing is written unless the BTF is valid. */
export async function downloadBtf(o: DownloadOptions): Promise<Downloaded> {
  const archive = await fetchArchive(o);
  let btf: Uint8Array;
  try {
    btf = (await extractBtfFromTarXz(archive, o.release)).data;
  } catch (e) {
    if (e instanceof ArchiveError) throw new DownloadError("archive", e.message, o.url);
    throw e;
  }
  let typeCount: number;
  try {
    typeCount = parseBtf(btf).typeCount;
  } catch (e) {
    if (e instanceof BtfError) throw new DownloadError("invalid", `archive holds invalid BTF: ${e.message}`, o.url);
    throw e;
  }
  writeAtomic(o.destPath, btf);
  return { path: o.destPath, bytes: btf.byteLength, typeCount };
}

/** Writes via a temporary sibling and rename(2), so readers never see a partial file. */
export function writeAtomic(path: string, data: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    writeFileSync(tmp, data, { mode: 0o644 });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as NodeJS.ErrnoException;
    throw new DownloadError("io", `cannot write ${path}: ${err.code ?? err.message}`, "");
  }
}
