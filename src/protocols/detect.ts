/**
 * Protocol detection on a connection's first application bytes. Called at the start of a
 * syscall's bytes (a message or frame boundary is only plausible there) until it decides.
 *
 * - "http2": the client connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), or the server's
 *   (a SETTINGS frame on stream 0), which a server may send before the client's arrives.
 * - "http1": a request line (token SP target SP HTTP/x.y) from the client, or a status line
 *   ("HTTP/x.y NNN") from the server.
 * - "tls": a TLS record header (handshake, alert or application data; version 3.x).
 * - "http2" also, for a connection first seen mid-stream, on a chain of valid HTTP/2 frame headers.
 * - "unknown": none of these (a database, Redis, a binary protocol).
 * - "more": the bytes so far are a prefix of a possible match; wait for more.
 */
import type { Sender } from "./session.ts";
import { detectHttp2Frames, isHttp2Preface, prefaceMatch } from "./http2/frames.ts";
import { TCHAR } from "./http1/parser.ts";

export type Detected = "http1" | "http2" | "tls" | "unknown" | "more";

/** The bytes begin with the whole client connection preface. HPACK tables and frame sync start
 * there, so a connection first seen mid-stream (its accept or connect not observed, e.g. a blocking
 * accept entered before capture started) is in fact seen from its HTTP/2 start. */
export function startsWithClientPreface(bytes: Uint8Array): boolean {
  return isHttp2Preface(bytes);
}

/** Longest method token considered (real ones are ≤ 16; odd ones are what security wants). */
const METHOD_MAX = 32;
/** How far into the first bytes the request line's " HTTP/" must be found. */
const REQUEST_LINE_MAX = 8192;

const HTTP_SLASH = [72, 84, 84, 80, 47]; // "HTTP/"

function prefixOf(bytes: Uint8Array, of: ArrayLike<number>, at = 0): "yes" | "no" | "short" {
  const n = Math.min(bytes.length - at, of.length);
  for (let i = 0; i < n; i++) if (bytes[at + i] !== of[i]) return "no";
  return n < of.length ? "short" : "yes";
}

function tls(bytes: Uint8Array): Detected | undefined {
  const t = bytes[0];
  if (t !== 0x16 && t !== 0x17 && t !== 0x15) return undefined;
  if (bytes.length < 3) return "more";
  return bytes[1] === 3 && bytes[2]! <= 4 ? "tls" : undefined;
}

/** The server's HTTP/2 preface: a SETTINGS frame (type 4) on stream 0, no ACK flag, a length
 * that is a multiple of 6. undefined when the bytes cannot be one. */
function serverPreface(bytes: Uint8Array): Detected | undefined {
  if (bytes[0] !== 0) return undefined;
  if (bytes.length < 9) {
    // 9-byte frame header not complete: only plausible while what is there fits
    return bytes.length < 4 || bytes[3] === 4 ? "more" : undefined;
  }
  const len = (bytes[0]! << 16) | (bytes[1]! << 8) | bytes[2]!;
  const stream = ((bytes[5]! & 0x7f) << 24) | (bytes[6]! << 16) | (bytes[7]! << 8) | bytes[8]!;
  return bytes[3] === 4 && (bytes[4]! & 1) === 0 && stream === 0 && len % 6 === 0 && len <= 16384 ? "http2" : undefined;
}

/** "HTTP/d.d SP ddd" */
function statusLine(bytes: Uint8Array): Detected {
  const p = prefixOf(bytes, HTTP_SLASH);
  if (p !== "yes") return p === "short" ? "more" : "unknown";
  const shape = [-1, 46, -1, 32, -2, -2, -2]; // digit . digit SP 3 digits
  for (let k = 0; k < shape.length; k++) {
    const c = bytes[5 + k];
    if (c === undefined) return "more";
    const want = shape[k]!;
    const digit = c >= 48 && c <= 57;
    if (want < 0 ? !digit : c !== want) return "unknown";
  }
  return "http1";
}

/** "token SP target SP HTTP/" within the first line. */
function requestLine(bytes: Uint8Array): Detected {
  let i = 0;
  while (i < bytes.length && i <= METHOD_MAX && TCHAR[bytes[i]!] === 1) i++;
  if (i === bytes.length) return i <= METHOD_MAX ? "more" : "unknown";
  if (i === 0 || i > METHOD_MAX || bytes[i] !== 32) return "unknown";
  const lineEnd = Math.min(bytes.length, REQUEST_LINE_MAX);
  let sp = -1;
  for (let k = i + 1; k < lineEnd; k++) {
    const c = bytes[k]!;
    if (c === 32) sp = k;
    else if (c === 13 || c === 10) {
      // HTTP/0.9-style "GET /\r\n" has no version; accept only a plausible target then.
      if (sp < 0) return bytes[i + 1] === 47 ? "http1" : "unknown";
      break;
    } else if (c < 32 || c === 127) return "unknown";
  }
  if (sp < 0) return lineEnd < REQUEST_LINE_MAX ? "more" : "unknown";
  const p = prefixOf(bytes, HTTP_SLASH, sp + 1);
  return p === "yes" ? "http1" : p === "short" ? "more" : "unknown";
}

/**
 * Decides what the first bytes from `from` are. `from` is undefined when the connection's role
 * is not known (then both request and status lines are tried).
 */
export function detect(bytes: Uint8Array, from: Sender | undefined, midstream?: { callEnd: boolean }): Detected {
  if (bytes.length === 0) return "more";
  if (midstream) {
    // A connection first seen mid-stream may be HTTP/2 past its preface: a chain of valid
    // frame headers from a syscall start (frames.ts) decides it; else the usual starts apply.
    const h2 = detectHttp2Frames(bytes, midstream.callEnd);
    if (h2 !== "unknown") return h2;
  }
  const t = tls(bytes);
  if (t) return t;
  if (from !== "server") {
    const p = prefaceMatch(bytes);
    if (p === 2) return "http2";
    if (p === 1) return "more";
  }
  if (from === "server") {
    // An HTTP/2 server may speak first: its connection preface is a SETTINGS frame.
    const s = serverPreface(bytes);
    return s ?? statusLine(bytes);
  }
  const r = requestLine(bytes);
  if (r !== "unknown" || from === "client") return r;
  return statusLine(bytes);
}
