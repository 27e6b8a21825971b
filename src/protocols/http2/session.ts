/**
 * Http2Session: the ProtocolSession for one HTTP/2 connection (prior knowledge, h2c upgrade, TLS
 * plaintext, or first seen mid-stream). Two FrameReaders (one per sender) and two HPACK decoders
 * (one per sender's encoder) feed streams; each stream becomes one Http2Exchange, emitted when
 * both directions ended (END_STREAM), on RST_STREAM, when a GOAWAY says it was not processed, when
 * the connection closes, when it outlives `streamMaxAgeNs` (tick), or when it is evicted as the
 * least recently active of more than `maxStreams` open streams.
 *
 * Roles. Normally the pipeline knows which sender is the client. For a connection first seen
 * mid-stream without a known role (`roleKnown: false`), the role is learned from the first header
 * block with `:method` (its sender is the client) or `:status` / a PUSH_PROMISE (the server);
 * `onRole` reports it. Header blocks before that maintain the HPACK tables but open no streams.
 *
 * Streams seen only in part. Stream ids only grow (RFC 9113 5.1.1), so a client HEADERS on an id
 * at or below the highest one opened is for a stream we closed, evicted, or never saw: ignored and
 * counted. After attaching mid-stream or losing client bytes over frame headers, a header block
 * without pseudo-header fields may be the trailers of a stream we never saw; it opens a stream
 * only once a request (pseudo-headers) has re-established the id floor.
 *
 * Counters (env.count): Http2FramesMalformed, Http2FrameTooLarge, Http2HeaderBlockTooLarge,
 * Http2PrefaceMismatch, Http2HpackErrors, Http2HuffmanErrors, Http2HpackUnknownFields,
 * Http2HpackSizeUpdateAboveSetting, Http2HeaderListTooLarge, Http2HeaderBlocksLost,
 * Http2SyncLost, Http2Resyncs, Http2ResyncSkippedBytes, Http2DataGapBytes, Http2FramesUnknownStream,
 * Http2HeadersBeforeRole, Http2StreamsEvicted, Http2StreamsExpired, Http2StreamsAtClose,
 * Http2GrpcFramingErrors, Http2BodyBudgetExceeded.
 *
 * Memory per connection: at most maxStreams open streams, each body at most env.bodyMaxSize and
 * all bodies together at most maxBodyBytes; one header block buffer (256 KiB) and one resync
 * buffer (64 KiB) per direction; HPACK tables within their caps and the shared HpackMemory.
 */
import type { Exchange, Handoff, ProtocolSession, Sender, SessionEnv } from "../session.ts";
import { GrpcMessageCounter, isGrpcContentType } from "../grpc/grpc.ts";
import { type EndReason, Half, Http2Exchange, type StreamRecord } from "./exchange.ts";
import { type FrameSink, FrameReader } from "./frames.ts";
import { HeaderBlock, HpackDecoder, type HpackMemory } from "./hpack.ts";

export interface Http2SessionOptions {
  /** First seen after the connection started: frame sync and HPACK tables unknown. */
  midStream?: boolean;
  /** Whether the `from` labels given to data() are the real roles (default true). */
  roleKnown?: boolean;
  /** Set when an HTTP/1 session switched here after `Upgrade: h2c` + 101. */
  handoff?: Handoff;
  /** Streams still open this long after their request are emitted incomplete (default 5 min). */
  streamMaxAgeNs?: bigint;
  /** Open streams per connection (default 256); the least recently active is evicted past it. */
  maxStreams?: number;
  hpackMemory?: HpackMemory;
  /** Per-block decoded header list cap (default 65536). */
  maxHeaderListSize?: number;
  /** Body bytes kept by all open streams of the connection together (default 4 MiB); bodies
   * past it are cut (flagged truncated) and counted as Http2BodyBudgetExceeded. */
  maxBodyBytes?: number;
  /** A role learned from the headers (roleKnown false): which `from` label is the client. */
  onRole?: (client: Sender) => void;
}

const SIDES: readonly Sender[] = ["client", "server"];
const DEFAULT_MAX_AGE = 5n * 60n * 1_000_000_000n;

class Stream implements StreamRecord {
  req = new Half();
  res = new Half();
  pushedBy = 0;
  rstCode = -1;
  end: EndReason = "complete";
  gap = false;
  grpc = false;
  touched = 0;
  constructor(readonly id: number, readonly startNs: bigint) {}
}

/** Adapts FrameReader callbacks of one sender to the session. */
class SideSink implements FrameSink {
  constructor(private readonly s: Http2Session, private readonly side: 0 | 1) {}
  data(sid: number, b: Uint8Array, start: number, end: number, ts: bigint): void { this.s.onData(this.side, sid, b, start, end, ts); }
  dataEnd(sid: number, endStream: boolean, ts: bigint): void { this.s.onDataEnd(this.side, sid, endStream, ts); }
  dataGap(sid: number, n: number, ts: bigint): void { this.s.onDataGap(this.side, sid, n, ts); }
  headers(sid: number, endStream: boolean, promised: number, b: Uint8Array, start: number, end: number, ts: bigint): void {
    this.s.onHeaders(this.side, sid, endStream, promised, b, start, end, ts);
  }
  headersLost(sid: number, endStream: boolean, promised: number, reason: string, ts: bigint): void {
    this.s.onHeadersLost(this.side, sid, endStream, promised, reason, ts);
  }
  rstStream(sid: number, code: number, ts: bigint): void { this.s.onRst(this.side, sid, code, ts); }
  settings(ack: boolean, b: Uint8Array, start: number, end: number): void { this.s.onSettings(this.side, ack, b, start, end); }
  goaway(lastSid: number, _code: number, ts: bigint): void { this.s.onGoaway(this.side, lastSid, ts); }
  malformed(counter: string, reason: string): void { this.s.onMalformed(this.side, counter, reason); }
  syncLost(_ts: bigint): void { this.s.onSyncLost(this.side); }
  resynced(skipped: number): void { this.s.onResynced(skipped); }
}

export class Http2Session implements ProtocolSession {
  readonly protocol = "http2" as const;
  private readonly env: SessionEnv;
  private readonly readers: [FrameReader, FrameReader];
  private readonly decoders: [HpackDecoder, HpackDecoder];
  private readonly block = new HeaderBlock();
  private readonly streams = new Map<number, Stream>();
  /** Index (0 = "client" label, 1 = "server" label) of the sender that is the client; -1 unknown. */
  private clientSide: number;
  private highestClient = 0;
  private highestPush = 0;
  /** Client HEADERS on a new id above highestClient are certainly requests. */
  private floorKnown: boolean;
  /** HEADERS_TABLE_SIZE values each side sent, waiting for the other side's ACK (bounded). */
  private readonly pendingTableSize: [number[], number[]] = [[], []];
  private clock = 0;
  private closed = false;
  private readonly maxAge: bigint;
  private readonly maxStreams: number;
  private readonly maxBodyBytes: number;
  /** Body bytes held by open streams. */
  private bodyBytes = 0;
  private readonly onRole: ((client: Sender) => void) | undefined;

  constructor(env: SessionEnv, opts: Http2SessionOptions = {}) {
    this.env = env;
    const mid = opts.midStream === true;
    this.maxAge = opts.streamMaxAgeNs ?? DEFAULT_MAX_AGE;
    this.maxStreams = opts.maxStreams ?? 256;
    this.maxBodyBytes = opts.maxBodyBytes ?? 4 * 1024 * 1024;
    this.onRole = opts.onRole;
    this.clientSide = opts.roleKnown === false ? -1 : 0;
    this.floorKnown = !mid;
    const hp = { fromStart: !mid, memory: opts.hpackMemory, maxHeaderListSize: opts.maxHeaderListSize };
    this.decoders = [new HpackDecoder(hp), new HpackDecoder(hp)];
    this.readers = [
      new FrameReader(new SideSink(this, 0), { expectPreface: !mid }),
      new FrameReader(new SideSink(this, 1), { expectPreface: false }),
    ];
    if (mid) {
      this.readers[0].startUnsynced();
      this.readers[1].startUnsynced();
    }
    if (opts.handoff) this.applyHandoff(opts.handoff);
  }

  /** Which `from` label is the client, once known. */
  get clientSender(): Sender | undefined { return this.clientSide < 0 ? undefined : SIDES[this.clientSide]; }
  /** Streams open now. */
  get openStreams(): number { return this.streams.size; }

  data(from: Sender, bytes: Uint8Array, tsNs: bigint, callEnd: boolean): void {
    if (this.closed) return;
    this.readers[from === "client" ? 0 : 1].push(bytes, tsNs, callEnd);
  }

  gap(from: Sender, n: number, tsNs: bigint, _lost: boolean): void {
    if (this.closed) return;
    this.readers[from === "client" ? 0 : 1].gap(n, tsNs);
  }

  close(tsNs: bigint): void {
    if (this.closed) return;
    this.closed = true;
    for (const st of [...this.streams.values()]) this.finish(st, "close", tsNs);
    if (this.streams.size > 0) this.env.count("Http2StreamsAtClose", this.streams.size);
    this.decoders[0].release();
    this.decoders[1].release();
  }

  tick(nowNs: bigint): void {
    for (const st of [...this.streams.values()]) {
      if (nowNs - st.startNs > this.maxAge) {
        this.env.count("Http2StreamsExpired");
        this.finish(st, "max_age", nowNs);
      }
    }
  }

  // ------------------------------------------------------------------ frame events

  onHeaders(side: 0 | 1, sid: number, endStream: boolean, promised: number, b: Uint8Array, start: number, end: number, ts: bigint): void {
    const blk = this.block;
    this.decoders[side].decode(b, start, end, blk);
    this.countBlock(side, blk);
    if (this.clientSide < 0 && !this.learnRole(side, blk, promised)) {
      this.env.count("Http2HeadersBeforeRole");
      return;
    }
    const fromClient = side === this.clientSide;
    if (promised > 0) {
      if (fromClient) { this.onMalformed(side, "Http2FramesMalformed", "PUSH_PROMISE from the client"); return; }
      const st = this.openPushed(sid, promised, ts);
      if (st !== undefined) {
        this.fill(st, st.req, blk, ts, true);
        st.req.endStream = true; // a promised request has no body (RFC 9113 8.4)
      }
      return;
    }
    let st = this.streams.get(sid);
    if (fromClient) {
      if (st === undefined) {
        st = this.openRequest(sid, hasPseudo(blk), ts);
        if (st === undefined) return;
      } else if (hasPseudo(blk) && st.req.headersSeen) {
        this.onMalformed(side, "Http2FramesMalformed", `request header block on open stream ${sid}`);
        return;
      }
      this.fill(st, st.req, blk, ts, false);
      if (endStream) st.req.endStream = true;
    } else {
      if (st === undefined) { this.env.count("Http2FramesUnknownStream"); return; }
      this.fill(st, st.res, blk, ts, false);
      if (endStream) st.res.endStream = true;
    }
    this.settle(st, ts);
  }

  onHeadersLost(side: 0 | 1, sid: number, endStream: boolean, promised: number, reason: string, ts: bigint): void {
    this.env.count("Http2HeaderBlocksLost");
    this.env.error(SIDES[side]!, `HTTP/2 header block of stream ${sid} lost: ${reason}`);
    this.decoders[side].forget();
    if (this.clientSide < 0) return;
    const fromClient = side === this.clientSide;
    let st: Stream | undefined;
    if (promised > 0) {
      if (fromClient) return;
      st = this.openPushed(sid, promised, ts);
      if (st === undefined) return;
      st.req.lostBlocks++;
      st.req.endStream = true;
      return;
    }
    st = this.streams.get(sid);
    if (fromClient && st === undefined) st = this.openRequest(sid, false, ts);
    if (st === undefined) return;
    const h = fromClient ? st.req : st.res;
    h.lostBlocks++;
    h.lastNs = ts;
    if (endStream) h.endStream = true;
    this.settle(st, ts);
  }

  onData(side: 0 | 1, sid: number, b: Uint8Array, start: number, end: number, ts: bigint): void {
    const st = this.streams.get(sid);
    if (st === undefined || this.clientSide < 0) return;
    const h = side === this.clientSide ? st.req : st.res;
    const n = end - start;
    h.bodySize += n;
    if (h.firstNs === 0n) h.firstNs = ts;
    h.lastNs = ts;
    if (h.grpc !== undefined) h.grpc.push(b, start, end);
    if (h.keep) this.keepBody(h, b, start, end);
  }

  onDataEnd(side: 0 | 1, sid: number, endStream: boolean, ts: bigint): void {
    const st = this.streams.get(sid);
    if (st === undefined || this.clientSide < 0) {
      this.env.count("Http2FramesUnknownStream");
      return;
    }
    st.touched = ++this.clock;
    const h = side === this.clientSide ? st.req : st.res;
    h.lastNs = ts;
    if (endStream) {
      h.endStream = true;
      if (h.grpc !== undefined && h.grpc.unfinished && !h.grpc.lost) {
        h.grpc.malformed = true;
        this.env.count("Http2GrpcFramingErrors");
      }
      this.settle(st, ts);
    }
  }

  onDataGap(side: 0 | 1, sid: number, n: number, ts: bigint): void {
    this.env.count("Http2DataGapBytes", n);
    const st = this.streams.get(sid);
    if (st === undefined || this.clientSide < 0) return;
    const h = side === this.clientSide ? st.req : st.res;
    h.bodySize += n;
    h.truncated = true;
    h.lastNs = ts;
    h.grpc?.gap();
    st.gap = true;
  }

  onRst(side: 0 | 1, sid: number, code: number, ts: bigint): void {
    const st = this.streams.get(sid);
    if (st === undefined) return;
    st.rstCode = code;
    // the reset is the stream's last event: its time ends the span (a cancelled request that was
    // never answered would otherwise end at its own HEADERS)
    const h = side === this.clientSide ? st.req : st.res;
    if (ts > h.lastNs) h.lastNs = ts;
    this.finish(st, "rst_stream", ts);
  }

  onGoaway(side: 0 | 1, lastSid: number, ts: bigint): void {
    if (this.clientSide < 0) return;
    // Streams the GOAWAY's receiver started above lastSid were not processed (RFC 9113 6.8).
    const receiverIsClient = side !== this.clientSide;
    for (const st of [...this.streams.values()]) {
      const clientStarted = (st.id & 1) === 1;
      if (st.id > lastSid && clientStarted === receiverIsClient) {
        if (ts > st.req.lastNs && ts > st.res.lastNs) st.req.lastNs = ts; // ends at the GOAWAY
        this.finish(st, "goaway", ts);
      }
    }
  }

  onSettings(side: 0 | 1, ack: boolean, b: Uint8Array, start: number, end: number): void {
    const other = side === 0 ? 1 : 0;
    if (ack) {
      // `side` acknowledged the other side's SETTINGS: its encoder now obeys that table size
      const v = this.pendingTableSize[other].shift();
      if (v !== undefined && v >= 0) this.decoders[side].setSettingBound(v);
      return;
    }
    let tableSize = -1;
    for (let p = start; p + 6 <= end; p += 6) {
      const id = (b[p]! << 8) | b[p + 1]!;
      const v = (b[p + 2]! << 24 | b[p + 3]! << 16 | b[p + 4]! << 8 | b[p + 5]!) >>> 0;
      if (id === 1) tableSize = v;
      else if (id === 5 && v > this.readers[other].maxFrameSize) this.readers[other].maxFrameSize = v;
    }
    const q = this.pendingTableSize[side];
    if (q.length < 16) q.push(tableSize);
  }

  onMalformed(side: 0 | 1, counter: string, reason: string): void {
    this.env.count(counter);
    this.env.error(SIDES[side]!, `HTTP/2: ${reason}`);
  }

  onSyncLost(side: 0 | 1): void {
    this.env.count("Http2SyncLost");
    this.decoders[side].forget();
    if (side === this.clientSide || this.clientSide < 0) this.floorKnown = false;
    for (const st of this.streams.values()) st.gap = true;
  }

  onResynced(skipped: number): void {
    this.env.count("Http2Resyncs");
    if (skipped > 0) this.env.count("Http2ResyncSkippedBytes", skipped);
  }

  // ------------------------------------------------------------------ streams

  private learnRole(side: 0 | 1, blk: HeaderBlock, promised: number): boolean {
    let client = -1;
    if (promised > 0) client = side === 0 ? 1 : 0;
    else {
      for (let i = 0; i < blk.count && client < 0; i++) {
        const n = blk.names[i]!;
        if (n === ":method") client = side;
        else if (n === ":status") client = side === 0 ? 1 : 0;
      }
    }
    if (client < 0) return false;
    this.clientSide = client;
    this.onRole?.(SIDES[client]!);
    return true;
  }

  /** A client header block on a stream we do not hold: a new request, or undefined to ignore. */
  private openRequest(sid: number, pseudo: boolean, ts: bigint): Stream | undefined {
    if ((sid & 1) === 0 || sid <= this.highestClient || !(pseudo || this.floorKnown)) {
      this.env.count("Http2FramesUnknownStream");
      return undefined;
    }
    this.highestClient = sid;
    this.floorKnown = true;
    return this.open(sid, ts);
  }

  private openPushed(parent: number, promised: number, ts: bigint): Stream | undefined {
    if ((promised & 1) === 1 || promised <= this.highestPush) {
      this.env.count("Http2FramesUnknownStream");
      return undefined;
    }
    this.highestPush = promised;
    const st = this.open(promised, ts);
    st.pushedBy = parent;
    return st;
  }

  private open(sid: number, ts: bigint): Stream {
    if (this.streams.size >= this.maxStreams) this.evict(ts);
    const st = new Stream(sid, ts);
    st.touched = ++this.clock;
    this.streams.set(sid, st);
    return st;
  }

  private evict(ts: bigint): void {
    let victim: Stream | undefined;
    for (const st of this.streams.values()) if (victim === undefined || st.touched < victim.touched) victim = st;
    if (victim === undefined) return;
    this.env.count("Http2StreamsEvicted");
    this.finish(victim, "evicted", ts);
  }

  /** Applies a decoded header block to one half of a stream. */
  private fill(st: Stream, h: Half, blk: HeaderBlock, ts: bigint, pushedRequest: boolean): void {
    st.touched = ++this.clock;
    if (h.firstNs === 0n) h.firstNs = ts;
    h.lastNs = ts;
    if (blk.error !== undefined) h.corrupt = true;
    const pseudo = hasPseudo(blk);
    if ((h.headersSeen || h.lostBlocks > 0) && !pseudo) {
      // trailers (also after an initial block we could not read: never taken for headers)
      h.unknown += blk.unknown;
      h.oversize += blk.oversize;
      const t: string[] = h.trailers ?? (h.trailers = []);
      for (let i = 0; i < blk.count; i++) {
        const n = blk.names[i]!;
        if (n.charCodeAt(0) !== 0x3a) t.push(n, blk.values[i]!);
      }
      return;
    }
    if (h === st.res && h.headersSeen) {
      // A second block with pseudo-header fields: the first was an interim (1xx) response whose
      // :status we could not read. Start over with this one.
      h.fields = [];
      h.status = undefined;
      h.interim++;
    }
    h.unknown += blk.unknown;
    h.oversize += blk.oversize;
    let status: number | undefined;
    const fields = h.fields;
    for (let i = 0; i < blk.count; i++) {
      const n = blk.names[i]!;
      const v = blk.values[i]!;
      if (n.charCodeAt(0) === 0x3a) {
        switch (n) {
          case ":method": h.method = v; break;
          case ":path": h.path = v; break;
          case ":authority": h.authority = v; break;
          case ":scheme": h.scheme = v; break;
          case ":status": status = /^\d{3}$/.test(v) ? Number(v) : undefined; break;
        }
        continue;
      }
      fields.push(n, v);
      if (n === "content-type") h.contentType = v;
    }
    if (h === st.res && status !== undefined && status >= 100 && status < 200) {
      // interim response: not the response's headers
      h.interim++;
      h.fields = [];
      return;
    }
    if (status !== undefined) h.status = status;
    h.headersSeen = true;
    if (h === st.req || pushedRequest) {
      st.grpc = isGrpcContentType(h.contentType);
    }
    const grpc = st.grpc || isGrpcContentType(h.contentType);
    if (grpc) {
      st.grpc = true;
      h.grpc = new GrpcMessageCounter();
      h.keep = false;
    } else {
      const enc = fieldOf(fields, "content-encoding");
      h.keep = (enc === undefined || enc === "identity") && this.env.keepBody(h.contentType);
    }
  }

  /** Emits a stream whose both halves ended. */
  private settle(st: Stream, ts: bigint): void {
    if (st.req.endStream && st.res.endStream) this.finish(st, "complete", ts);
  }

  private finish(st: Stream, end: EndReason, ts: bigint): void {
    if (!this.streams.delete(st.id)) return;
    st.end = end;
    this.bodyBytes -= st.req.bodyLen + st.res.bodyLen;
    if (end !== "complete" && st.req.lastNs === 0n) st.req.lastNs = ts;
    const x: Exchange = new Http2Exchange(st, this.env.bodyMaxSize);
    this.env.emit(x);
  }

  private keepBody(h: Half, b: Uint8Array, start: number, end: number): void {
    const max = this.env.bodyMaxSize;
    const room = Math.min(max - h.bodyLen, this.maxBodyBytes - this.bodyBytes);
    const n = Math.min(room, end - start);
    if (n < end - start) {
      if (!h.truncated && h.bodyLen + n < max) this.env.count("Http2BodyBudgetExceeded");
      h.truncated = true;
    }
    if (n <= 0) return;
    this.bodyBytes += n;
    let body = h.body;
    if (body === undefined || body.length < h.bodyLen + n) {
      // the first piece gets an exact fit (most bodies are one DATA frame), later ones double
      const nb = new Uint8Array(body === undefined ? n : Math.min(max, Math.max(h.bodyLen + n, body.length * 2)));
      if (body !== undefined) for (let i = 0; i < h.bodyLen; i++) nb[i] = body[i]!;
      h.body = body = nb;
    }
    // small copies: a loop is cheaper than a subarray view plus set()
    if (n <= 512) for (let i = 0, o = h.bodyLen; i < n; i++) body[o + i] = b[start + i]!;
    else body.set(b.subarray(start, start + n), h.bodyLen);
    h.bodyLen += n;
  }

  private countBlock(side: 0 | 1, blk: HeaderBlock): void {
    if (blk.unknown > 0) this.env.count("Http2HpackUnknownFields", blk.unknown);
    if (blk.huffmanErrors > 0) this.env.count("Http2HuffmanErrors", blk.huffmanErrors);
    if (blk.oversize > 0) this.env.count("Http2HeaderListTooLarge", blk.oversize);
    if (blk.sizeUpdateAboveSetting) this.env.count("Http2HpackSizeUpdateAboveSetting");
    if (blk.error !== undefined) {
      this.env.count("Http2HpackErrors");
      this.env.error(SIDES[side]!, `HPACK: ${blk.error}`);
    }
  }

  private applyHandoff(h: Handoff): void {
    if (h.settings !== undefined) {
      // The client's HTTP2-Settings, acknowledged by the 101: they bind the server's encoder.
      this.onSettings(0, false, h.settings, 0, h.settings.length);
      this.onSettings(1, true, h.settings, 0, 0);
    }
    const u = h.upgradeRequest;
    if (u === undefined) return;
    this.highestClient = 1;
    const st = this.open(1, u.startNs);
    const r = st.req;
    r.method = u.method;
    r.path = u.target;
    r.scheme = "http";
    for (const [n, v] of u.headers) {
      const lower = n.toLowerCase();
      r.fields.push(lower, v);
      if (lower === "host") r.authority = v;
      if (lower === "content-type") r.contentType = v;
    }
    r.headersSeen = true;
    r.endStream = true;
    r.firstNs = u.startNs;
    r.lastNs = u.endNs;
  }
}

function hasPseudo(blk: HeaderBlock): boolean {
  for (let i = 0; i < blk.count; i++) if (blk.names[i]!.charCodeAt(0) === 0x3a) return true;
  return false;
}

function fieldOf(list: string[], lowerName: string): string | undefined {
  for (let i = 0; i < list.length; i += 2) if (list[i] === lowerName) return list[i + 1];
  return undefined;
}
