import { describe, expect, test } from "bun:test";
import { FILL_SHARE, nextPollMs, POLL_MAX_MS, POLL_MIN_MS } from "../../src/agent/poll-interval.ts";

const MB = 1024 * 1024;

describe("nextPollMs", () => {
  test("nothing arrived (idle), or no capacity known: the longest sleep", () => {
    expect(nextPollMs(0, 100, 8 * MB)).toBe(POLL_MAX_MS);
    expect(nextPollMs(5000, 100, 0)).toBe(POLL_MAX_MS);
    expect(nextPollMs(Number.NaN, 100, 8 * MB)).toBe(POLL_MAX_MS);
  });

  test("a saturating keep-alive load (~30 MB/s) into the default 8 MiB ring keeps the longest sleep", () => {
    // 3 MB in 100 ms: a quarter of 8 MiB lasts ~70 ms at that rate
    const ms = nextPollMs(3 * MB, 100, 8 * MB);
    expect(ms).toBeLessThan(POLL_MAX_MS);
    expect(ms).toBe(Math.floor((8 * MB * FILL_SHARE) / (3 * MB / 100)));
    // at the sleep chosen, the ring is at most a quarter full when the reader wakes
    expect((3 * MB / 100) * ms).toBeLessThanOrEqual(8 * MB * FILL_SHARE);
  });

  test("faster arrival shortens the sleep, down to the floor", () => {
    const a = nextPollMs(1 * MB, 100, 8 * MB);
    const b = nextPollMs(4 * MB, 100, 8 * MB);
    expect(b).toBeLessThan(a);
    expect(nextPollMs(64 * MB, 10, 8 * MB)).toBe(POLL_MIN_MS);
  });

  test("a smaller ring sleeps shorter at the same rate", () => {
    expect(nextPollMs(1 * MB, 100, 1 * MB)).toBeLessThan(nextPollMs(1 * MB, 100, 8 * MB));
  });

  test("an elapsed time of zero does not divide by zero", () => {
    expect(nextPollMs(1000, 0, 8 * MB)).toBe(POLL_MAX_MS);
  });
});
