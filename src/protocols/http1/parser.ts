/**
 * Incremental HTTP/1.x message parser for passively captured byte streams (one parser per
 * direction of a connection). Written for this project; llhttp's strict mode is the reference for
 * what is valid, but the structure is our own:
 *
 * - The head (start line + header fields, and the trailer section) is run through a byte state
 *   machine with tight per-state scanning loops. Every token is decoded as soon as it ends, so a
 *   head split across pushes only needs its unfinished bytes copied (into `headBuf`).
 * - Bodies are never buffered beyond `bodyMaxSize`: Content-Length and chunk data are consumed in
 *   bulk, chunk framing runs through a small second state machine.
 *
 * Syntax decisions (strict, as llhttp without lenient flags):
 * - Request methods: only the known HTTP method tokens (llhttp's list). RTSP/ICE are rejected.
 *   `PRI` starts an HTTP/2 prior-knowledge preface: one error, then the parser stops.
 * - Versions 0.9, 1.0, 1.1 and 2.0 are accepted as sent; a request line without a version
 *   ("GET /\r\n") is HTTP/0.9 style and gets version "0.9" (its header section is still parsed).
 * - Line endings must be CRLF. obs-fold (a header line starting with SP/HTAB) is rejected as an
 *   error, as is whitespace between a field name and the colon.
 * - Header values: HTAB, SP, VCHAR and obs-text only; leading and trailing OWS are trimmed. Values
 *   and reason phrases holding bytes >= 0x80 are decoded as UTF-8 (invalid sequences become
 *   U+FFFD); everything else is ASCII and decoded byte for byte.
 * - Content-Length: digits only, one header only (even identical duplicates are rejected, like
 *   llhttp), at most 2^53-1; together with Transfer-Encoding it is an error.
 * - Transfer-Encoding: chunked when "chunked" is the final coding. In a request, a coding after
 *   "chunked" or a final coding other than "chunked" is an error; in a response the body is then
 *   delimited by the connection close.
 * - After a message that does not keep the connection alive, any byte other than CR/LF is an error
 *   ("data after Connection: close"); the parser then resynchronises on those bytes.
 *
 * Error handling: malformed input is reported through `onError` once per malformed message, then
 * the parser discards bytes until a plausible message start at a line start (requests: a known
 * method followed by a space; responses: "HTTP/"), checked with `indexOf(LF)`. While discarding,
 * candidates whose start line turns out invalid are dropped silently, so non-HTTP traffic costs one
 * error, not one per chunk. Gaps (bytes not captured) are described on `gap`.
 */

export interface HttpMessage {
  kind: "request" | "response";
  method: string;          // requests ("" for responses)
  target: string;          // request-target as sent ("" for responses)
  status: number;          // responses (0 for requests)
  reason: string;          // reason phrase as sent after the single SP following the status code
  version: string;         // "1.0" | "1.1" (as sent; also "0.9" and "2.0")
  headers: [string, string][];   // original-case names, in order, values trimmed of OWS
  trailers: [string, string][];
  body: Uint8Array;        // captured part of the decoded body, at most bodyMaxSize, empty when keepBody said no
  bodySize: number;        // real decoded body size, counting uncaptured (gap) bytes too
  bodyTruncated: boolean;  // body.length < bodySize
  /** Requests only: why the message is malformed, when it was handed to onMalformed. */
  malformed?: string;
  /** false when bodySize counts bytes of a gap over chunk framing: the decoded size is then
   * not computable and bodySize is an upper bound (the framing of the uncaptured chunks). */
  bodySizeExact: boolean;
  partial: boolean;        // a gap of LOST bytes fell inside this message (or it was cut by close)
  /**
   * Responses: 101, or 2xx to CONNECT, was accepted; the parser stopped after this message.
   * Requests: the request asks for a protocol switch (Upgrade + Connection: upgrade) or is a
   * CONNECT; the parser pauses after it until `resume()` (switch refused) or `stop()`.
   */
  upgrade: boolean;
  firstByteNs: bigint;     // timestamp of the chunk holding the first byte of the message
  lastByteNs: bigint;      // timestamp of the chunk holding the last byte (or the gap that ended it)
}

export interface ParserOptions {
  bodyMaxSize: number;                                   // default 131072 in the agent
  keepBody: (contentType: string | undefined) => boolean;
  onMessage: (m: HttpMessage) => void;
  onError: (reason: string) => void;                     // one call per malformed message; parser then resynchronises
  /** requests only: a malformed request that got as far as a method and target (flagged) */
  onMalformed?: (m: HttpMessage) => void;
  /** response parsers only: method of the request this response answers (HEAD/CONNECT change body rules). */
  requestMethod?: () => string | undefined;
  /**
   * Called when a message head is complete, before its body. The object is the one later passed
   * to `onMessage`; body fields, `partial` and `lastByteNs` are filled in only then.
   */
  onHeaders?: (m: HttpMessage) => void;
}

/** Start line + header section (and, separately, a trailer section) may not exceed this. */
export const HEAD_MAX_SIZE = 64 * 1024;
/** Bytes held while a request parser waits for the verdict on an upgrade; beyond this it stops. */
const HELD_MAX_SIZE = 64 * 1024;
/** Longest method token accepted. Known methods are at most 11 bytes (UNSUBSCRIBE); any RFC 9110
 * token is a valid method, and odd ones are what an API security product must see. */
const METHOD_MAX_LEN = 32;

const CR = 13, LF = 10, SP = 32, HT = 9, COLON = 58, SEMI = 59, EQ = 61, DQUOTE = 34, BSLASH = 92;

// Parser modes (what the next byte means).
const M_IDLE = 0;         // between messages: CR/LF skipped, anything else starts a head
const M_HEAD = 1;         // inside a start line + header section, or a trailer section
const M_BODY_LENGTH = 2;  // Content-Length body
const M_BODY_CHUNKED = 3; // chunk framing / data
const M_BODY_EOF = 4;     // body delimited by connection close
const M_CLOSED = 5;       // after a message that does not keep the connection alive
const M_DISCARD = 6;      // resynchronising: looking for a message start at a line start
const M_PAUSED = 7;       // request asked for an upgrade: holding bytes until resume()/stop()
const M_STOPPED = 8;      // upgraded, HTTP/2, or ended: everything is ignored

// Head states.
const H_METHOD = 0, H_URL_START = 1, H_URL = 2, H_PROTO_START = 3, H_PROTO = 4, H_MAJOR = 5,
  H_DOT = 6, H_MINOR = 7, H_REQ_CR = 8, H_RES_SP = 9, H_STATUS = 10, H_STATUS_END = 11,
  H_REASON = 12, H_LINE_LF = 13, H_FIRST_FIELD = 14, H_FIELD_START = 15, H_NAME = 16,
  H_OWS = 17, H_VALUE = 18, H_VALUE_LF = 19, H_END_LF = 20;

// Chunk framing states.
const C_SIZE_FIRST = 0, C_SIZE = 1, C_EXT_START = 2, C_EXT_NAME = 3, C_EXT_VALUE_START = 4,
  C_EXT_VALUE = 5, C_EXT_QUOTED = 6, C_EXT_QPAIR = 7, C_EXT_QEND = 8, C_SIZE_LF = 9,
  C_DATA = 10, C_DATA_CR = 11, C_DATA_LF = 12;

/** The HTTP method tokens llhttp accepts with an HTTP/x.y version (RTSP-only ones excluded). */
const HTTP_METHODS = new Set([
  "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL",
  "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL",
  "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE",
  "PATCH", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "PRI", "QUERY",
]);

const PROTO = [72, 84, 84, 80, 47]; // "HTTP/"
const VERSIONS: Record<number, string> = { 9: "0.9", 10: "1.0", 11: "1.1", 20: "2.0" };

function charTable(pred: (c: number) => number): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) t[c] = pred(c);
  return t;
}
const isAlnum = (c: number): boolean =>
  (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
/** RFC 9110 tchar. */
export const TCHAR = charTable((c) => (isAlnum(c) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c)) ? 1 : 0));
/** Method tokens are upper-case letters, '-' and '_' (M-SEARCH, GET_PARAMETER). */
const METHOD_CHAR = charTable((c) => ((c >= 65 && c <= 90) || c === 45 || c === 95 ? 1 : 0));
/** Strict request-target bytes: visible ASCII. */
const URL_CHAR = charTable((c) => (c > 32 && c < 127 ? 1 : 0));
/** Field value bytes: 1 = HTAB/SP/VCHAR, 2 = obs-text (decoded as UTF-8), 0 = invalid. */
const VALUE_CHAR = charTable((c) => (c === HT || (c >= 32 && c < 127) ? 1 : c >= 128 ? 2 : 0));
/** Chunk extension quoted-string text (RFC 9110 qdtext). */
const QDTEXT = charTable((c) =>
  c === HT || c === SP || c === 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80 ? 1 : 0);
/** Hex digit values, 255 for non-hex. */
const HEX = charTable((c) =>
  c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : 255);

type Slice = (this: Uint8Array, start: number, end: number) => string;
const bufferProto = (globalThis as { Buffer?: { prototype: unknown } }).Buffer?.prototype as
  | { latin1Slice?: Slice; utf8Slice?: Slice } | undefined;
const latin1Slice: Slice = bufferProto?.latin1Slice ?? function (this: Uint8Array, s: number, e: number) {
  let r = "";
  for (let i = s; i < e; i++) r += String.fromCharCode(this[i]);
  return r;
};
const utf8Decoder = new TextDecoder();
const utf8Slice: Slice = bufferProto?.utf8Slice ?? function (this: Uint8Array, s: number, e: number) {
  return utf8Decoder.decode(this.subarray(s, e));
};
/** Decodes header bytes: ASCII/latin1 fast path, UTF-8 when the bytes hold obs-text. */
/**
 * Header names and short ASCII values repeat across messages (Host, Content-Type,
 * "application/json", "keep-alive"): a small direct-mapped cache returns the same string for the
 * same bytes instead of building a new one each time. The slot is chosen by a hash over the
 * bytes; a hit is verified byte for byte, so a collision only costs a miss.
 */
const INTERN_SLOTS = 2048;
const INTERN_MAX = 40;
const internTable: string[] = new Array<string>(INTERN_SLOTS).fill("");

function intern(src: Uint8Array, s: number, e: number): string {
  if (e - s > INTERN_MAX) return latin1Slice.call(src, s, e);
  let h = 0;
  for (let k = s; k < e; k++) h = (Math.imul(h, 31) + src[k]!) | 0;
  return internHashed(src, s, e, h);
}

/** intern() for a token whose hash (h = h * 31 + byte, from 0, as int32) the caller computed
 * while scanning it: head fields are then read once, not twice. */
function internHashed(src: Uint8Array, s: number, e: number, h: number): string {
  const n = e - s;
  if (n > INTERN_MAX || n === 0) return latin1Slice.call(src, s, e);
  h ^= n;
  const slot = (h ^ (h >>> 11)) & (INTERN_SLOTS - 1);
  const c = internTable[slot]!;
  if (c.length === n) {
    let k = 0;
    while (k < n && c.charCodeAt(k) === src[s + k]) k++;
    if (k === n) return c;
  }
  const str = latin1Slice.call(src, s, e);
  internTable[slot] = str;
  return str;
}

function decode(src: Uint8Array, s: number, e: number, utf8: boolean): string {
  return utf8 ? utf8Slice.call(src, s, e) : intern(src, s, e);
}

const EMPTY = new Uint8Array(0);

/**
 * Case-insensitive equality of a field name (tchar only) with a lower-case literal made of
 * letters and '-'. OR-ing 0x20 maps A-Z onto a-z and leaves '-' alone; no other tchar collides.
 */
export function sameLower(name: string, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    if ((name.charCodeAt(k) | 0x20) !== lower.charCodeAt(k)) return false;
  }
  return true;
}

/** A chunk (or gap) received while paused, replayed by resume(). */
interface Held { data: Uint8Array | null; gap: number; lost: boolean; ts: bigint }

export class Http1Parser {
  private readonly isRequest: boolean;
  private readonly opts: ParserOptions;
  private mode = M_IDLE;
  private nowNs = 0n;              // timestamp of the push/gap being processed

  // --- head machine: positions are indices into `src` (the chunk, or headBuf when buffered)
  private hs = H_METHOD;
  private src: Uint8Array = EMPTY;
  private headBuf: Uint8Array = EMPTY; // grown on demand; released after unusually large heads
  private headLen = 0;
  private buffered = false;        // the unfinished head lives in headBuf
  private headStart = 0;           // first byte of the head (or trailer section)
  private tok = 0;                 // start of the token being scanned
  private acc = 0;                 // OR of VALUE_CHAR classes of the value being scanned
  private hash = 0;                // int32 hash (intern) of the name or value token scanned so far
  private protoIdx = 0;
  private major = 0;
  private statusDigits = 0;
  private startLineDone = false;
  private inTrailers = false;
  private fieldName = "";
  private fieldValue = "";

  // --- the message being parsed
  private method = "";
  private oddMethod = false;       // a token outside the known method list
  private target = "";
  private version = "";
  private status = 0;
  private reason = "";
  private headers: [string, string][] = [];
  private trailers: [string, string][] = [];
  private contentLength = -1;
  private te = false;              // a Transfer-Encoding header was present
  private chunked = false;         // ... and its final coding is chunked
  private connClose = false;
  private connKeepAlive = false;
  private connUpgrade = false;
  private upgradeHeader = false;
  private contentType: string | undefined = undefined;
  private firstNs = 0n;
  private lastNs = 0n;
  private msg: HttpMessage | null = null;
  private keepAlive = true;
  private upgrade = false;
  private partial = false;

  // --- body
  private remaining = 0;           // Content-Length left, or chunk data left
  private cs = C_SIZE_FIRST;
  private chunkSize = 0;
  private body: Uint8Array = EMPTY;
  private bodyLen = 0;
  private bodyCap = 0;             // capture limit for this message (0 when not kept)
  private bodyTarget = -1;         // capture size when the body length is known, else -1
  private bodySize = 0;
  private sizeEstimated = false;   // bodySize includes chunk framing inside a gap

  // --- resynchronisation
  private unsynced = false;        // since the last error no message has completed
  private atLineStart = true;      // discard mode: the next byte starts a line

  private held: Held[] = [];
  private heldBytes = 0;
  private h2 = false;
  private rest: ((bytes: Uint8Array, tsNs: bigint) => void) | undefined = undefined;

  constructor(kind: "request" | "response", opts: ParserOptions) {
    this.isRequest = kind === "request";
    this.opts = opts;
    this.hs = this.isRequest ? H_METHOD : H_PROTO;
  }

  /** True once the stream is no longer parsed (accepted upgrade, HTTP/2 preface, stop(), end()). */
  get stopped(): boolean { return this.mode === M_STOPPED; }
  /** True while a request parser waits for the verdict on an upgrade/CONNECT request. */
  get paused(): boolean { return this.mode === M_PAUSED; }
  /** True while discarding bytes in search of the next message start (messages may be lost). */
  get resyncing(): boolean { return this.mode === M_DISCARD; }
  /** True when the stream turned out to be an HTTP/2 prior-knowledge connection. */
  get http2(): boolean { return this.h2; }

  /**
   * Bytes in stream order. The chunk may be reused by the caller after return. Exceptions thrown
   * by callbacks are contained: reported through onError as an internal error, then resync.
   */
  push(chunk: Uint8Array, tsNs: bigint): void {
    try {
      this.run(chunk, 0, chunk.length, tsNs);
    } catch (e) {
      this.internalError(e);
    }
  }

  /**
   * `n` stream bytes were not captured. lost=false: cut on purpose by a capture cap; inside a body
   * it only counts toward bodySize (body becomes truncated, capture stops for that message).
   * lost=true: events were lost; the message gets partial=true.
   * In a head: error for that message (unless it is a resync candidate), then resync. Between
   * messages: silent resync (the bytes after the gap may start anywhere). In chunk framing or
   * beyond the current chunk: the message is emitted at once (bodySize then also counts framing
   * bytes of the gap) and the parser resyncs silently.
   */
  gap(n: number, tsNs: bigint, lost: boolean): void {
    if (!(n > 0)) return;
    try {
      this.nowNs = tsNs;
      this.gapIn(n, lost);
    } catch (e) {
      this.internalError(e);
    }
  }

  /**
   * Connection closed. A close-delimited body completes normally. A message with a complete head
   * but incomplete body (or trailers) is emitted with partial=true. An unfinished head is dropped
   * with one onError call ("connection closed inside message head"), except for silent resync
   * candidates. Afterwards the parser ignores input.
   */
  end(tsNs: bigint): void {
    try {
      this.nowNs = tsNs;
      switch (this.mode) {
        case M_HEAD:
          if (this.inTrailers) this.complete(true);
          else this.fail("connection closed inside message head");
          break;
        case M_BODY_EOF:
          this.complete(false);
          break;
        case M_BODY_LENGTH:
        case M_BODY_CHUNKED:
          this.complete(true);
          break;
      }
    } catch (e) {
      this.internalError(e);
    }
    this.stop();
  }

  /** Upgrade refused: parse the held bytes (and what follows) as HTTP again. */
  resume(): void {
    if (this.mode !== M_PAUSED) return;
    this.mode = M_IDLE;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const h of held) {
      if (h.data) this.push(h.data, h.ts);
      else this.gap(h.gap, h.ts, h.lost);
    }
  }

  /**
   * Accepted upgrade to a protocol that is parsed elsewhere (h2c): bytes held while paused, and
   * the rest of the chunk being parsed, go to `sink` instead of being dropped.
   */
  handOver(sink: (bytes: Uint8Array, tsNs: bigint) => void): void {
    const held = this.held;
    this.stop();
    this.rest = sink;
    for (const h of held) if (h.data) sink(h.data, h.ts);
  }

  /** Stop parsing for good (accepted upgrade); held bytes are dropped. */
  stop(): void {
    this.mode = M_STOPPED;
    this.held = [];
    this.heldBytes = 0;
    this.buffered = false;
    this.headLen = 0;
  }

  // ------------------------------------------------------------------ dispatch

  private run(chunk: Uint8Array, i: number, end: number, tsNs: bigint): void {
    this.nowNs = tsNs;
    while (i < end) {
      switch (this.mode) {
        case M_IDLE: i = this.idle(chunk, i, end); break;
        case M_HEAD: this.lastNs = tsNs; i = this.headBytes(chunk, i, end); break;
        case M_BODY_LENGTH: this.lastNs = tsNs; i = this.bodyLength(chunk, i, end); break;
        case M_BODY_CHUNKED: this.lastNs = tsNs; i = this.chunkedBytes(chunk, i, end); break;
        case M_BODY_EOF: this.lastNs = tsNs; this.capture(chunk, i, end); i = end; break;
        case M_CLOSED: i = this.closed(chunk, i, end); break;
        case M_DISCARD: i = this.discard(chunk, i, end); break;
        case M_PAUSED: this.hold(chunk.slice(i, end), 0, false, tsNs); i = end; break;
        default: // M_STOPPED
          if (this.rest !== undefined && i < end) this.rest(chunk.subarray(i, end), tsNs);
          i = end;
      }
    }
  }

  /** Last line of defence for the never-throw contract (a bug, or a throwing callback). */
  private internalError(e: unknown): void {
    this.resetMessage();
    this.enterResync();
    try {
      this.opts.onError(`internal parser error: ${e instanceof Error ? e.message : String(e)}`);
    } catch {
      // onError itself threw: nothing sensible is left to report to.
    }
  }

  private idle(chunk: Uint8Array, i: number, end: number): number {
    while (i < end && (chunk[i] === CR || chunk[i] === LF)) i++;
    if (i < end) this.beginMessage(i);
    return i;
  }

  /** Only CR/LF may follow a message that closes the connection (llhttp's strict rule). */
  private closed(chunk: Uint8Array, i: number, end: number): number {
    while (i < end && (chunk[i] === CR || chunk[i] === LF)) i++;
    if (i < end) {
      this.unsynced = true;
      this.beginMessage(i);
      this.opts.onError("data after Connection: close");
    }
    return i;
  }

  /** Resync: cheap scan for a line start whose first byte could begin a message. */
  private discard(chunk: Uint8Array, i: number, end: number): number {
    for (;;) {
      if (this.atLineStart && i < end) {
        const c = chunk[i];
        if (this.isRequest ? METHOD_CHAR[c] === 1 : c === PROTO[0]) {
          this.beginMessage(i);
          return i;
        }
        this.atLineStart = false;
      }
      const lf = chunk.indexOf(LF, i);
      if (lf < 0 || lf >= end) return end;
      i = lf + 1;
      this.atLineStart = true;
    }
  }

  private hold(data: Uint8Array | null, gap: number, lost: boolean, ts: bigint): void {
    this.heldBytes += data ? data.length : gap;
    if (this.heldBytes > HELD_MAX_SIZE) { this.stop(); return; } // surely tunnelled traffic
    this.held.push({ data, gap, lost, ts });
  }

  private enterResync(): void {
    this.mode = M_DISCARD;
    this.atLineStart = true;
    this.unsynced = true;
  }

  private beginMessage(i: number): void {
    this.mode = M_HEAD;
    this.hs = this.isRequest ? H_METHOD : H_PROTO;
    this.protoIdx = 0;
    this.buffered = false;
    this.headLen = 0;
    this.headStart = i;
    this.tok = i;
    this.startLineDone = false;
    this.inTrailers = false;
    this.firstNs = this.nowNs;
    this.lastNs = this.nowNs;
  }

  /**
   * Reports a malformed message (unless it is a failed resync candidate) and starts resyncing.
   * State is settled before onError runs so the callback may call back into the parser.
   */
  private fail(reason: string): void {
    const silent = this.unsynced && !this.startLineDone;
    if (!silent && this.isRequest && this.opts.onMalformed) this.reportMalformed(reason);
    this.resetMessage();
    this.enterResync();
    this.atLineStart = false;
    if (!silent) this.opts.onError(reason);
  }

  /**
   * A request that parsed far enough to have a method and a target is still what an API
   * security reader wants to see: it goes to onMalformed as a message flagged with the reason
   * (headers parsed so far, body so far), then the parser resynchronises as usual.
   */
  private reportMalformed(reason: string): void {
    const m = this.msg;
    if (m !== null) {
      m.malformed = reason;
      m.partial = true;
      m.body = this.bodyLen === 0 ? EMPTY : this.body.slice(0, this.bodyLen);
      m.bodySize = this.bodySize;
      m.bodyTruncated = true;
      m.lastByteNs = this.lastNs;
      this.opts.onMalformed!(m);
      return;
    }
    if (this.method === "" || this.target === "") return;
    this.opts.onMalformed!({
      kind: "request", method: this.method, target: this.target, status: 0, reason: "",
      version: this.version, headers: this.headers, trailers: [], body: EMPTY, bodySize: 0,
      bodyTruncated: false, bodySizeExact: true, partial: true, upgrade: false,
      firstByteNs: this.firstNs, lastByteNs: this.lastNs, malformed: reason,
    });
  }

  // ------------------------------------------------------------------ head

  /** Feeds head bytes, buffering only the unfinished part of a head across pushes. */
  private headBytes(chunk: Uint8Array, i: number, end: number): number {
    if (this.buffered && this.headLen === 0) {
      // Nothing of the head is stored yet (a trailer section starting at a chunk boundary).
      this.buffered = false;
      this.headStart = this.tok = i;
    }
    if (!this.buffered) {
      const j = this.runHead(chunk, i, end);
      if (this.mode === M_HEAD && this.src === chunk) this.saveHead(chunk, end);
      return j;
    }
    while (i < end) {
      const n = Math.min(end - i, 4096);
      const base = this.appendHead(chunk, i, n);
      const j = this.runHead(this.headBuf, base, base + n);
      if (this.mode !== M_HEAD || !this.buffered) return Math.max(i, i + (j - base));
      i += n;
    }
    return end;
  }

  /** Copies the unfinished head out of a chunk the caller may reuse; rebases token marks. */
  private saveHead(chunk: Uint8Array, end: number): void {
    const start = this.headStart;
    this.headLen = 0;
    this.appendHead(chunk, start, end - start);
    this.tok -= start;
    this.headStart = 0;
    this.buffered = true;
    this.src = this.headBuf;
  }

  private appendHead(chunk: Uint8Array, i: number, n: number): number {
    const need = this.headLen + n;
    if (need > this.headBuf.length) {
      const grown = new Uint8Array(Math.max(need, 512, this.headBuf.length * 2));
      grown.set(this.headBuf.subarray(0, this.headLen));
      this.headBuf = grown;
    }
    this.headBuf.set(chunk.subarray(i, i + n), this.headLen);
    const base = this.headLen;
    this.headLen = need;
    return base;
  }

  /**
   * The head state machine. Runs over src[i, end) and returns the index after the last byte it
   * consumed; leaves M_HEAD when the head completes or fails. Errors are detected as soon as the
   * offending byte is seen, so truncated inputs still report what llhttp reports.
   */
  private runHead(src: Uint8Array, i: number, end: number): number {
    this.src = src;
    const stop = Math.min(end, this.headStart + HEAD_MAX_SIZE);
    let hs = this.hs;
    let c = 0;
    while (i < stop) {
      switch (hs) {
        case H_METHOD: {
          const s = this.tok;
          while (i < stop && TCHAR[src[i]] === 1) i++;
          if (i - s > METHOD_MAX_LEN) { this.fail("invalid method"); return i; }
          if (i === stop) break;
          if (src[i] !== SP || i === s) { this.fail("invalid method"); return i; }
          const m = intern(src, s, i);
          if (m === "PRI") { this.http2Preface(); return end; }
          this.method = m;
          this.oddMethod = !HTTP_METHODS.has(m);
          i++;
          hs = H_URL_START;
          break;
        }
        case H_URL_START: {
          while (i < stop && src[i] === SP) i++;
          if (i === stop) break;
          c = src[i];
          const ok = this.method === "CONNECT" ? URL_CHAR[c] === 1 : c === 47 || c === 42 || (c | 0x20) >= 97 && (c | 0x20) <= 122;
          if (!ok) { this.fail("invalid request-target"); return i; }
          this.tok = i;
          hs = H_URL;
          break;
        }
        case H_URL: {
          while (i < stop && URL_CHAR[src[i]] === 1) i++;
          if (i === stop) break;
          c = src[i];
          if (c === SP) {
            this.target = latin1Slice.call(src, this.tok, i);
            hs = H_PROTO_START;
          } else if (c === CR) {
            // HTTP/0.9 style (no version) only for known methods: "word word" lines are not requests.
            if (this.oddMethod) { this.fail(`unknown method ${this.method} without an HTTP version`); return i; }
            this.target = latin1Slice.call(src, this.tok, i);
            this.version = "0.9";
            hs = H_LINE_LF;
          } else { this.fail("invalid character in request-target"); return i; }
          i++;
          break;
        }
        case H_PROTO_START:
          while (i < stop && src[i] === SP) i++;
          if (i === stop) break;
          this.protoIdx = 0;
          hs = H_PROTO;
          break;
        case H_PROTO: {
          let k = this.protoIdx;
          while (k < 5 && i < stop && src[i] === PROTO[k]) { i++; k++; }
          this.protoIdx = k;
          if (k === 5) hs = H_MAJOR;
          else if (i < stop) { this.fail("expected HTTP/"); return i; }
          break;
        }
        case H_MAJOR:
          c = src[i];
          if (c < 48 || c > 57) { this.fail("invalid HTTP version"); return i; }
          this.major = c - 48;
          i++;
          hs = H_DOT;
          break;
        case H_DOT:
          if (src[i] !== 46) { this.fail("invalid HTTP version"); return i; }
          i++;
          hs = H_MINOR;
          break;
        case H_MINOR: {
          c = src[i];
          const v = c >= 48 && c <= 57 ? VERSIONS[this.major * 10 + c - 48] : undefined;
          if (v === undefined) { this.fail("invalid HTTP version"); return i; }
          this.version = v;
          i++;
          hs = this.isRequest ? H_REQ_CR : H_RES_SP;
          break;
        }
        case H_REQ_CR:
          if (src[i] !== CR) { this.fail("expected CRLF after HTTP version"); return i; }
          i++;
          hs = H_LINE_LF;
          break;
        case H_RES_SP:
          if (src[i] !== SP) { this.fail("expected space after HTTP version"); return i; }
          i++;
          this.status = 0;
          this.statusDigits = 0;
          hs = H_STATUS;
          break;
        case H_STATUS:
          while (this.statusDigits < 3 && i < stop) {
            c = src[i];
            if (c < 48 || c > 57) { this.fail("invalid status code"); return i; }
            this.status = this.status * 10 + c - 48;
            this.statusDigits++;
            i++;
          }
          if (this.statusDigits === 3) hs = H_STATUS_END;
          break;
        case H_STATUS_END:
          c = src[i];
          if (c === SP) {
            this.tok = i + 1;
            this.acc = 0;
            hs = H_REASON;
          } else if (c === CR) {
            this.reason = "";
            hs = H_LINE_LF;
          } else { this.fail("invalid status code"); return i; }
          i++;
          break;
        case H_REASON: {
          let acc = this.acc;
          while (i < stop && (c = src[i]) !== CR && c !== LF) { acc |= c; i++; }
          this.acc = acc;
          if (i === stop) break;
          if (c === LF) { this.fail("expected CR before LF after status line"); return i; }
          this.reason = decode(src, this.tok, i, acc >= 0x80);
          i++;
          hs = H_LINE_LF;
          break;
        }
        case H_LINE_LF:
          if (src[i] !== LF) { this.fail("expected LF after CR"); return i; }
          i++;
          this.startLineDone = true;
          hs = H_FIRST_FIELD;
          break;
        case H_FIRST_FIELD:
          c = src[i];
          if (c === SP || c === HT) { this.fail("unexpected whitespace after start line"); return i; }
          hs = H_FIELD_START;
          break;
        case H_FIELD_START:
          c = src[i];
          if (TCHAR[c] === 1) {
            this.tok = i;
            this.hash = 0;
            hs = H_NAME;
          } else if (c === CR) {
            i++;
            hs = H_END_LF;
          } else if (c === SP || c === HT) {
            this.fail("obs-fold (line folding) is not supported"); return i;
          } else { this.fail("invalid header field name"); return i; }
          break;
        case H_NAME: {
          let h = this.hash;
          while (i < stop && TCHAR[c = src[i]!] === 1) { h = (Math.imul(h, 31) + c) | 0; i++; }
          this.hash = h;
          if (i === stop) break;
          if (c !== COLON) { this.fail("invalid character in header field name"); return i; }
          this.fieldName = internHashed(src, this.tok, i, h);
          i++;
          hs = H_OWS;
          break;
        }
        case H_OWS:
          while (i < stop && ((c = src[i]) === SP || c === HT)) i++;
          if (i === stop) break;
          if (c === CR) {
            this.fieldValue = "";
            i++;
            hs = H_VALUE_LF;
          } else if (VALUE_CHAR[c] !== 0) {
            this.tok = i;
            this.acc = 0;
            this.hash = 0;
            hs = H_VALUE;
          } else { this.fail("invalid character in header field value"); return i; }
          break;
        case H_VALUE: {
          let acc = this.acc;
          let h = this.hash;
          let t = 0;
          while (i < stop && (t = VALUE_CHAR[c = src[i]!]) !== 0) { acc |= t; h = (Math.imul(h, 31) + c) | 0; i++; }
          this.acc = acc;
          this.hash = h;
          if (i === stop) break;
          if (src[i] !== CR) { this.fail("invalid character in header field value"); return i; }
          let e = i;
          while (e > this.tok && ((c = src[e - 1]) === SP || c === HT)) e--;
          // the scan's hash covers [tok, i): trailing whitespace, when there is any, is hashed again without it
          this.fieldValue = (acc & 2) !== 0 ? utf8Slice.call(src, this.tok, e) : e === i ? internHashed(src, this.tok, e, h) : intern(src, this.tok, e);
          i++;
          hs = H_VALUE_LF;
          break;
        }
        case H_VALUE_LF: {
          if (src[i] !== LF) { this.fail("expected LF after header field value"); return i; }
          i++;
          const err = this.field(this.fieldName, this.fieldValue);
          if (err !== null) { this.fail(err); return i; }
          hs = H_FIELD_START;
          break;
        }
        case H_END_LF:
          if (src[i] !== LF) { this.fail("expected LF after header section"); return i; }
          i++;
          this.hs = hs;
          this.headDone();
          return i;
      }
    }
    this.hs = hs;
    if (stop < end) this.fail("message head larger than 64 KiB");
    return i;
  }

  private http2Preface(): void {
    this.h2 = true;
    const silent = this.unsynced;
    this.resetMessage();
    this.stop();
    if (!silent) this.opts.onError("HTTP/2 connection preface (prior knowledge): not HTTP/1.x");
  }

  /** Records one header or trailer field; returns an error reason for invalid framing fields. */
  private field(name: string, value: string): string | null {
    if (this.inTrailers) {
      this.trailers.push([name, value]);
      return null;
    }
    this.headers.push([name, value]);
    switch (name.length) {
      case 14:
        if (sameLower(name, "content-length")) return this.fieldContentLength(value);
        break;
      case 17:
        if (sameLower(name, "transfer-encoding")) return this.fieldTransferEncoding(value);
        break;
      case 10:
        if (sameLower(name, "connection")) this.fieldConnection(value);
        break;
      case 16:
        if (sameLower(name, "proxy-connection")) this.fieldConnection(value);
        break;
      case 7:
        if (value !== "" && sameLower(name, "upgrade")) this.upgradeHeader = true;
        break;
      case 12:
        if (this.contentType === undefined && sameLower(name, "content-type")) this.contentType = value;
        break;
    }
    return null;
  }

  private fieldContentLength(value: string): string | null {
    if (this.te) return "Content-Length together with Transfer-Encoding";
    if (this.contentLength >= 0) return "duplicate Content-Length";
    if (value === "") return "empty Content-Length";
    let n = 0;
    for (let k = 0; k < value.length; k++) {
      const d = value.charCodeAt(k) - 48;
      if (d < 0 || d > 9) return "invalid character in Content-Length";
      n = n * 10 + d;
    }
    if (n > Number.MAX_SAFE_INTEGER) return "Content-Length overflow";
    this.contentLength = n;
    return null;
  }

  /** The final coding decides chunked framing; multiple headers act as one comma list. */
  private fieldTransferEncoding(value: string): string | null {
    if (this.contentLength >= 0) return "Transfer-Encoding together with Content-Length";
    if (value === "") return "empty Transfer-Encoding";
    if (this.isRequest && this.chunked) return "transfer coding after chunked";
    if (value === "chunked") {
      // the one coding nearly every message has: what the loop below decides, without the split
      this.chunked = true;
      this.te = true;
      return null;
    }
    const codings = value.split(",");
    for (let k = 0; k < codings.length; k++) {
      const isChunked = codings[k].trim().toLowerCase() === "chunked";
      if (isChunked && k < codings.length - 1 && this.isRequest) return "transfer coding after chunked";
      this.chunked = isChunked;
    }
    this.te = true;
    return null;
  }

  private fieldConnection(value: string): void {
    // the two values nearly every message has, without the split
    if (value === "keep-alive") { this.connKeepAlive = true; return; }
    if (value === "close") { this.connClose = true; return; }
    for (const token of value.split(",")) {
      switch (token.trim().toLowerCase()) {
        case "close": this.connClose = true; break;
        case "keep-alive": this.connKeepAlive = true; break;
        case "upgrade": this.connUpgrade = true; break;
      }
    }
  }

  // ------------------------------------------------------------------ framing

  /** Connections are many and big heads rare: do not keep a large buffer per parser. */
  private releaseHeadBuf(): void {
    if (this.headBuf.length > 16 * 1024) this.headBuf = EMPTY;
  }

  /** End of the header section (or of the trailer section): decides how the body is delimited. */
  private headDone(): void {
    this.buffered = false;
    this.headLen = 0;
    this.releaseHeadBuf();
    if (this.inTrailers) { this.complete(false); return; }
    const m: HttpMessage = {
      kind: this.isRequest ? "request" : "response",
      method: this.method,
      target: this.target,
      status: this.status,
      reason: this.reason,
      version: this.version,
      headers: this.headers,
      trailers: this.trailers,
      body: EMPTY,
      bodySize: 0,
      bodyTruncated: false,
      bodySizeExact: true,
      partial: false,
      upgrade: false,
      firstByteNs: this.firstNs,
      lastByteNs: this.lastNs,
    };
    this.msg = m;
    this.keepAlive = this.version === "1.1" ? !this.connClose : this.connKeepAlive;
    this.opts.onHeaders?.(m);
    if (this.isRequest) this.requestFraming(m);
    else this.responseFraming(m);
  }

  private requestFraming(m: HttpMessage): void {
    if (this.te && !this.chunked) { this.fail("request Transfer-Encoding does not end with chunked"); return; }
    const connect = this.method === "CONNECT";
    this.upgrade = m.upgrade = connect || (this.upgradeHeader && this.connUpgrade);
    const hasBody = this.chunked || this.contentLength > 0;
    if (connect || !hasBody) this.complete(false);      // a CONNECT body is tunnel data
    else this.startBody();
  }

  /** RFC 9112 section 6.3 order: HEAD/1xx/204/304 bodyless, then chunked, then TE, then length. */
  private responseFraming(m: HttpMessage): void {
    const s = this.status;
    const reqMethod = this.opts.requestMethod?.();
    if (s === 101 || (reqMethod === "CONNECT" && s >= 200 && s < 300)) {
      this.upgrade = m.upgrade = true;
      this.complete(false);
      return;
    }
    if ((s >= 100 && s < 200) || s === 204 || s === 304 || reqMethod === "HEAD") {
      this.complete(false);
      return;
    }
    if (!this.chunked && (this.te || this.contentLength < 0)) {
      this.keepAlive = false;
      this.setupCapture(-1);
      this.mode = M_BODY_EOF;
      return;
    }
    if (this.chunked || this.contentLength > 0) this.startBody();
    else this.complete(false);
  }

  private startBody(): void {
    if (this.chunked) {
      this.setupCapture(-1);
      this.cs = C_SIZE_FIRST;
      this.mode = M_BODY_CHUNKED;
    } else {
      this.setupCapture(this.contentLength);
      this.remaining = this.contentLength;
      this.mode = M_BODY_LENGTH;
    }
  }

  /**
   * knownSize < 0: size unknown, the capture buffer grows by doubling. The buffer is allocated on
   * the first body byte: a body that arrives in one piece is a single slice() of the chunk.
   * (No subarray() views of fresh arrays here: in JSC they force a costly buffer materialisation.)
   */
  private setupCapture(knownSize: number): void {
    const max = this.opts.bodyMaxSize;
    this.bodyCap = max > 0 && this.opts.keepBody(this.contentType) ? max : 0;
    this.bodyTarget = knownSize >= 0 ? Math.min(knownSize, this.bodyCap) : -1;
    this.bodyLen = 0;
    this.bodySize = 0;
    this.body = EMPTY;
  }

  private capture(src: Uint8Array, s: number, e: number): void {
    const n = e - s;
    this.bodySize += n;
    const room = this.bodyCap - this.bodyLen;
    if (room <= 0) return;
    const k = n < room ? n : room;
    const len = this.bodyLen;
    if (len === 0) {
      this.body = src.slice(s, s + k);
      this.bodyLen = k;
      return;
    }
    const need = len + k;
    if (need > this.body.length) {
      const size = this.bodyTarget >= 0 ? this.bodyTarget
        : Math.min(this.bodyCap, Math.max(need, 256, this.body.length * 2));
      const grown = new Uint8Array(size);
      grown.set(this.body);
      this.body = grown;
    }
    this.body.set(src.subarray(s, s + k), len);
    this.bodyLen = need;
  }

  /** Uncaptured body bytes: counted, and capture stops so the body stays a true prefix. */
  private bodyGap(n: number, lost: boolean): void {
    this.bodySize += n;
    this.bodyCap = this.bodyLen;
    if (lost) this.partial = true;
    this.lastNs = this.nowNs;
  }

  private bodyLength(chunk: Uint8Array, i: number, end: number): number {
    const n = Math.min(end - i, this.remaining);
    this.capture(chunk, i, i + n);
    this.remaining -= n;
    if (this.remaining === 0) this.complete(false);
    return i + n;
  }

  /** Chunk framing machine; chunk data is captured in bulk. */
  private chunkedBytes(src: Uint8Array, i: number, end: number): number {
    let cs = this.cs;
    let c = 0;
    while (i < end) {
      switch (cs) {
        case C_SIZE_FIRST:
        case C_SIZE: {
          let size = cs === C_SIZE_FIRST ? 0 : this.chunkSize;
          let h = 0;
          while (i < end && (h = HEX[src[i]]) !== 255) {
            size = size * 16 + h;
            cs = C_SIZE;
            i++;
          }
          this.chunkSize = size;
          if (size > Number.MAX_SAFE_INTEGER) { this.fail("chunk size overflow"); return i; }
          if (i === end) break;
          c = src[i];
          if (cs === C_SIZE_FIRST) { this.fail("invalid character in chunk size"); return i; }
          if (c === CR) cs = C_SIZE_LF;
          else if (c === SEMI) cs = C_EXT_START;
          else { this.fail("invalid character in chunk size"); return i; }
          i++;
          break;
        }
        case C_EXT_START:
          if (TCHAR[src[i]] !== 1) { this.fail("invalid chunk extension"); return i; }
          cs = C_EXT_NAME;
          break;
        case C_EXT_NAME:
        case C_EXT_VALUE:
          while (i < end && TCHAR[src[i]] === 1) i++;
          if (i === end) break;
          c = src[i];
          if (c === SEMI) cs = C_EXT_START;
          else if (c === CR) cs = C_SIZE_LF;
          else if (c === EQ && cs === C_EXT_NAME) cs = C_EXT_VALUE_START;
          else { this.fail("invalid chunk extension"); return i; }
          i++;
          break;
        case C_EXT_VALUE_START:
          if (src[i] === DQUOTE) { cs = C_EXT_QUOTED; i++; } else cs = C_EXT_VALUE;
          break;
        case C_EXT_QUOTED:
          while (i < end && QDTEXT[src[i]] === 1) i++;
          if (i === end) break;
          c = src[i];
          if (c === DQUOTE) cs = C_EXT_QEND;
          else if (c === BSLASH) cs = C_EXT_QPAIR;
          else { this.fail("invalid character in chunk extension quoted value"); return i; }
          i++;
          break;
        case C_EXT_QPAIR:
          c = src[i];
          if (c !== HT && (c < 32 || c === 127)) { this.fail("invalid quoted-pair in chunk extension"); return i; }
          cs = C_EXT_QUOTED;
          i++;
          break;
        case C_EXT_QEND:
          c = src[i];
          if (c === SEMI) cs = C_EXT_START;
          else if (c === CR) cs = C_SIZE_LF;
          else { this.fail("invalid character after chunk extension quoted value"); return i; }
          i++;
          break;
        case C_SIZE_LF:
          if (src[i] !== LF) { this.fail("expected LF after chunk size"); return i; }
          i++;
          if (this.chunkSize === 0) {
            this.cs = C_SIZE_FIRST;
            this.beginTrailers(i);
            return i;
          }
          this.remaining = this.chunkSize;
          cs = C_DATA;
          break;
        case C_DATA: {
          const n = Math.min(end - i, this.remaining);
          this.capture(src, i, i + n);
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) cs = C_DATA_CR;
          break;
        }
        case C_DATA_CR:
          if (src[i] !== CR) { this.fail("expected CRLF after chunk data"); return i; }
          i++;
          cs = C_DATA_LF;
          break;
        case C_DATA_LF:
          if (src[i] !== LF) { this.fail("expected CRLF after chunk data"); return i; }
          i++;
          cs = C_SIZE_FIRST;
          break;
      }
    }
    this.cs = cs;
    return i;
  }

  /**
   * The trailer section reuses the head machine's field states. It may start exactly at the end
   * of a chunk, so it starts as an empty buffered head; headBytes() rebases it onto the next byte.
   */
  private beginTrailers(i: number): void {
    this.mode = M_HEAD;
    this.inTrailers = true;
    this.hs = H_FIELD_START;
    this.buffered = true;
    this.headLen = 0;
    this.headStart = this.tok = i;
  }

  // ------------------------------------------------------------------ gaps and completion

  private gapIn(n: number, lost: boolean): void {
    switch (this.mode) {
      case M_STOPPED:
        return;
      case M_PAUSED:
        this.hold(null, n, lost, this.nowNs);
        return;
      case M_HEAD:
        if (this.inTrailers) { this.bodyGap(n, lost); this.complete(false); this.gapAfterMessage(0, lost); return; }
        this.fail("capture gap inside message head");
        this.atLineStart = true;
        return;
      case M_BODY_LENGTH: {
        const k = Math.min(n, this.remaining);
        this.bodyGap(k, lost);
        this.remaining -= k;
        if (this.remaining === 0) this.complete(false);
        if (n > k) this.gapAfterMessage(n - k, lost);
        return;
      }
      case M_BODY_EOF:
        this.bodyGap(n, lost);
        return;
      case M_BODY_CHUNKED:
        if (this.cs === C_DATA && n <= this.remaining) {
          this.bodyGap(n, lost);
          this.remaining -= n;
          if (this.remaining === 0) this.cs = C_DATA_CR;
          return;
        }
        // Chunk framing is lost: emit what we have, the end of the message is unknowable.
        this.bodyGap(n, lost);
        this.sizeEstimated = true;
        this.complete(false);
        this.gapAfterMessage(0, lost);
        return;
      default: // between messages, or already discarding
        this.enterResync();
    }
  }

  /** The rest of a gap that ended a message: where the next message starts is unknown. */
  private gapAfterMessage(n: number, lost: boolean): void {
    if (this.mode === M_PAUSED) { if (n > 0) this.hold(null, n, lost, this.nowNs); return; }
    if (this.mode !== M_STOPPED) this.enterResync();
  }

  /**
   * Finishes the current message and emits it. The next mode is settled first, so onMessage may
   * call resume()/stop().
   */
  private complete(cut: boolean): void {
    const m = this.msg;
    if (m === null) return;
    const body = this.bodyLen === 0 ? EMPTY
      : this.body.length === this.bodyLen ? this.body : this.body.slice(0, this.bodyLen);
    m.body = body;
    m.bodySize = this.bodySize;
    m.bodyTruncated = body.length < this.bodySize;
    m.bodySizeExact = !this.sizeEstimated;
    m.partial = this.partial || cut;
    m.lastByteNs = this.lastNs;
    m.trailers = this.trailers;
    if (this.upgrade) this.mode = this.isRequest ? M_PAUSED : M_STOPPED;
    else this.mode = this.keepAlive ? M_IDLE : M_CLOSED;
    if (this.mode === M_STOPPED) this.stop();
    this.unsynced = false;
    this.resetMessage();
    this.opts.onMessage(m);
  }

  private resetMessage(): void {
    this.releaseHeadBuf();
    this.msg = null;
    this.method = this.target = this.version = this.reason = "";
    this.oddMethod = false;
    this.status = 0;
    this.headers = [];
    this.trailers = [];
    this.contentLength = -1;
    this.te = this.chunked = this.connClose = this.connKeepAlive = false;
    this.connUpgrade = this.upgradeHeader = this.upgrade = this.partial = false;
    this.contentType = undefined;
    this.keepAlive = true;
    this.inTrailers = false;
    this.startLineDone = false;
    this.buffered = false;
    this.headLen = 0;
    this.body = EMPTY;
    this.bodyLen = this.bodyCap = this.bodySize = 0;
    this.sizeEstimated = false;
    this.bodyTarget = -1;
  }
}
