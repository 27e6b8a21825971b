/**
 * Reads the BPF ring buffer directly from shared memory, without libbpf's ring_buffer__poll
 * (which blocks the event loop and cannot call back into JS from another thread).
 *
 * Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (read-write for us); page 1 holds
 * producer_pos; the data area follows page 1. Each record starts with an 8-byte header: u32 len
 * with BUSY (bit 31) and DISCARD (bit 30) flags, u32 page offset; records are 8-byte aligned, so
 * a header never straddles the end of the data area but a record's payload may.
 *
 * The kernel offers the data area twice in a row so that wrapped records read contiguously; we
 * map it once. Every mapped page counts in the agent's RSS, and JSC counts an ArrayBuffer over
 * the mapping as memory it owns when it sizes its heap: the second copy cost twice the ring's
 * size in RSS under load (measured: bench/README.md, "Memory"). The rare record that wraps is
 * joined in a scratch buffer instead. The reader works on views of that memory (RingViews), so
 * tests drive it over plain buffers laid out the same way.
 *
 * Memory ordering: we use plain typed-array loads and stores. Atomics on the read-only producer
 * mapping crash Bun once JIT-compiled (it emits lock cmpxchg), and x86-64 loads/stores are
 * ordered enough here: the kernel publishes producer_pos with a release store after writing the
 * record header, and only reads consumer_pos to compute free space.
 *
 * Contract: a handler that throws does not stop the reader; the record counts as consumed and in
 * `handlerErrors`. A record whose length does not fit the published data is counted in
 * `corruptRecords`, and the reader skips to the producer position it read (always a record
 * boundary: the kernel advances it a whole record at a time), never reading outside the data area.
 */
import { Mapping, PROT_READ, PROT_WRITE, pageSize } from "./libbpf-ffi.ts";
import type { EventSource, RecordHandler } from "./event-source.ts";
import { log } from "../log/log.ts";

export const RINGBUF_BUSY = 0x80000000;
export const RINGBUF_DISCARD = 0x40000000;
const RINGBUF_HDR = 8;

/** The ring's memory as typed views; `data` is the data area, `size` bytes, seen once. */
export interface RingViews {
  /** consumer_pos as two u32 words (low, high), written by the reader */
  consumer: Uint32Array;
  /** producer_pos as two u32 words (low, high) */
  producer: Uint32Array;
  data: Uint8Array;
  size: number;
}

export class RingBufferReader implements EventSource {
  private readonly cons32: Uint32Array;
  private readonly prod32: Uint32Array;
  private readonly data: Uint8Array;
  private readonly data32: Uint32Array;
  private readonly mask: number;
  /** where a record that wraps at the end of the data area is joined (grown on demand) */
  private scratch = new Uint8Array(0);
  readonly size: number;
  /** records whose handler threw (consumed anyway) */
  handlerErrors = 0;
  /** times a record length did not fit the published data (the reader skipped to the producer) */
  corruptRecords = 0;
  /** bytes skipped by those resynchronisations */
  corruptBytes = 0;

  constructor(views: RingViews, private readonly onClose: () => void = () => {}) {
    const size = views.size;
    if (size <= 0 || size & (size - 1)) throw new Error("ring buffer size must be a power of two");
    if (views.data.length < size || views.data.byteOffset & 7) throw new Error("ring data view must be 8-byte aligned and size bytes long");
    this.size = size;
    this.cons32 = views.consumer;
    this.prod32 = views.producer;
    this.data = views.data;
    this.data32 = new Uint32Array(views.data.buffer, views.data.byteOffset, size / 4);
    this.mask = size - 1;
  }

  /** Maps a BPF_MAP_TYPE_RINGBUF map of `size` data bytes (its data area once: see above). */
  static map(mapFd: number, size: number): RingBufferReader {
    const page = pageSize();
    const consumer = Mapping.of(mapFd, page, PROT_READ | PROT_WRITE, 0);
    let producer: Mapping;
    try {
      producer = Mapping.of(mapFd, page + size, PROT_READ, page);
    } catch (e) {
      consumer.unmap();
      throw e;
    }
    return new RingBufferReader(
      {
        consumer: new Uint32Array(consumer.buffer, 0, 2),
        producer: new Uint32Array(producer.buffer, 0, 2),
        data: new Uint8Array(producer.buffer, page, size),
        size,
      },
      () => {
        consumer.unmap();
        producer.unmap();
      },
    );
  }

  private producerPos(): number {
    // A torn read could pair a new high word with an old low word; re-read until stable.
    for (;;) {
      const hi = this.prod32[1]!;
      const lo = this.prod32[0]!;
      if (this.prod32[1] === hi) return hi * 4294967296 + lo;
    }
  }

  private consumerPos(): number {
    return this.cons32[1]! * 4294967296 + this.cons32[0]!;
  }

  /** Writes low then high word: a reader in between sees a smaller position, which only makes
   * the kernel more conservative about free space, never lets it overwrite unread data. */
  private publish(pos: number): void {
    this.cons32[0] = pos >>> 0;
    this.cons32[1] = Math.floor(pos / 4294967296);
  }

  pending(): number {
    return this.producerPos() - this.consumerPos();
  }

  drain(onRecord: RecordHandler, max: number): number {
    let cons = this.consumerPos();
    const prod = this.producerPos();
    let n = 0;
    while (cons < prod && n < max) {
      const at = cons & this.mask; // cons fits 53 bits; & works on the low 32, which is what we want for sizes < 4 GiB
      const word = this.data32[at >>> 2]!;
      if (word & RINGBUF_BUSY) break; // reserved but not committed yet
      const len = word & 0x3fffffff; // clear BUSY and DISCARD
      const next = cons + ((len + RINGBUF_HDR + 7) & ~7);
      if (next > prod) {
        // Not a record the kernel could have written: skip everything published so far.
        this.corruptRecords++;
        this.corruptBytes += prod - cons;
        if (this.corruptRecords === 1) log.error("BPF ring buffer record length out of bounds; skipped to the producer position", { len, at, unread: prod - cons });
        this.publish(prod);
        return n;
      }
      if (!(word & RINGBUF_DISCARD)) {
        const from = at + RINGBUF_HDR;
        try {
          if (from + len <= this.size) onRecord(this.data, from, len);
          else onRecord(this.joinWrapped(from, len), 0, len);
        } catch (e) {
          this.handlerErrors++;
          if (this.handlerErrors === 1) log.error("event handler failed; record skipped (counted in handler errors)", { error: String((e as Error)?.stack ?? e) });
        }
        n++;
      }
      cons = next;
      this.publish(cons);
    }
    return n;
  }

  /** A record whose payload runs past the end of the data area, made contiguous. */
  private joinWrapped(from: number, len: number): Uint8Array {
    if (this.scratch.length < len) this.scratch = new Uint8Array(Math.max(len, 2 * this.scratch.length));
    const head = this.size - from; // header at most size - 8, so from <= size
    this.scratch.set(this.data.subarray(from, this.size), 0);
    this.scratch.set(this.data.subarray(0, len - head), head);
    return this.scratch.subarray(0, len);
  }

  close(): void {
    this.onClose();
  }
}
