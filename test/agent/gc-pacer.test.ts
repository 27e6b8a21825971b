/** The heap pacer: asynchronous collections by default, a full one when the heap grew past the
 * last full collection's level by more than the threshold, at most one per interval. */
import { describe, expect, test } from "bun:test";
import { GcPacer, POLL_MS } from "../../src/agent/gc-pacer.ts";

const MB = 1024 * 1024;

function pacer(start: number) {
  const s = { heap: start, t: 0, full: 0, async: 0, afterFull: start };
  const p = new GcPacer(
    () => s.heap,
    () => { s.full++; s.t += 30; s.heap = s.afterFull; },
    () => { s.async++; },
    () => s.t,
    16 * MB,
    1500,
  );
  return { p, s };
}

describe("GcPacer", () => {
  test("below the growth threshold only asynchronous collections run", () => {
    const { p, s } = pacer(30 * MB);
    for (let i = 0; i < 10; i++) {
      s.t += 1000;
      s.heap += MB;
      p.poll(); // records were handled
      p.tick();
    }
    expect(s.full).toBe(0);
    expect(s.async).toBe(10);
    expect(p.stats()).toEqual({ GcFullCollections: 0, GcPauseMs: 0 });
  });

  test("an idle tick (no records since the last) asks for no asynchronous collection, but still runs a full one when due", () => {
    const { p, s } = pacer(30 * MB);
    s.t += 1000;
    p.tick();
    expect(s.async).toBe(0);
    s.t += 1000;
    p.poll(); // records were handled
    p.tick();
    expect(s.async).toBe(1);
    s.t += 2000;
    s.heap = 50 * MB;
    p.tick();
    expect(s.full).toBe(1);
  });

  test("past it a full collection runs, its pause is counted, and the level after it is the new base", () => {
    const { p, s } = pacer(30 * MB);
    s.t = 1000;
    s.heap = 47 * MB;
    s.afterFull = 31 * MB;
    p.tick();
    expect(s.full).toBe(1);
    expect(s.async).toBe(0);
    expect(p.stats()).toEqual({ GcFullCollections: 1, GcPauseMs: 30 });
    // 31 MB is the base now: 46 MB is within 16 MB of it
    s.t += 1000;
    s.heap = 46 * MB;
    p.tick();
    expect(s.full).toBe(1);
    s.t += 1000;
    s.heap = 48 * MB;
    p.tick();
    expect(s.full).toBe(2);
  });

  test("at most one full collection per interval, however fast the heap grows", () => {
    const { p, s } = pacer(30 * MB);
    s.afterFull = 60 * MB; // a live set that grew: the base follows it
    s.heap = 100 * MB;
    s.t = 10_000;
    p.tick();
    expect(s.full).toBe(1);
    s.heap = 200 * MB;
    s.t += 1000;
    p.poll(); // records were handled
    p.tick();
    expect(s.full).toBe(1);
    expect(s.async).toBe(1);
    s.t += 600;
    p.tick();
    expect(s.full).toBe(2);
  });

  test("a lower level seen between full collections lowers the base; a collection made elsewhere resets it", () => {
    const { p, s } = pacer(40 * MB);
    s.heap = 25 * MB;
    s.t = 1000;
    p.tick();
    s.heap = 42 * MB; // 17 MB above the 25 MB seen
    s.t = 2000;
    p.tick();
    expect(s.full).toBe(1);
    s.heap = 70 * MB;
    s.t = 5000;
    p.collected(); // e.g. the memory budget's collection: 70 MB is the base, and it just ran
    s.t = 5500;
    s.heap = 90 * MB;
    p.tick();
    expect(s.full).toBe(1);
  });
});

describe("GcPacer.poll", () => {
  test("reads the RSS at most every POLL_MS, collects between ticks when due, and tick then asks for no asynchronous one", () => {
    let reads = 0;
    const s = { heap: 30 * MB, t: 0, full: 0, async: 0 };
    const p = new GcPacer(() => { reads++; return s.heap; }, () => { s.full++; s.heap = 30 * MB; }, () => { s.async++; }, () => s.t, 16 * MB, 1500);
    reads = 0;
    s.t = 1000;
    for (let i = 0; i < 50; i++) p.poll();
    expect(reads).toBe(1);
    s.heap = 60 * MB;
    s.t += POLL_MS / 2;
    p.poll();
    expect(s.full).toBe(0);
    s.t += POLL_MS / 2 + 1;
    expect(p.poll()).toBe(true);
    expect(s.full).toBe(1);
    s.t += 2000;
    s.heap = 70 * MB;
    p.tick();
    expect(s.full).toBe(2);
    expect(s.async).toBe(0);
  });
});
