/**
 * HTTP/2 framing (RFC 9113 section 4 and 6) for one direction of a captured connection.
 *
 * FrameReader is incremental: bytes arrive in chunks of any size; frame headers split across
 * chunks are reassembled in a 9-byte buffer, DATA payloads are passed through without copying
 * (padding stripped), HEADERS / PUSH_PROMISE payloads have padding and priority fields stripped
 * and are joined with their CONTINUATION frames into one header block (copied only when the block
 * spans chunks or frames), other control frames are small and buffered.
 *
 * Bounds: a header block is at most `maxHeaderBlock` bytes (past that it is dropped whole and
 * reported lost); control payloads past their fixed sizes are malformed; a frame longer than the
 * receiver's SETTINGS_MAX_FRAME_SIZE is counted, and still skipped over by its length (DATA is
 * streamed, so no length needs memory).
 *
 * Gaps: inside a DATA payload the reader stays in sync (the data is reported missing); inside a
 * header block frame the block is reported lost and the reader skips to its end; anything
 * crossing a frame header loses sync: the reader then waits for a syscall boundary (`callEnd`)
 * and resumes only where the bytes of one syscall start with a chain of plausible frame headers
 * (at least three, or frames that exactly fill the syscall).
 */

export const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export const FRAME_HEADER_SIZE = 9;

export const enum FrameType {
  DATA = 0, HEADERS = 1, PRIORITY = 2, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5, PING = 6,
  GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9,
}

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

export const ERROR_CODES = [
  "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
  "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
  "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
];
export function errorCodeName(code: number): string {
  return ERROR_CODES[code] ?? `0x${code.toString(16)}`;
}

/** Flags each known frame type defines (others must be unset by a sender to look plausible). */
const DEFINED_FLAGS = [0x09, 0x2d, 0x00, 0x00, 0x01, 0x0c, 0x01, 0x00, 0x00, 0x04];

/**
 * Whether a 9-byte frame header at b[p] looks like one a real sender would write: a known type
 * with only its defined flags, the reserved bit clear, the stream id rule of its type, a fixed
 * length where the type has one, and a length within `maxLen`. Used only where sync is unknown
 * (detection, resynchronisation); a synced reader accepts any type and flags, as RFC 9113 says.
 */
export function plausibleFrameHeader(b: Uint8Array, p: number, maxLen = 16384): boolean {
  const len = (b[p]! << 16) | (b[p + 1]! << 8) | b[p + 2]!;
  const type = b[p + 3]!;
  const flags = b[p + 4]!;
  if (type > 9 || (flags & ~DEFINED_FLAGS[type]!) !== 0 || b[p + 5]! & 0x80 || len > maxLen) return false;
  const sid = ((b[p + 5]! & 0x7f) << 24 | b[p + 6]! << 16 | b[p + 7]! << 8 | b[p + 8]!) >>> 0;
  switch (type) {
    case FrameType.SETTINGS: return sid === 0 && len % 6 === 0 && (!(flags & FLAG_ACK) || len === 0);
    case FrameType.PING: return sid === 0 && len === 8;
    case FrameType.GOAWAY: return sid === 0 && len >= 8;
    case FrameType.WINDOW_UPDATE: return len === 4;
    case FrameType.PRIORITY: return sid !== 0 && len === 5;
    case FrameType.RST_STREAM: return sid !== 0 && len === 4;
    case FrameType.PUSH_PROMISE: return sid !== 0 && len >= 4;
    default: return sid !== 0;
  }
}

/**
 * Counts the plausible frame headers chained from b[start] (each frame's length leads to the
 * next header). `exact` is true when the chain ends exactly at `end`; `bad` when a header inside
 * the bytes is implausible (the count is then the frames before it).
 */
export function frameChain(b: Uint8Array, start = 0, end = b.length, maxLen = 16384): { frames: number; exact: boolean; bad: boolean } {
  let p = start;
  let frames = 0;
  while (p + FRAME_HEADER_SIZE <= end) {
    if (!plausibleFrameHeader(b, p, maxLen)) return { frames, exact: false, bad: true };
    frames++;
    p += FRAME_HEADER_SIZE + ((b[p]! << 16) | (b[p + 1]! << 8) | b[p + 2]!);
  }
  return { frames, exact: p === end, bad: false };
}

/**
 * Detection for a connection first seen mid-stream: `bytes` start at a syscall boundary (`whole`:
 * and are exactly that syscall's bytes). True for at least 3 chained plausible frame headers, or
 * 2 that end exactly with the bytes of a whole syscall.
 */
export function looksLikeHttp2Frames(bytes: Uint8Array, whole = false): boolean {
  const c = frameChain(bytes);
  if (c.bad) return false;
  return c.frames >= 3 || (c.frames >= 2 && whole && c.exact);
}

/**
 * The same test for a detector that holds bytes while undecided: "http2" for a chain of at least
 * 3 plausible frame headers, or 2 ending exactly where a syscall ended (`callEnd`); "unknown" as
 * soon as a header is implausible; "more" while the frames so far are plausible but too few.
 */
export function detectHttp2Frames(bytes: Uint8Array, callEnd: boolean): "http2" | "unknown" | "more" {
  const c = frameChain(bytes);
  if (c.bad) return "unknown";
  if (c.frames >= 3 || (c.frames >= 2 && callEnd && c.exact)) return "http2";
  return "more";
}

/** 2: `bytes` start with the client connection preface; 1: they are a proper prefix of it; 0: no. */
export function prefaceMatch(bytes: Uint8Array): 0 | 1 | 2 {
  const n = Math.min(bytes.length, PREFACE.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== PREFACE[i]) return 0;
  return n === PREFACE.length ? 2 : 1;
}

/** The bytes start with the full client preface. */
export function isHttp2Preface(bytes: Uint8Array): boolean {
  return prefaceMatch(bytes) === 2;
}

/**
 * The `HTTP2-Settings` header of an h2c upgrade request (RFC 7540 3.2.1): base64url without
 * padding of a SETTINGS payload. Undefined when it is not valid base64url or not whole settings.
 */
export function decodeHttp2Settings(value: string): Uint8Array | undefined {
  const v = value.trim().replace(/=+$/, "");
  if (!/^[A-Za-z0-9_-]*$/.test(v) || v.length > 4096 || v.length % 4 === 1) return undefined;
  const bin = atob(v.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - (v.length % 4)) % 4));
  const b = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return b.length % 6 === 0 ? b : undefined;
}

// ------------------------------------------------------------------ incremental reader

/** What a FrameReader reports; `ts` is the timestamp of the chunk that completed the item. */
export interface FrameSink {
  /** Payload bytes of a DATA frame (padding stripped), in pieces; views valid during the call. */
  data(sid: number, b: Uint8Array, start: number, end: number, ts: bigint): void;
  /** A DATA frame ended (`endStream`: it carried END_STREAM). `missing`: bytes of it not seen. */
  dataEnd(sid: number, endStream: boolean, ts: bigint): void;
  /** `n` payload bytes of a DATA frame of `sid` were not captured. */
  dataGap(sid: number, n: number, ts: bigint): void;
  /** A complete header block (HEADERS or PUSH_PROMISE joined with its CONTINUATIONs). */
  headers(sid: number, endStream: boolean, promised: number, b: Uint8Array, start: number, end: number, ts: bigint): void;
  /** A header block of `sid` could not be read (gap, too large, malformed framing). `promised` > 0
   * for a PUSH_PROMISE whose promised id was read. */
  headersLost(sid: number, endStream: boolean, promised: number, reason: string, ts: bigint): void;
  rstStream(sid: number, code: number, ts: bigint): void;
  settings(ack: boolean, b: Uint8Array, start: number, end: number, ts: bigint): void;
  goaway(lastSid: number, code: number, ts: bigint): void;
  /** Malformed framing: `counter` names the stats counter, `reason` the detail. */
  malformed(counter: string, reason: string): void;
  /** Sync was lost (bytes over a frame header are missing); `resynced` when it is found again. */
  syncLost(ts: bigint): void;
  resynced(skipped: number, ts: bigint): void;
}

const enum St { HEADER, PAYLOAD, RESYNC }
/** How a payload is handled. */
const enum Mode { DATA, BLOCK, CONTROL, SKIP }

export interface FrameReaderOptions {
  /** The connection is seen from its start: the first bytes are the client preface (client side). */
  expectPreface: boolean;
  maxHeaderBlock?: number;
  /** Bytes of one syscall held while looking for a frame chain to resynchronise on. */
  maxResyncBytes?: number;
}

export class FrameReader {
  /** SETTINGS_MAX_FRAME_SIZE of the receiver (the other side), for the too-large count. */
  maxFrameSize = 16384;
  private st: St = St.HEADER;
  private readonly hdr = new Uint8Array(FRAME_HEADER_SIZE);
  private hdrLen = 0;
  private prefaceLeft: number;
  // current frame
  private type = 0;
  private flags = 0;
  private sid = 0;
  private left = 0;         // payload bytes still to come
  private mode: Mode = Mode.SKIP;
  private padLeft = -1;     // DATA: -1 pad length byte not read yet (PADDED), else padding bytes at the end
  private dataLeft = 0;     // DATA: data bytes still to come
  // buffered payload (BLOCK / CONTROL)
  private buf = new Uint8Array(1024);
  private bufLen = 0;
  // header block across frames
  private block = new Uint8Array(0);
  private blockLen = 0;
  private blockOpen = false;  // a HEADERS/PUSH_PROMISE without END_HEADERS was seen
  private blockSid = 0;
  private blockEndStream = false;
  private blockPromised = 0;
  private blockLost = "";     // non-empty: the open block is being skipped, for this reason
  // resync
  private atBoundary = true;  // the next byte starts a syscall
  private resync = new Uint8Array(0);
  private resyncLen = 0;
  private resyncCollecting = false;
  private skipped = 0;
  private afterResync = false; // since resync, only CONTINUATIONs so far (their HEADERS came before)
  private readonly maxBlock: number;
  private readonly maxResync: number;

  constructor(private readonly sink: FrameSink, opts: FrameReaderOptions) {
    this.prefaceLeft = opts.expectPreface ? PREFACE.length : 0;
    this.maxBlock = opts.maxHeaderBlock ?? 256 * 1024;
    this.maxResync = opts.maxResyncBytes ?? 64 * 1024;
  }

  /** Sync was never known (first seen mid-stream): the next bytes must start a syscall with a
   * frame chain (`atCallStart`; else the reader waits for a syscall boundary first). */
  startUnsynced(atCallStart = true): void {
    this.st = St.RESYNC;
    this.atBoundary = atCallStart;
  }

  /** Whether the reader is looking for frames (not in sync). */
  get unsynced(): boolean { return this.st === St.RESYNC; }

  push(b: Uint8Array, ts: bigint, callEnd: boolean): void {
    let p = 0;
    const end = b.length;
    if (this.st === St.RESYNC) {
      p = this.resyncInput(b, ts, callEnd);
      if (p < 0) return;
    }
    if (this.prefaceLeft > 0) p = this.preface(b, p, end, ts);
    while (p < end) {
      if (this.st === St.HEADER) {
        if (this.hdrLen === 0 && end - p >= FRAME_HEADER_SIZE) {
          this.frameHeader(b, p, ts);
          p += FRAME_HEADER_SIZE;
        } else {
          const n = Math.min(FRAME_HEADER_SIZE - this.hdrLen, end - p);
          this.hdr.set(b.subarray(p, p + n), this.hdrLen);
          this.hdrLen += n;
          p += n;
          if (this.hdrLen < FRAME_HEADER_SIZE) break;
          this.hdrLen = 0;
          this.frameHeader(this.hdr, 0, ts);
        }
        if (this.left === 0) this.frameEnd(ts);
      } else {
        p = this.payload(b, p, end, ts);
      }
    }
    this.atBoundary = callEnd;
  }

  /** `n` bytes were not captured here. */
  gap(n: number, ts: bigint): void {
    if (n <= 0) return;
    if (this.st === St.RESYNC) {
      this.resyncLen = 0;
      this.resyncCollecting = false;
      this.skipped += n;
      return;
    }
    if (this.prefaceLeft > 0) {
      if (n <= this.prefaceLeft) { this.prefaceLeft -= n; return; }
      n -= this.prefaceLeft;
      this.prefaceLeft = 0;
      this.lose(ts);
      this.skipped += n;
      return;
    }
    if (this.st === St.PAYLOAD && this.hdrLen === 0 && n <= this.left) {
      this.left -= n;
      if (this.mode === Mode.DATA) {
        if (this.padLeft < 0) {
          // the pad length byte is gone: data and padding can no longer be told apart
          this.sink.dataGap(this.sid, n + this.left, ts);
          this.mode = Mode.SKIP;
        } else {
          const d = Math.min(n, this.dataLeft);
          this.dataLeft -= d;
          if (d > 0) this.sink.dataGap(this.sid, d, ts);
          this.padLeft -= n - d;
        }
      } else if (this.mode === Mode.BLOCK) {
        this.dropBlock("gap inside a header block");
        this.mode = Mode.SKIP;
      } else {
        this.mode = Mode.SKIP;
      }
      if (this.left === 0) this.frameEnd(ts);
      return;
    }
    this.lose(ts);
    this.skipped += n;
  }

  // ------------------------------------------------------------------ frames

  private frameHeader(h: Uint8Array, p: number, ts: bigint): void {
    const len = (h[p]! << 16) | (h[p + 1]! << 8) | h[p + 2]!;
    this.type = h[p + 3]!;
    this.flags = h[p + 4]!;
    this.sid = ((h[p + 5]! & 0x7f) << 24 | h[p + 6]! << 16 | h[p + 7]! << 8 | h[p + 8]!) >>> 0;
    this.left = len;
    this.bufLen = 0;
    this.st = St.PAYLOAD;
    if (len > this.maxFrameSize) this.sink.malformed("Http2FrameTooLarge", `frame of ${len} bytes, limit ${this.maxFrameSize}`);
    const type = this.type;
    if (this.blockOpen && type !== FrameType.CONTINUATION) {
      // RFC 9113 6.10: nothing may come between a header block's frames.
      this.sink.malformed("Http2FramesMalformed", "header block interrupted by another frame");
      this.dropBlock("header block interrupted");
      this.blockOpen = false;
      this.finishLostBlock(ts);
    }
    if (type !== FrameType.CONTINUATION) this.afterResync = false;
    switch (type) {
      case FrameType.DATA:
        if (this.sid === 0) { this.bad("DATA on stream 0"); break; }
        this.mode = Mode.DATA;
        this.padLeft = this.flags & FLAG_PADDED ? -1 : 0;
        this.dataLeft = this.flags & FLAG_PADDED ? 0 : len;
        break;
      case FrameType.HEADERS:
      case FrameType.PUSH_PROMISE:
        this.blockSid = this.sid;
        this.blockEndStream = type === FrameType.HEADERS && (this.flags & FLAG_END_STREAM) !== 0;
        this.blockPromised = 0;
        this.blockLen = 0;
        this.blockLost = "";
        this.blockOpen = (this.flags & FLAG_END_HEADERS) === 0;
        if (this.sid === 0) {
          // not decodable as a stream's headers, yet the sender's encoder may have changed its
          // table: reported lost, so that table is forgotten
          this.sink.malformed("Http2FramesMalformed", "header block on stream 0");
          this.dropBlock("header block on stream 0");
          this.mode = Mode.SKIP;
          break;
        }
        this.startBlockFrame(len);
        break;
      case FrameType.CONTINUATION:
        if (!this.blockOpen || this.sid !== this.blockSid) {
          if (this.afterResync && !this.blockOpen) { this.mode = Mode.SKIP; break; } // its HEADERS was before the resync point
          this.bad(this.blockOpen ? "CONTINUATION of another stream" : "CONTINUATION without HEADERS");
          if (this.blockOpen) { this.dropBlock("CONTINUATION of another stream"); this.blockOpen = false; this.finishLostBlock(ts); }
          break;
        }
        this.blockOpen = (this.flags & FLAG_END_HEADERS) === 0;
        this.startBlockFrame(len);
        break;
      case FrameType.RST_STREAM:
      case FrameType.PRIORITY:
      case FrameType.WINDOW_UPDATE:
      case FrameType.PING: {
        const want = type === FrameType.RST_STREAM || type === FrameType.WINDOW_UPDATE ? 4 : type === FrameType.PRIORITY ? 5 : 8;
        if (len !== want) { this.bad(`frame type ${type} of ${len} bytes`); break; }
        this.mode = type === FrameType.RST_STREAM ? Mode.CONTROL : Mode.SKIP;
        break;
      }
      case FrameType.SETTINGS:
        if (len % 6 !== 0 || len > 6 * 64 || (this.flags & FLAG_ACK && len !== 0)) { this.bad(`SETTINGS of ${len} bytes`); break; }
        this.mode = Mode.CONTROL;
        break;
      case FrameType.GOAWAY:
        if (len < 8) { this.bad(`GOAWAY of ${len} bytes`); break; }
        this.mode = Mode.CONTROL;   // only the first 8 bytes are kept; debug data is skipped
        break;
      default:
        this.mode = Mode.SKIP;      // unknown types are ignored (RFC 9113 4.1)
    }
  }

  private startBlockFrame(len: number): void {
    this.mode = Mode.BLOCK;
    if (this.blockLost) { this.mode = Mode.SKIP; return; }
    if (this.blockLen + len > this.maxBlock) {
      this.sink.malformed("Http2HeaderBlockTooLarge", `header block over ${this.maxBlock} bytes`);
      this.dropBlock("header block too large");
      this.mode = Mode.SKIP;
    }
  }

  private bad(reason: string): void {
    this.sink.malformed("Http2FramesMalformed", reason);
    this.mode = Mode.SKIP;
  }

  private payload(b: Uint8Array, p: number, end: number, ts: bigint): number {
    const take = Math.min(this.left, end - p);
    switch (this.mode) {
      case Mode.DATA: {
        let q = p;
        const stop = p + take;
        if (this.padLeft < 0) {
          const pad = b[q++]!;
          if (pad > this.left - 1) {
            this.bad("padding longer than the frame");
            this.left -= q - p;
            if (this.left === 0) this.frameEnd(ts);
            return q;
          }
          this.padLeft = pad;
          this.dataLeft = this.left - 1 - pad;
        }
        const d = Math.min(this.dataLeft, stop - q);
        if (d > 0) {
          this.sink.data(this.sid, b, q, q + d, ts);
          this.dataLeft -= d;
        }
        break;
      }
      case Mode.BLOCK:
      case Mode.CONTROL:
        if (this.bufLen === 0 && take === this.left && this.mode === Mode.BLOCK) {
          // the whole payload is here: no copy into buf
          this.left = 0;
          this.st = St.HEADER;
          this.mode = Mode.SKIP;
          this.blockPayload(b, p, p + take, ts);
          if (this.blockLost && !this.blockOpen) this.finishLostBlock(ts);
          return p + take;
        }
        if (this.mode === Mode.CONTROL && this.type === FrameType.GOAWAY) {
          const keep = Math.max(0, Math.min(take, 8 - this.bufLen));
          this.append(b, p, keep);
        } else {
          this.append(b, p, take);
        }
        break;
      default:
        break;
    }
    this.left -= take;
    if (this.left === 0) this.frameEnd(ts);
    return p + take;
  }

  private append(b: Uint8Array, p: number, n: number): void {
    if (n <= 0) return;
    if (this.bufLen + n > this.buf.length) {
      const nb = new Uint8Array(Math.max(this.bufLen + n, this.buf.length * 2));
      nb.set(this.buf.subarray(0, this.bufLen));
      this.buf = nb;
    }
    this.buf.set(b.subarray(p, p + n), this.bufLen);
    this.bufLen += n;
  }

  private frameEnd(ts: bigint): void {
    this.st = St.HEADER;
    const mode = this.mode;
    this.mode = Mode.SKIP;
    switch (mode) {
      case Mode.DATA:
        this.sink.dataEnd(this.sid, (this.flags & FLAG_END_STREAM) !== 0, ts);
        break;
      case Mode.BLOCK:
        this.blockPayload(this.buf, 0, this.bufLen, ts);
        if (this.blockLost && !this.blockOpen) this.finishLostBlock(ts);
        break;
      case Mode.CONTROL:
        this.control(this.buf, 0, this.bufLen, ts);
        break;
      case Mode.SKIP:
        // a skipped DATA frame (its padding byte was lost) still ends its stream
        if (this.type === FrameType.DATA && this.sid !== 0) this.sink.dataEnd(this.sid, (this.flags & FLAG_END_STREAM) !== 0, ts);
        else if (this.blockLost && !this.blockOpen && (this.type === FrameType.HEADERS || this.type === FrameType.PUSH_PROMISE || this.type === FrameType.CONTINUATION)) this.finishLostBlock(ts);
        break;
    }
    this.bufLen = 0;
  }

  /** A whole HEADERS / PUSH_PROMISE / CONTINUATION payload: strip fields, join, and emit at END_HEADERS. */
  private blockPayload(b: Uint8Array, s: number, e: number, ts: bigint): void {
    if (this.type !== FrameType.CONTINUATION) {
      if (this.flags & FLAG_PADDED) {
        if (s >= e) { this.blockFraming("PADDED header frame without a pad length", ts); return; }
        const pad = b[s++]!;
        if (pad > e - s) { this.blockFraming("padding longer than the frame", ts); return; }
        e -= pad;
      }
      if (this.type === FrameType.HEADERS && this.flags & FLAG_PRIORITY) {
        if (e - s < 5) { this.blockFraming("HEADERS too short for its priority fields", ts); return; }
        s += 5;
      }
      if (this.type === FrameType.PUSH_PROMISE) {
        if (e - s < 4) { this.blockFraming("PUSH_PROMISE too short", ts); return; }
        this.blockPromised = ((b[s]! & 0x7f) << 24 | b[s + 1]! << 16 | b[s + 2]! << 8 | b[s + 3]!) >>> 0;
        s += 4;
      }
    }
    if (!this.blockOpen && this.blockLen === 0) {
      // the common case: one frame holds the whole block
      this.sink.headers(this.blockSid, this.blockEndStream, this.blockPromised, b, s, e, ts);
      return;
    }
    const n = e - s;
    if (this.block.length < this.blockLen + n) {
      const nb = new Uint8Array(Math.max(this.blockLen + n, this.block.length * 2, 4096));
      nb.set(this.block.subarray(0, this.blockLen));
      this.block = nb;
    }
    this.block.set(b.subarray(s, e), this.blockLen);
    this.blockLen += n;
    if (!this.blockOpen) {
      const len = this.blockLen;
      this.blockLen = 0;
      this.sink.headers(this.blockSid, this.blockEndStream, this.blockPromised, this.block, 0, len, ts);
      if (this.block.length > 64 * 1024) this.block = new Uint8Array(0); // do not keep a large buffer
    }
  }

  private blockFraming(reason: string, _ts: bigint): void {
    this.sink.malformed("Http2FramesMalformed", reason);
    this.dropBlock(reason);
  }

  /** The open header block cannot be read; it is reported (finishLostBlock) once its last frame
   * has passed, or when it is abandoned. */
  private dropBlock(reason: string): void {
    if (this.blockLost) return;
    this.blockLost = reason;
    this.blockLen = 0;
  }

  private finishLostBlock(ts: bigint): void {
    const reason = this.blockLost;
    if (!reason) return;
    this.blockLost = "";
    this.sink.headersLost(this.blockSid, this.blockEndStream, this.blockPromised, reason, ts);
  }

  private control(b: Uint8Array, s: number, e: number, ts: bigint): void {
    switch (this.type) {
      case FrameType.RST_STREAM:
        this.sink.rstStream(this.sid, (b[s]! << 24 | b[s + 1]! << 16 | b[s + 2]! << 8 | b[s + 3]!) >>> 0, ts);
        break;
      case FrameType.SETTINGS:
        if (this.sid !== 0) { this.sink.malformed("Http2FramesMalformed", "SETTINGS on a stream"); break; }
        this.sink.settings((this.flags & FLAG_ACK) !== 0, b, s, e, ts);
        break;
      case FrameType.GOAWAY:
        this.sink.goaway(((b[s]! & 0x7f) << 24 | b[s + 1]! << 16 | b[s + 2]! << 8 | b[s + 3]!) >>> 0,
          (b[s + 4]! << 24 | b[s + 5]! << 16 | b[s + 6]! << 8 | b[s + 7]!) >>> 0, ts);
        break;
    }
  }

  // ------------------------------------------------------------------ preface and resync

  private preface(b: Uint8Array, p: number, end: number, ts: bigint): number {
    while (this.prefaceLeft > 0 && p < end) {
      const i = PREFACE.length - this.prefaceLeft;
      if (b[p] !== PREFACE[i]) {
        this.sink.malformed("Http2PrefaceMismatch", "client connection preface expected");
        this.prefaceLeft = 0;
        this.st = St.RESYNC;
        this.sink.syncLost(ts);
        return end; // the rest of this chunk is skipped; resync starts at the next syscall
      }
      this.prefaceLeft--;
      p++;
    }
    return p;
  }

  /** Sync lost: what was open is lost, the next syscall boundary is searched for frames. */
  private lose(ts: bigint): void {
    if ((this.st === St.PAYLOAD && (this.mode === Mode.BLOCK || this.blockLost)) || this.blockOpen) {
      this.dropBlock("gap over frames");
      this.blockOpen = false;
      this.finishLostBlock(ts);
    }
    this.blockLost = "";
    this.st = St.RESYNC;
    this.hdrLen = 0;
    this.resyncLen = 0;
    this.resyncCollecting = false;
    // atBoundary stays: after bytes cut from the end of a syscall (capture cap) the next bytes
    // start a syscall; after lost events they may not, which the frame chain check catches.
    this.sink.syncLost(ts);
  }

  /**
   * RESYNC input. Collects the bytes of one syscall that starts at a boundary; at its end, a frame
   * chain there resumes parsing (the held bytes are parsed; returns -1 as they were consumed).
   */
  private resyncInput(b: Uint8Array, ts: bigint, callEnd: boolean): number {
    if (!this.resyncCollecting) {
      if (!this.atBoundary) {
        this.skipped += b.length;
        this.atBoundary = callEnd;
        return -1;
      }
      this.resyncCollecting = true;
      this.resyncLen = 0;
    }
    const room = this.maxResync - this.resyncLen;
    const n = Math.min(room, b.length);
    if (this.resync.length < this.resyncLen + n) {
      const nb = new Uint8Array(Math.min(this.maxResync, Math.max(this.resyncLen + n, this.resync.length * 2, 1024)));
      nb.set(this.resync.subarray(0, this.resyncLen));
      this.resync = nb;
    }
    this.resync.set(b.subarray(0, n), this.resyncLen);
    this.resyncLen += n;
    const full = this.resyncLen >= this.maxResync;
    if (!callEnd && !full) return -1;
    const held = this.resync.subarray(0, this.resyncLen);
    const chain = frameChain(held);
    // Inside a connection known to be HTTP/2, one plausible frame that exactly fills a syscall is
    // enough (writers often send one frame per call); otherwise three chained headers.
    const ok = !chain.bad && (chain.frames >= 3 || (chain.frames >= 1 && callEnd && !full && chain.exact));
    this.resyncCollecting = false;
    if (!ok) {
      this.skipped += this.resyncLen;
      this.resyncLen = 0;
      this.atBoundary = callEnd && !full;
      if (full) this.skipped += b.length - n;
      return -1;
    }
    const skipped = this.skipped;
    this.skipped = 0;
    this.st = St.HEADER;
    this.hdrLen = 0;
    this.afterResync = true;
    this.sink.resynced(skipped, ts);
    const copy = held.slice();
    this.resyncLen = 0;
    if (this.resync.length > 16384) this.resync = new Uint8Array(0);
    this.push(copy, ts, callEnd && n === b.length);
    if (n < b.length) this.push(b.subarray(n), ts, callEnd);
    return -1;
  }
}
