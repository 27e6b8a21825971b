/**
 * A small, fast protobuf writer for the OTLP encoder: one growing Buffer, varints, fixed64,
 * strings and hex-as-bytes. Nested messages are written in place: `begin()` reserves room for the
 * length, `end()` writes it and moves the content when the reserve was not the exact size.
 */
import { writeUtf8 } from "../utf8-write.ts";

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;

const HEX = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) HEX[97 + i] = HEX[65 + i] = 10 + i;

/** Bytes of `v` (< 2^35) as a varint. */
export function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  return 5;
}

export class ProtoWriter {
  buf: Buffer;
  pos = 0;

  constructor(initialBytes = 256 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  reset(): void {
    this.pos = 0;
  }

  /** A copy of what was written (the writer's buffer is reused). */
  finish(): Uint8Array {
    return new Uint8Array(this.buf.subarray(0, this.pos));
  }

  /** The written bytes without copying; valid until the next write or reset. */
  view(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** Unsigned varint for values below 2^32 (lengths, tags, enums, small ints). */
  varint32(v: number): void {
    this.ensure(5);
    const b = this.buf;
    let p = this.pos;
    while (v >= 0x80) {
      b[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[p++] = v;
    this.pos = p;
  }

  /** int64 varint: negative numbers take the 10-byte two's complement form. */
  int64(v: number): void {
    if (v >= 0 && v < 0x100000000) return this.varint32(v);
    let u = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (u >= 0x80n) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }

  tag(field: number, wire: number): void {
    this.varint32((field << 3) | wire);
  }

  varintField(field: number, v: number): void {
    this.tag(field, WIRE_VARINT);
    this.varint32(v);
  }

  int64Field(field: number, v: number): void {
    this.tag(field, WIRE_VARINT);
    this.int64(v);
  }

  fixed64Field(field: number, v: bigint): void {
    this.tag(field, WIRE_FIXED64);
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, v), this.pos);
    this.pos += 8;
  }

  doubleField(field: number, v: number): void {
    this.tag(field, WIRE_FIXED64);
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  stringField(field: number, s: string): void {
    this.tag(field, WIRE_LEN);
    this.string(s);
  }

  /** Length-prefixed UTF-8. Short ASCII strings take a JS loop; others go through Buffer.write. */
  string(s: string): void {
    const len = s.length;
    if (len < 43) {
      this.ensure(1 + len * 3);
      const b = this.buf;
      const lenPos = this.pos;
      let p = lenPos + 1;
      for (let i = 0; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) return this.longString(s, lenPos);
        b[p++] = c;
      }
      b[lenPos] = len;
      this.pos = p;
      return;
    }
    this.longString(s, this.pos);
  }

  private longString(s: string, start: number): void {
    const max = s.length * 3;
    const reserve = varintSize(max);
    this.pos = start;
    this.ensure(reserve + max);
    const written = writeUtf8(this.buf, s, start + reserve);
    this.pos = start + reserve + written;
    this.patchLength(start, reserve, written);
  }

  /** Raw bytes field from a hex string (trace and span ids); odd or bad digits count as 0. */
  hexBytesField(field: number, hex: string): void {
    const n = hex.length >> 1;
    this.tag(field, WIRE_LEN);
    this.ensure(1 + n);
    const b = this.buf;
    b[this.pos++] = n;
    for (let i = 0; i < n; i++) {
      const hi = HEX[hex.charCodeAt(2 * i) & 0x7f]!;
      const lo = HEX[hex.charCodeAt(2 * i + 1) & 0x7f]!;
      b[this.pos++] = ((hi < 0 ? 0 : hi) << 4) | (lo < 0 ? 0 : lo);
    }
  }

  /** Pre-encoded bytes (cached key prefixes). */
  raw(bytes: Uint8Array): void {
    const n = bytes.length;
    this.ensure(n);
    const b = this.buf;
    let p = this.pos;
    if (n < 24) {
      for (let i = 0; i < n; i++) b[p++] = bytes[i]!;
      this.pos = p;
      return;
    }
    b.set(bytes, p);
    this.pos = p + n;
  }

  /** Starts an embedded message; `reserve` is the guessed size of its length varint. */
  begin(field: number, reserve = 1): number {
    this.tag(field, WIRE_LEN);
    this.ensure(reserve);
    const start = this.pos;
    this.pos += reserve;
    return start * 8 + reserve;
  }

  end(marker: number): void {
    const reserve = marker & 7;
    const start = (marker - reserve) / 8;
    this.patchLength(start, reserve, this.pos - start - reserve);
  }

  /** Writes `len` at `start`, shifting the `len` content bytes if the varint needs more or less room. */
  private patchLength(start: number, reserve: number, len: number): void {
    const need = varintSize(len);
    if (need !== reserve) {
      if (need > reserve) this.ensure(need - reserve);
      this.buf.copyWithin(start + need, start + reserve, start + reserve + len);
      this.pos += need - reserve;
    }
    const b = this.buf;
    let p = start;
    let v = len;
    while (v >= 0x80) {
      b[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[p] = v;
  }
}
