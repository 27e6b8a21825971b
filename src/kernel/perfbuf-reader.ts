/**
 * EventSource over per-CPU perf buffers (kernels before 5.8, or `bpf.buffer: perf`). Each drain
 * consumes all CPUs and delivers the records in timestamp order, so that the bytes of one
 * connection reach the pipeline in the order the syscalls happened even when its threads moved
 * between CPUs. A handler that throws is counted in `handlerErrors`; the record is not redelivered.
 */
import { PerfBuffer } from "./libbpf-ffi.ts";
import { LAYOUT } from "./event-layout.ts";
import type { EventSource, RecordHandler } from "./event-source.ts";
import { log } from "../log/log.ts";

export class PerfBufferReader implements EventSource {
  private readonly pb: PerfBuffer;
  private queue: Uint8Array[] = [];
  private at = 0;
  /** records whose handler threw (consumed anyway) */
  handlerErrors = 0;

  constructor(mapFd: number, pagesPerCpu: number) {
    this.pb = new PerfBuffer(mapFd, pagesPerCpu, LAYOUT.event_header.ts_ns);
  }

  drain(onRecord: RecordHandler, max: number): number {
    if (this.at >= this.queue.length) {
      this.queue = this.pb.consume();
      this.at = 0;
    }
    let n = 0;
    while (n < max && this.at < this.queue.length) {
      try {
        const rec = this.queue[this.at++]!;
        onRecord(rec, 0, rec.length);
      } catch (e) {
        this.handlerErrors++;
        if (this.handlerErrors === 1) log.error("event handler failed; record skipped (counted in handler errors)", { error: String((e as Error)?.stack ?? e) });
      }
      n++;
    }
    return n;
  }

  pending(): number {
    let bytes = 0;
    for (let i = this.at; i < this.queue.length; i++) bytes += this.queue[i]!.length;
    return bytes;
  }

  close(): void {
    this.pb.close();
  }
}
