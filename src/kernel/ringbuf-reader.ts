/**
 * Reads the BPF ring buffer directly from shared memory, without libbpf's ring_buffer__poll
 * (which blocks the event loop and cannot call back into JS from another thread).
 *
 * Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (read-write for us); page 1 holds
 * producer_pos; the data area follows page 1 and is mapped twice in a row by the kernel, so a
 * record that wraps is still contiguous in our view. Each record starts with an 8-byte header:
 * u32 len with BUSY (bit 31) and DISCARD (bit 30) flags, u32 page offset; records are 8-byte
 * aligned.
 *
 * Memory ordering: we use plain typed-array loads and stores. Atomics on the read-only producer
 * mapping crash Bun once JIT-compiled (it emits lock cmpxchg), and x86-64 loads/stores are
 * ordered enough here: the kernel publishes producer_pos with a release store after writing the
 * record header, and only reads consumer_pos to compute free space.
 */
import { Mapping, PROT_READ, PROT_WRITE, pageSize } from "./libbpf-ffi.ts";
import type { EventSource } from "./event-source.ts";

const BUSY = 0x80000000;
const DISCARD = 0x40000000;
const HDR = 8;

export class RingBufferReader implements EventSource {
  private readonly consumer: Mapping;
  private readonly producer: Mapping;
  private readonly cons32: Uint32Array;
  private readonly prod32: Uint32Array;
  private readonly data: Uint8Array;
  private readonly data32: Uint32Array;
  private readonly mask: number;
  private readonly dataOff: number;

  constructor(mapFd: number, readonly size: number) {
    if (size & (size - 1)) throw new Error("ring buffer size must be a power of two");
    const page = pageSize();
    this.consumer = Mapping.of(mapFd, page, PROT_READ | PROT_WRITE, 0);
    this.producer = Mapping.of(mapFd, page + 2 * size, PROT_READ, page);
    this.cons32 = new Uint32Array(this.consumer.buffer, 0, 2);
    this.prod32 = new Uint32Array(this.producer.buffer, 0, 2);
    this.dataOff = page;
    this.data = new Uint8Array(this.producer.buffer, page, 2 * size);
    this.data32 = new Uint32Array(this.producer.buffer, page, (2 * size) / 4);
    this.mask = size - 1;
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

  drain(onRecord: (rec: Uint8Array) => void, max: number): number {
    let cons = this.consumerPos();
    const prod = this.producerPos();
    let n = 0;
    while (cons < prod && n < max) {
      const at = cons & this.mask; // cons fits 53 bits; & works on the low 32, which is what we want for sizes < 4 GiB
      const word = this.data32[at >>> 2]!;
      if (word & BUSY) break; // reserved but not committed yet
      const len = word & 0x3fffffff; // clear BUSY and DISCARD
      if (!(word & DISCARD)) {
        onRecord(this.data.subarray(at + HDR, at + HDR + len));
        n++;
      }
      cons += (len + HDR + 7) & ~7;
      this.publish(cons);
    }
    return n;
  }

  close(): void {
    this.consumer.unmap();
    this.producer.unmap();
  }
}
