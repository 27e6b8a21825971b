/**
 * Span attributes shared by the HTTP family (HTTP/1.x and HTTP/2), per the OpenTelemetry HTTP
 * semantic conventions: request method (with `_OTHER` for methods outside the conventions' list),
 * URL parts, headers and captured bodies. Attribute names are listed in docs/spans.md.
 */
import type { Attributes } from "../spans/span.ts";
import { decodeContentEncoding } from "./body-decode.ts";

const utf8 = new TextDecoder("utf-8");

/** Methods the semantic conventions name; any other token is `_OTHER` + the original. */
const KNOWN_METHODS = new Set(["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"]);

/** Writes http.request.method (and http.request.method_original for other methods); returns the
 * method to use in the span name ("HTTP" for other methods, as the conventions say). */
export function writeMethod(attrs: Attributes, method: string): string {
  if (KNOWN_METHODS.has(method)) {
    attrs["http.request.method"] = method;
    return method;
  }
  attrs["http.request.method"] = "_OTHER";
  attrs["http.request.method_original"] = method;
  return "HTTP";
}

/** The span name for a request: "<METHOD> <path>" with `_OTHER` methods named "HTTP". */
export function spanName(method: string, path: string): string {
  return `${KNOWN_METHODS.has(method) ? method : "HTTP"} ${path}`;
}

export const REQ_HEADER = "http.request.header.";
export const RES_HEADER = "http.response.header.";
type Prefix = typeof REQ_HEADER | typeof RES_HEADER;

/** Attribute keys by header name as sent: names repeat across spans, so lower-casing and
 * concatenation are done once per distinct name (bounded). */
const keyCache = { [REQ_HEADER]: new Map<string, string>(), [RES_HEADER]: new Map<string, string>() };

function attrKey(prefix: Prefix, name: string): string {
  const cache = keyCache[prefix];
  let k = cache.get(name);
  if (k === undefined) {
    k = prefix + name.toLowerCase();
    if (cache.size >= 4096) cache.clear();
    cache.set(name, k);
  }
  return k;
}

/** One attribute per header name; repeated headers are joined with ",". */
export function writeHeaders(attrs: Attributes, prefix: Prefix, headers: readonly (readonly [string, string])[]): void {
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    const k = attrKey(prefix, h[0]);
    const prev = attrs[k];
    attrs[k] = prev === undefined ? h[1] : `${prev},${h[1]}`;
  }
}

/** The same for a flat [name, value, name, value, …] list (HTTP/2's decoded header blocks). */
export function writeHeaderList(attrs: Attributes, prefix: Prefix, list: readonly string[] | undefined): void {
  if (list === undefined) return;
  for (let i = 0; i < list.length; i += 2) {
    const k = attrKey(prefix, list[i]!);
    const prev = attrs[k];
    attrs[k] = prev === undefined ? list[i + 1]! : `${prev},${list[i + 1]!}`;
  }
}

/**
 * A captured body and its real size (as transferred: compressed bodies count compressed bytes).
 * `sizeExact` false: the size is an estimate (framing the capture could not see), flagged with
 * `<prefix>.body.size_estimated`. With a Content-Encoding the kept text is the DECODED body
 * (gzip, deflate, br, zstd; at most `maxDecoded` bytes of output — a decompression bomb stops
 * there and is flagged `<prefix>.body.decompression_limited`); a body that cannot be decoded is
 * not kept as text (`<prefix>.body.decode_error` says why), never shown as binary garbage.
 */
export function writeBody(
  attrs: Attributes, prefix: "http.request" | "http.response", body: Uint8Array, size: number, truncated: boolean,
  sizeExact = true, contentEncoding?: string, maxDecoded = 131072,
): void {
  if (body.length > 0 && contentEncoding !== undefined) {
    const d = decodeContentEncoding(body, contentEncoding, maxDecoded, !truncated);
    if (d.status === "decoded" || d.status === "limit" || d.status === "incomplete") {
      body = d.body;
      if (d.status === "limit") attrs[`${prefix}.body.decompression_limited`] = true;
      if (d.status !== "decoded") truncated = true;
    } else if (d.status !== "identity") {
      attrs[`${prefix}.body.decode_error`] = d.detail ?? d.status;
      body = new Uint8Array(0);
    }
  }
  if (body.length > 0) attrs[`${prefix}.body`] = utf8.decode(body);
  attrs[`${prefix}.body.size`] = size;
  if (!sizeExact) attrs[`${prefix}.body.size_estimated`] = true;
  if (truncated && body.length > 0) attrs[`${prefix}.body.truncated`] = true;
}

/** Splits a request-target into host (absolute-form only), path and query. */
export function splitTarget(target: string): { host?: string; path: string; query: string } {
  let rest = target;
  let host: string | undefined;
  // origin-form ("/…", nearly every request) cannot be absolute-form: no regex run for it
  const abs = target.charCodeAt(0) === 47 ? null : /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
  if (abs) {
    host = abs[1];
    rest = target.slice(abs[0].length) || "/";
  }
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  return q < 0 ? { host, path: rest, query: "" } : { host, path: rest.slice(0, q), query: rest.slice(q + 1) };
}

/** The first value of a header (case-insensitive name given in lower case). */
export function headerValue(headers: readonly (readonly [string, string])[], lowerName: string): string | undefined {
  for (let i = 0; i < headers.length; i++) {
    const n = headers[i]![0];
    if (n.length === lowerName.length && n.toLowerCase() === lowerName) return headers[i]![1];
  }
  return undefined;
}
