/**
 * The sending side of HTTP/2, for tests, the replay bench and crafted traffic: an HPACK encoder
 * (static and dynamic table, Huffman, size updates) and frame builders. Not used on the capture
 * path.
 */
import { huffmanEncode, huffmanEncodedLength } from "./huffman.ts";
import { STATIC_TABLE } from "./hpack.ts";
import { FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, FrameType, PREFACE } from "./frames.ts";

const enc = new TextEncoder();

export type Indexing = "incremental" | "none" | "never";

export interface EncodeOptions {
  huffman?: boolean;          // default: when shorter
  indexing?: Indexing;        // default incremental
}

export class HpackEncoder {
  /** newest first */
  table: [string, string, number][] = [];
  size = 0;
  maxSize = 4096;
  private pendingUpdates: number[] = [];

  /** Changes the table size; a size update starts the next block. */
  setMaxSize(v: number): void {
    this.pendingUpdates.push(v);
    this.maxSize = v;
    this.evict(0);
  }

  encode(fields: [string, string][], opts: EncodeOptions = {}): Uint8Array {
    const out: number[] = [];
    for (const v of this.pendingUpdates) int(out, 0x20, 5, v);
    this.pendingUpdates = [];
    for (const [name, value] of fields) {
      const exact = this.find(name, value);
      if (exact > 0 && (opts.indexing ?? "incremental") !== "never") {
        int(out, 0x80, 7, exact);
        continue;
      }
      const nameIdx = this.findName(name);
      const mode = opts.indexing ?? "incremental";
      const [first, bits] = mode === "incremental" ? [0x40, 6] : mode === "never" ? [0x10, 4] : [0x00, 4];
      int(out, first, bits, nameIdx);
      if (nameIdx === 0) str(out, name, opts.huffman);
      str(out, value, opts.huffman);
      if (mode === "incremental") this.add(name, value);
    }
    return Uint8Array.from(out);
  }

  private find(name: string, value: string): number {
    for (let i = 0; i < STATIC_TABLE.length; i++) if (STATIC_TABLE[i]![0] === name && STATIC_TABLE[i]![1] === value) return i + 1;
    for (let i = 0; i < this.table.length; i++) if (this.table[i]![0] === name && this.table[i]![1] === value) return 62 + i;
    return 0;
  }

  private findName(name: string): number {
    for (let i = 0; i < STATIC_TABLE.length; i++) if (STATIC_TABLE[i]![0] === name) return i + 1;
    for (let i = 0; i < this.table.length; i++) if (this.table[i]![0] === name) return 62 + i;
    return 0;
  }

  private add(name: string, value: string): void {
    const size = enc.encode(name).length + enc.encode(value).length + 32;
    if (size > this.maxSize) { this.table = []; this.size = 0; return; }
    this.evict(size);
    this.table.unshift([name, value, size]);
    this.size += size;
  }

  private evict(room: number): void {
    while (this.size + room > this.maxSize && this.table.length > 0) this.size -= this.table.pop()![2];
  }
}

/** HPACK integer with an N-bit prefix; `first` holds the representation's leading bits. */
export function int(out: number[], first: number, bits: number, v: number): void {
  const max = (1 << bits) - 1;
  if (v < max) { out.push(first | v); return; }
  out.push(first | max);
  v -= max;
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128); }
  out.push(v);
}

function str(out: number[], s: string, huffman: boolean | undefined): void {
  const raw = enc.encode(s);
  const useH = huffman ?? huffmanEncodedLength(raw) < raw.length;
  const bytes = useH ? huffmanEncode(raw) : raw;
  int(out, useH ? 0x80 : 0, 7, bytes.length);
  for (const b of bytes) out.push(b);
}

// ------------------------------------------------------------------ frames

export function frame(type: number, flags: number, sid: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const f = new Uint8Array(9 + payload.length);
  const n = payload.length;
  f[0] = (n >>> 16) & 0xff; f[1] = (n >>> 8) & 0xff; f[2] = n & 0xff;
  f[3] = type; f[4] = flags;
  f[5] = (sid >>> 24) & 0x7f; f[6] = (sid >>> 16) & 0xff; f[7] = (sid >>> 8) & 0xff; f[8] = sid & 0xff;
  f.set(payload, 9);
  return f;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

const u32 = (v: number): Uint8Array => Uint8Array.of((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);

export interface HeadersOptions {
  endStream?: boolean;
  /** pad length (adds PADDED) */
  pad?: number;
  priority?: boolean;
  /** split the block into HEADERS + CONTINUATION frames of at most this many block bytes */
  maxFragment?: number;
  /** PUSH_PROMISE instead of HEADERS, promising this stream */
  promised?: number;
}

export function headersFrames(sid: number, block: Uint8Array, o: HeadersOptions = {}): Uint8Array {
  const max = o.maxFragment ?? 16384;
  const frags: Uint8Array[] = [];
  for (let p = 0; p < block.length || frags.length === 0; p += max) frags.push(block.subarray(p, p + max));
  const parts: Uint8Array[] = [];
  frags.forEach((frag, i) => {
    const last = i === frags.length - 1;
    if (i === 0) {
      let flags = last ? FLAG_END_HEADERS : 0;
      const pre: Uint8Array[] = [];
      if (o.pad !== undefined) { flags |= FLAG_PADDED; pre.push(Uint8Array.of(o.pad)); }
      if (o.promised !== undefined) pre.push(u32(o.promised));
      else {
        if (o.endStream) flags |= FLAG_END_STREAM;
        if (o.priority) { flags |= FLAG_PRIORITY; pre.push(Uint8Array.of(0x80, 0, 0, 3, 15)); }
      }
      const payload = concat([...pre, frag, new Uint8Array(o.pad ?? 0)]);
      parts.push(frame(o.promised !== undefined ? FrameType.PUSH_PROMISE : FrameType.HEADERS, flags, sid, payload));
    } else {
      parts.push(frame(FrameType.CONTINUATION, last ? FLAG_END_HEADERS : 0, sid, frag));
    }
  });
  return concat(parts);
}

export function dataFrame(sid: number, data: Uint8Array | string, o: { endStream?: boolean; pad?: number } = {}): Uint8Array {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  let flags = o.endStream ? FLAG_END_STREAM : 0;
  let payload = bytes;
  if (o.pad !== undefined) {
    flags |= FLAG_PADDED;
    payload = concat([Uint8Array.of(o.pad), bytes, new Uint8Array(o.pad)]);
  }
  return frame(FrameType.DATA, flags, sid, payload);
}

export function settingsFrame(pairs: [number, number][] = [], ack = false): Uint8Array {
  const p = new Uint8Array(pairs.length * 6);
  pairs.forEach(([id, v], i) => { p[i * 6] = id >> 8; p[i * 6 + 1] = id & 0xff; p.set(u32(v), i * 6 + 2); });
  return frame(FrameType.SETTINGS, ack ? 1 : 0, 0, p);
}

export const rstFrame = (sid: number, code: number): Uint8Array => frame(FrameType.RST_STREAM, 0, sid, u32(code));
export const goawayFrame = (last: number, code: number, debug = ""): Uint8Array =>
  frame(FrameType.GOAWAY, 0, 0, concat([u32(last), u32(code), enc.encode(debug)]));
export const pingFrame = (ack = false): Uint8Array => frame(FrameType.PING, ack ? 1 : 0, 0, new Uint8Array(8));
export const windowUpdateFrame = (sid: number, inc: number): Uint8Array => frame(FrameType.WINDOW_UPDATE, 0, sid, u32(inc));

/** One gRPC length-prefixed message. */
export function grpcMessage(payload: Uint8Array | string, compressed = false): Uint8Array {
  const b = typeof payload === "string" ? enc.encode(payload) : payload;
  return concat([Uint8Array.of(compressed ? 1 : 0), u32(b.length), b]);
}

export { PREFACE };
