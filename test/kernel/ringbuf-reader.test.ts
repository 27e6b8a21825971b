/**
 * The ring reader over plain memory laid out like the kernel's BPF ring buffer: consumer and
 * producer positions as (low, high) u32 words, the data area once (the reader maps one copy).
 * The writer below plays the kernel: 8-byte header (len | BUSY | DISCARD, page offset), 8-byte
 * aligned records; a record's payload wraps at the end of the data area.
 */
import { describe, expect, test } from "bun:test";
import { RINGBUF_BUSY, RINGBUF_DISCARD, RingBufferReader } from "../../src/kernel/ringbuf-reader.ts";

class FakeRing {
  readonly consumer = new Uint32Array(2);
  readonly producer = new Uint32Array(2);
  readonly data: Uint8Array;
  private prod = 0;
  constructor(readonly size: number, start = 0) {
    this.data = new Uint8Array(size);
    this.prod = start;
    this.setPos(this.consumer, start);
    this.setPos(this.producer, start);
  }
  private setPos(words: Uint32Array, pos: number): void {
    words[0] = pos >>> 0;
    words[1] = Math.floor(pos / 4294967296);
  }
  get consumerPos(): number {
    return this.consumer[1]! * 4294967296 + this.consumer[0]!;
  }
  private put(logical: number, byte: number): void {
    const o = logical & (this.size - 1);
    this.data[o] = byte;
  }
  private putHeader(at: number, word: number): void {
    for (let i = 0; i < 4; i++) this.put(at + i, (word >>> (8 * i)) & 0xff);
    for (let i = 4; i < 8; i++) this.put(at + i, 0);
  }
  /** Reserves and (unless busy) commits a record; returns its position. */
  write(payload: Uint8Array, flags = 0, lenOverride?: number): number {
    const at = this.prod;
    this.putHeader(at, (lenOverride ?? payload.length) | flags);
    payload.forEach((b, i) => this.put(at + 8 + i, b));
    this.prod += (payload.length + 8 + 7) & ~7;
    this.setPos(this.producer, this.prod);
    return at;
  }
  commit(at: number, len: number): void {
    this.putHeader(at, len);
  }
  reader(): RingBufferReader {
    return new RingBufferReader({ consumer: this.consumer, producer: this.producer, data: this.data, size: this.size });
  }
}

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (seed + i) & 0xff);

function drainAll(r: RingBufferReader, max = 1000): number[][] {
  const out: number[][] = [];
  r.drain((b, at, len) => out.push([...b.subarray(at, at + len)]), max);
  return out;
}

describe("RingBufferReader over plain memory", () => {
  test("delivers records in order, 8-byte aligned, and publishes the consumer position", () => {
    const ring = new FakeRing(256);
    const r = ring.reader();
    ring.write(bytes(5, 1));
    ring.write(bytes(8, 2));
    ring.write(bytes(13, 3));
    expect(r.pending()).toBe(16 + 16 + 24);
    expect(drainAll(r)).toEqual([[...bytes(5, 1)], [...bytes(8, 2)], [...bytes(13, 3)]]);
    expect(ring.consumerPos).toBe(56);
    expect(r.pending()).toBe(0);
  });

  test("a record that wraps at the end of the data area arrives whole", () => {
    const ring = new FakeRing(64, 48); // 16 bytes before the end: header + 8 payload bytes fit, the rest wraps
    const r = ring.reader();
    const payload = bytes(30, 7);
    ring.write(payload);
    ring.write(bytes(4, 9));
    const got = drainAll(r);
    expect(got).toEqual([[...payload], [...bytes(4, 9)]]);
    expect(ring.consumerPos).toBe(48 + 40 + 16);
  });

  test("wrapped records of every split, the header last in the area included, arrive whole and in order", () => {
    for (let start = 0; start < 64; start += 8) {
      const ring = new FakeRing(64, 1000 * 64 + start);
      const r = ring.reader();
      const got: number[][] = [];
      // Sizes chosen so records wrap at different offsets (payload split anywhere, or all of it
      // after the end when the header takes the area's last 8 bytes) and the scratch grows.
      for (const n of [1, 20, 7, 40, 3, 48, 13]) {
        ring.write(bytes(n, n + start));
        r.drain((b, at, len) => got.push([...b.subarray(at, at + len)]), 10);
        expect(got.at(-1)).toEqual([...bytes(n, n + start)]);
      }
      expect(got.length).toBe(7);
      expect(r.pending()).toBe(0);
    }
  });

  test("positions past 2^32 keep working (high word)", () => {
    const start = 2 ** 32 - 16;
    const ring = new FakeRing(64, start);
    const r = ring.reader();
    ring.write(bytes(20, 1));
    ring.write(bytes(3, 2));
    expect(drainAll(r)).toEqual([[...bytes(20, 1)], [...bytes(3, 2)]]);
    expect(ring.consumer[1]).toBe(1);
    expect(ring.consumerPos).toBe(start + 32 + 16);
  });

  test("discarded records are skipped but consumed", () => {
    const ring = new FakeRing(256);
    const r = ring.reader();
    ring.write(bytes(10, 1), RINGBUF_DISCARD);
    ring.write(bytes(6, 2));
    expect(drainAll(r)).toEqual([[...bytes(6, 2)]]);
    expect(ring.consumerPos).toBe(24 + 16);
  });

  test("a busy (reserved, uncommitted) record stops the drain until committed", () => {
    const ring = new FakeRing(256);
    const r = ring.reader();
    ring.write(bytes(4, 1));
    const busyAt = ring.write(bytes(12, 2), RINGBUF_BUSY);
    ring.write(bytes(4, 3));
    expect(drainAll(r)).toEqual([[...bytes(4, 1)]]);
    expect(ring.consumerPos).toBe(busyAt);
    ring.commit(busyAt, 12);
    expect(drainAll(r)).toEqual([[...bytes(12, 2)], [...bytes(4, 3)]]);
  });

  test("max bounds one drain; the rest comes on the next", () => {
    const ring = new FakeRing(256);
    const r = ring.reader();
    for (let i = 0; i < 5; i++) ring.write(bytes(3, i));
    expect(drainAll(r, 2).length).toBe(2);
    expect(drainAll(r, 10).length).toBe(3);
  });

  test("a handler that throws is counted and the record is not delivered again", () => {
    const ring = new FakeRing(256);
    const r = ring.reader();
    ring.write(bytes(4, 1));
    ring.write(bytes(4, 2));
    const seen: number[] = [];
    const n = r.drain((b, at) => {
      seen.push(b[at]!);
      if (b[at] === 1) throw new Error("handler bug");
    }, 100);
    expect(n).toBe(2);
    expect(seen).toEqual([1, 2]);
    expect(r.handlerErrors).toBe(1);
    expect(r.drain(() => seen.push(-1), 100)).toBe(0);
    expect(r.pending()).toBe(0);
  });

  test("a record length beyond the published data is counted and the reader resynchronises at the producer", () => {
    const ring = new FakeRing(256);
    const r = ring.reader();
    ring.write(bytes(4, 1));
    ring.write(bytes(4, 2), 0, 0x3fff0000); // corrupt length, far beyond the data area
    ring.write(bytes(4, 3));
    const got = drainAll(r);
    expect(got).toEqual([[...bytes(4, 1)]]);
    expect(r.corruptRecords).toBe(1);
    expect(r.corruptBytes).toBe(32);
    expect(ring.consumerPos).toBe(48);
    ring.write(bytes(4, 4));
    expect(drainAll(r)).toEqual([[...bytes(4, 4)]]);
  });

  test("rejects a size that is not a power of two or a short data view", () => {
    expect(() => new RingBufferReader({ consumer: new Uint32Array(2), producer: new Uint32Array(2), data: new Uint8Array(200), size: 100 })).toThrow();
    expect(() => new RingBufferReader({ consumer: new Uint32Array(2), producer: new Uint32Array(2), data: new Uint8Array(32), size: 64 })).toThrow();
  });
});
