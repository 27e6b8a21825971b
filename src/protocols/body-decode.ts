/**
 * Content-Encoding decoding of captured HTTP bodies (gzip, x-gzip, deflate, br, zstd, identity
 * and lists of them), bounded so that a decompression bomb costs at most `maxOutputBytes` of
 * output. Pure: bytes in, bytes and a status out; never throws on content. Called from the HTTP/1
 * and HTTP/2 body paths before the content-type policy and redaction, so those see plain text.
 *
 * Statuses:
 *   identity    no coding (or only "identity"): `body` is the input, untouched
 *   decoded     fully decoded
 *   limit       the output reached `maxOutputBytes` (a bomb, or just large): `body` holds the
 *               first bytes that could be decoded within the limit (gzip/deflate: close to the
 *               limit; br/zstd cannot stop midway, so it is empty for them)
 *   incomplete  the input was cut (capture cap, lost bytes): `body` holds what its complete part
 *               decodes to (gzip/deflate; br/zstd give nothing from a cut stream)
 *   error       not valid in the declared coding: `body` is empty, `detail` says why
 *   unsupported a coding this module does not know (compress, exi, …): `body` is empty
 */
import * as zlib from "node:zlib";

export type BodyDecodeStatus = "identity" | "decoded" | "limit" | "incomplete" | "error" | "unsupported";

export interface DecodedBody {
  body: Uint8Array;
  status: BodyDecodeStatus;
  /** the codings of the header, lower-case, in the order they were applied by the sender */
  encodings: string[];
  detail?: string;
}

type Coding = "gzip" | "deflate" | "br" | "zstd";
const CODINGS: Record<string, Coding | "identity"> = { gzip: "gzip", "x-gzip": "gzip", deflate: "deflate", br: "br", zstd: "zstd", identity: "identity" };
const MAX_LAYERS = 3;
/** attempts of the prefix search after a limit hit; each one is itself bounded by the limit */
const MAX_PREFIX_TRIES = 12;
const EMPTY: Uint8Array = new Uint8Array(0);

type Attempt = { ok: true; out: Uint8Array } | { ok: false; tooLarge: boolean; message: string };

function attempt(coding: Coding, input: Uint8Array, max: number, raw = false): Attempt {
  // maxOutputLength makes zlib stop as soon as the output would pass the limit (the cost of a
  // bomb is bounded by the limit, not by its expanded size); sync flush accepts a cut stream.
  const opts = { maxOutputLength: Math.max(1, max), finishFlush: zlib.constants.Z_SYNC_FLUSH };
  try {
    let out: Buffer;
    switch (coding) {
      case "gzip": out = zlib.gunzipSync(input, opts); break;
      case "deflate": out = raw ? zlib.inflateRawSync(input, opts) : zlib.inflateSync(input, opts); break;
      case "br": out = zlib.brotliDecompressSync(input, { maxOutputLength: opts.maxOutputLength, finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH }); break;
      case "zstd": out = zlib.zstdDecompressSync(input, { maxOutputLength: opts.maxOutputLength }); break;
    }
    if (out.length > max) return { ok: false, tooLarge: true, message: "output limit" };
    return { ok: true, out: new Uint8Array(out.buffer, out.byteOffset, out.byteLength) };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ERR_BUFFER_TOO_LARGE" || err instanceof RangeError) return { ok: false, tooLarge: true, message: "output limit" };
    return { ok: false, tooLarge: false, message: `${err.code ?? "error"}: ${err.message}` };
  }
}

/** "deflate" is meant to be zlib-wrapped (RFC 9110) but servers send raw deflate too. */
function tryCoding(coding: Coding, input: Uint8Array, max: number): Attempt & { raw?: boolean } {
  const a = attempt(coding, input, max);
  if (a.ok || a.tooLarge || coding !== "deflate") return a;
  const r = attempt(coding, input, max, true);
  return r.ok || r.tooLarge ? { ...r, raw: true } : a;
}

/** After a limit hit: the longest input prefix whose output fits, by bisection (bounded tries). */
function prefixWithin(coding: Coding, input: Uint8Array, max: number, raw: boolean): Uint8Array {
  let lo = 0;
  let hi = input.length;
  let best = EMPTY;
  for (let i = 0; i < MAX_PREFIX_TRIES && hi - lo > 1; i++) {
    const mid = (lo + hi) >>> 1;
    const a = attempt(coding, input.subarray(0, mid), max, raw);
    if (a.ok) {
      lo = mid;
      if (a.out.length > best.length) best = a.out;
    } else {
      hi = mid;
    }
  }
  return best;
}

/** Parses "gzip, br" into codings in the order applied; undefined when one is unknown. */
export function parseContentEncoding(header: string | undefined): { codings: (Coding | "identity")[]; names: string[] } | { unknown: string; names: string[] } {
  const names = (header ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  const codings: (Coding | "identity")[] = [];
  for (const n of names) {
    const c = CODINGS[n];
    if (!c) return { unknown: n, names };
    codings.push(c);
  }
  return { codings, names };
}

/**
 * Decodes `body` per the Content-Encoding header value. `maxOutputBytes` bounds every layer's
 * output (use data_capture.body_max_size_bytes); `inputComplete` is false when the captured body
 * is shorter than the real one (the stream is then decoded as far as it goes).
 */
const NO_CODINGS: string[] = [];

export function decodeContentEncoding(body: Uint8Array, contentEncoding: string | undefined, maxOutputBytes: number, inputComplete = true): DecodedBody {
  // the common case, on the hot path: no header, nothing to allocate
  if (contentEncoding === undefined || contentEncoding === "" || body.length === 0) return { body, status: "identity", encodings: NO_CODINGS };
  const parsed = parseContentEncoding(contentEncoding);
  const encodings = parsed.names;
  if ("unknown" in parsed) return { body: EMPTY, status: "unsupported", encodings, detail: `unknown content coding "${parsed.unknown}"` };
  const layers = parsed.codings.filter((c): c is Coding => c !== "identity");
  if (layers.length === 0 || body.length === 0) return { body, status: "identity", encodings };
  if (layers.length > MAX_LAYERS) return { body: EMPTY, status: "unsupported", encodings, detail: `${layers.length} content codings (at most ${MAX_LAYERS})` };
  let data = body;
  let complete = inputComplete;
  let limited = false;
  for (let i = layers.length - 1; i >= 0; i--) {
    const coding = layers[i]!;
    const a = tryCoding(coding, data, maxOutputBytes);
    if (a.ok) {
      data = a.out;
    } else if (a.tooLarge) {
      data = prefixWithin(coding, data, maxOutputBytes, a.raw ?? false);
      limited = true;
      complete = false; // the next layer sees a cut stream
    } else {
      return { body: EMPTY, status: "error", encodings, detail: `${coding}: ${a.message}` };
    }
  }
  return { body: data, status: limited ? "limit" : complete ? "decoded" : "incomplete", encodings };
}
