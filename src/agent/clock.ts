/**
 * Maps the kernel's CLOCK_MONOTONIC timestamps to Unix epoch nanoseconds. The offset is read
 * once and refreshed by the caller (e.g. with the stats tick) so NTP steps are followed.
 */
import { clockNs } from "../kernel/libbpf-ffi.ts";

export class MonoClock {
  private offset = 0n;
  constructor() {
    this.refresh();
  }
  refresh(): void {
    const a = clockNs(1);
    const r = clockNs(0);
    const b = clockNs(1);
    this.offset = r - (a + b) / 2n;
  }
  toWallNs = (monoNs: bigint): bigint => monoNs + this.offset;
}
