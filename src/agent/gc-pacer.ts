/**
 * Keeps the JavaScript heap near its live set under load.
 *
 * Why: JSC's young-generation collections promote whatever is alive at that instant (spans in an
 * open batch, batch bodies in flight), and such objects die soon after in the old generation,
 * which only a full collection reclaims. Left to its own heuristics, JSC let the heap grow from
 * ~30 MB to 60–70 MB (and RSS past 190 MB) between full collections under saturating `run` load
 * (bench/memory.ts). Asynchronous collections alone (Bun.gc(false)) did not stop that growth.
 *
 * Contract: `tick()` is called about once a second and `poll()` after each batch of records the
 * agent handled (as often as convenient). When the
 * resident set (what a memory budget and a fleet operator see; ~10 µs to read) has grown by more
 * than `growthBytes` since the last full collection, a full synchronous one runs (30–40 ms with
 * the agent's ~30 MB live set; the ring buffer holds far more than that pause) and the RSS
 * measured after it is the new base. At most one full collection per `minIntervalMs`; otherwise
 * `tick()` asks for an asynchronous one if `poll()` was called since the last tick (an idle agent
 * allocates next to nothing: the collection per second was ~15 % of its idle CPU). Counted:
 * `GcFullCollections`, `GcPauseMs` (stats line, status, /metrics).
 */
export interface ResidentReader {
  /** bytes resident */
  (): number;
}

export const GROWTH_BYTES = 16 * 1024 * 1024;
export const MIN_INTERVAL_MS = 1500;
/** poll() reads the RSS at most this often (a read costs ~10-20 µs). The agent drains the ring
 * in bursts of up to 100 ms of records (poll-interval.ts) and polls between slices of a burst:
 * a longer limit would let a burst's garbage grow past the threshold before it is seen. */
export const POLL_MS = 25;

export function residentBytes(): number {
  return process.memoryUsage.rss();
}

export class GcPacer {
  fullCollections = 0;
  pauseMs = 0;
  private base: number;
  private lastFullAt = -Infinity;
  private lastPollAt = -Infinity;
  /** poll() was called since the last tick: records were handled */
  private polled = false;

  constructor(
    private readonly resident: ResidentReader = residentBytes,
    private readonly full: () => void = () => Bun.gc(true),
    private readonly async: () => void = () => Bun.gc(false),
    private readonly now: () => number = () => performance.now(),
    private readonly growthBytes = GROWTH_BYTES,
    private readonly minIntervalMs = MIN_INTERVAL_MS,
  ) {
    this.base = resident();
  }

  /** The once-a-second call: a full collection when due, else an asynchronous one if records
   * were handled (poll() called) since the last tick. */
  tick(): void {
    const busy = this.polled;
    this.polled = false;
    if (!this.poll(true) && busy) this.async();
  }

  /**
   * Called as often as the caller likes (the ring's drain loop after each batch): reads the RSS
   * at most every `POLL_MS` and runs a full collection when due. Under a burst (load starting,
   * a backlog in the ring) the heap grows tens of MB within a second, faster than `tick` sees.
   * Returns whether it collected.
   */
  poll(force = false): boolean {
    if (!force) this.polled = true;
    const t = this.now();
    if (!force && t - this.lastPollAt < POLL_MS) return false;
    this.lastPollAt = t;
    const h = this.resident();
    // young collections may free more than the last full one left: the lowest level seen is the
    // best estimate of the live set
    if (h < this.base) this.base = h;
    if (h - this.base <= this.growthBytes || t - this.lastFullAt < this.minIntervalMs) return false;
    this.full();
    const done = this.now();
    this.fullCollections++;
    this.pauseMs += done - t;
    this.lastFullAt = done;
    this.base = this.resident();
    return true;
  }

  /** A full collection for someone else (the memory budget, which counts its own): runs it and
   * takes what it leaves as the base. */
  collectFull(): void {
    this.full();
    this.collected();
  }

  /** After a collection made elsewhere: the RSS measured now is the base. */
  collected(): void {
    this.base = this.resident();
    this.lastFullAt = this.now();
  }

  stats(): { GcFullCollections: number; GcPauseMs: number } {
    return { GcFullCollections: this.fullCollections, GcPauseMs: Math.round(this.pauseMs) };
  }
}
