/**
 * The seam between the kernel and the pipeline: anything that yields raw records. The live
 * ring buffer reader implements it, and so does the replay of a recorded capture (tests, bench).
 */
/**
 * One record: bytes [at, at + len) of `buf`, valid only during the call. Given as a place in the
 * reader's own memory rather than a view of it: a view per record was ~3 % of the agent's CPU
 * under load (bench/README.md).
 */
export type RecordHandler = (buf: Uint8Array, at: number, len: number) => void;

export interface EventSource {
  /** Calls `onRecord` for up to `max` available records, in order, and returns how many were delivered. */
  drain(onRecord: RecordHandler, max: number): number;
  /** Bytes waiting to be read (for the queue high-water mark). */
  pending(): number;
  /** Records whose handler threw (counted, not redelivered). */
  readonly handlerErrors?: number;
  /** Records whose length did not fit the published data (skipped). */
  readonly corruptRecords?: number;
  close(): void;
}

/**
 * Recorded captures: a sequence of [u32 little-endian length][record bytes] frames, as written
 * by `ebpf-tracer capture --record FILE`.
 */
export function encodeRecording(records: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const r of records) total += 4 + r.length;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let off = 0;
  for (const r of records) {
    dv.setUint32(off, r.length, true);
    out.set(r, off + 4);
    off += 4 + r.length;
  }
  return out;
}

/** Writes records to a recording file as they pass, buffered (capture --record). */
export class Recorder {
  private readonly sink: ReturnType<ReturnType<typeof Bun.file>["writer"]>;
  private readonly len = new Uint8Array(4);
  private readonly lenView = new DataView(this.len.buffer);
  constructor(path: string) {
    this.sink = Bun.file(path).writer({ highWaterMark: 1 << 20 });
  }
  /** The record is copied into the file buffer before this returns. */
  write = (rec: Uint8Array): void => {
    this.lenView.setUint32(0, rec.length, true);
    this.sink.write(this.len);
    this.sink.write(rec);
  };
  async end(): Promise<void> {
    await this.sink.end();
  }
}

export class ReplaySource implements EventSource {
  private off = 0;
  private readonly dv: DataView;
  constructor(private readonly bytes: Uint8Array) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  drain(onRecord: RecordHandler, max: number): number {
    let n = 0;
    while (n < max && this.off + 4 <= this.bytes.length) {
      const len = this.dv.getUint32(this.off, true);
      if (this.off + 4 + len > this.bytes.length) break; // torn tail
      onRecord(this.bytes, this.off + 4, len);
      this.off += 4 + len;
      n++;
    }
    return n;
  }
  pending(): number {
    return this.bytes.length - this.off;
  }
  rewind(): void {
    this.off = 0;
  }
  close(): void {}
}
