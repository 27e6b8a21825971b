import { describe, expect, test } from "bun:test";
import { MIN_RATIO, MemoryGuard, OverheadBudget, selfUsage, type Usage } from "../../src/agent/budget.ts";

describe("overhead budget", () => {
  test("under budget nothing is shed and the ratio stays 1", () => {
    const b = new OverheadBudget({ cpuPercent: 5, memoryMb: 0 });
    for (let s = 0; s < 10; s++) b.sample({ cpuPercent: 2, rssMb: 90 });
    expect(b.ratio).toBe(1);
    expect([...Array(100)].map(() => b.admit(7)).every((r) => r === 1)).toBe(true);
    expect(b.total.connections).toBe(0);
  });

  test("over budget the ratio falls with the overshoot; connections are shed by a exact stride and counted", () => {
    const events: string[] = [];
    const b = new OverheadBudget({ cpuPercent: 5, memoryMb: 0 }, (e, r) => events.push(`${e} ${r.toFixed(2)}`));
    b.sample({ cpuPercent: 20, rssMb: 90 });
    expect(b.ratio).toBeCloseTo(0.225, 5);
    const decisions = [...Array(1000)].map(() => b.admit(7));
    const kept = decisions.filter((r) => r > 0);
    expect(Math.abs(kept.length - 225)).toBeLessThanOrEqual(1); // ⌊n·ratio⌋ up to float rounding
    expect(new Set(kept)).toEqual(new Set([b.ratio]));
    expect(b.total.connections).toBe(1000 - kept.length);
    expect(events).toEqual(["start 0.23"]);
  });

  test("it recovers when back under budget, and says so once", () => {
    const events: string[] = [];
    const b = new OverheadBudget({ cpuPercent: 5, memoryMb: 0 }, (e) => events.push(e));
    b.sample({ cpuPercent: 50, rssMb: 0 });
    for (let s = 0; s < 40; s++) b.sample({ cpuPercent: 1, rssMb: 0 });
    expect(b.ratio).toBe(1);
    expect(events).toEqual(["start", "stop"]);
  });

  test("the ratio never goes below the floor", () => {
    const b = new OverheadBudget({ cpuPercent: 1, memoryMb: 0 });
    for (let s = 0; s < 100; s++) b.sample({ cpuPercent: 100, rssMb: 0 });
    expect(b.ratio).toBe(MIN_RATIO);
  });

  test("memory over budget sheds too", () => {
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 100 });
    b.sample({ cpuPercent: 90, rssMb: 150 });
    expect(b.ratio).toBeLessThan(1);
  });

  test("a per-process rate limit converges near the limit and leaves other processes alone", () => {
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 0 });
    b.setRateLimit(1, 100);
    // 1,000 connections/s of one exchange each for process 1, 50/s for process 2
    for (let s = 0; s < 20; s++) {
      for (let i = 0; i < 1000; i++) { const r = b.admit(1); if (r > 0) b.spanEmitted(1, r); }
      for (let i = 0; i < 50; i++) { const r = b.admit(2); if (r > 0) b.spanEmitted(2, r); }
      b.sample({ cpuPercent: 0, rssMb: 0 });
    }
    const p1 = b.perProcess().get(1)!;
    let kept = 0;
    for (let i = 0; i < 1000; i++) if (b.admit(1) > 0) kept++;
    expect(kept).toBeGreaterThanOrEqual(90);
    expect(kept).toBeLessThanOrEqual(110);
    expect(b.ratioFor(2)).toBe(1);
    expect(p1.connections).toBeGreaterThan(15_000);
    // one exchange per connection: captured + estimated shed ≈ requests made
    expect(Math.abs(p1.estimatedRequests / p1.connections - 1)).toBeLessThan(0.05);
  });
});

describe("selfUsage", () => {
  test("BPF run time counted by the kernel is added to the agent's CPU (a sleeping agent shows only it)", async () => {
    let bpfNs = 5_000_000_000n; // what the programs had run before: only deltas count
    const usage = selfUsage(() => bpfNs);
    const started = performance.now();
    await Bun.sleep(200);
    bpfNs += 100_000_000n; // 100 ms of BPF time in the traced processes
    const u = usage();
    const elapsed = performance.now() - started;
    // 100 ms over `elapsed` ms of wall time, plus the little the sleep itself cost
    expect(u.cpuPercent).toBeGreaterThanOrEqual((100 / elapsed) * 100 - 1);
    expect(u.cpuPercent).toBeLessThan((100 / elapsed) * 100 + 25);
    await Bun.sleep(100);
    expect(usage().cpuPercent).toBeLessThan(25); // no BPF time since
  });

  test("without a BPF counter: user + system time only", async () => {
    const usage = selfUsage();
    await Bun.sleep(100);
    expect(usage().cpuPercent).toBeLessThan(25);
  });
});

describe("MemoryGuard: a collection before shedding for memory", () => {
  function guard(rssAfter: number) {
    let t = 0;
    const calls: number[] = [];
    const g = new MemoryGuard(() => calls.push(t), () => rssAfter, () => t);
    return { g, calls, at: (ms: number) => { t = ms; } };
  }
  const u = (rssMb: number): Usage => ({ cpuPercent: 1, rssMb });

  test("below 80 % of the budget, or without one, nothing runs and the usage is unchanged", () => {
    const { g, calls } = guard(10);
    expect(g.check(u(79), 100)).toEqual(u(79));
    expect(g.check(u(500), 0)).toEqual(u(500));
    expect(calls).toEqual([]);
  });

  test("near or over the budget it collects and the budget sees the RSS measured after", () => {
    const { g, calls, at } = guard(70);
    at(5000);
    expect(g.check(u(130), 100)).toEqual(u(70));
    expect(calls).toEqual([5000]);
    expect(g.collections).toBe(1);
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 100 });
    b.sample(g.check(u(130), 100)); // within 2 s of the last collection: judged as measured
    expect(b.ratio).toBeLessThan(1);
    at(7000);
    const b2 = new OverheadBudget({ cpuPercent: 0, memoryMb: 100 });
    b2.sample(g.check(u(130), 100));
    expect(b2.ratio).toBe(1); // collected down to 70 MB: nothing shed
    expect(g.collections).toBe(2);
  });

  test("what a collection does not give back still sheds", () => {
    const { g } = guard(125);
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 100 });
    b.sample(g.check(u(130), 100));
    expect(b.ratio).toBeLessThan(1);
    expect(g.collections).toBe(1);
  });
});

describe("falling behind the ring", () => {
  const none = NaN; // the lost count, not read while the ring is under a quarter full

  test("a ring half full for 100 ms, not a moment, tightens the ratio: 0.7, or 0.5 from three quarters; at most every 0.5 s", () => {
    const events: string[] = [];
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 0 }, (e, r, d, why) => events.push(`${e} ${why} ${r} ${JSON.stringify(d)}`));
    expect(b.behind(0.2, 0, 0)).toBe(false);
    expect(b.behind(0.6, 10, 0)).toBe(false); // a burst: high for less than BEHIND_AFTER_MS
    expect(b.behind(0.1, 50, none)).toBe(false); // gone again: the clock restarts
    expect(b.behind(0.6, 60, 0)).toBe(false);
    expect(b.behind(0.6, 159, 0)).toBe(false);
    expect(b.behind(0.6, 160, 0)).toBe(true);
    expect(b.ratio).toBeCloseTo(0.7, 10);
    expect(b.shedding).toBe(true);
    expect(b.fallingBehind).toBe(1);
    expect(events).toEqual(['start behind 0.7 {"ringFillPercent":60}']);
    expect(b.behind(0.8, 400, 0)).toBe(false); // within BEHIND_EVERY_MS of the last step
    expect(b.behind(0.8, 660, 0)).toBe(true); // fuller than at the last step: again, halved
    expect(b.ratio).toBeCloseTo(0.35, 10);
    expect(b.behind(0.7, 1200, 0)).toBe(false); // emptying since the last step (0.8 → 0.7): it works
    expect(b.behind(0.78, 1300, 0)).toBe(true); // not emptying
    expect(b.ratio).toBeCloseTo(0.175, 10);
    expect(events.length).toBe(1);
  });

  test("records the kernel could not write tighten at once, whatever the fill", () => {
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 0 });
    expect(b.behind(0.3, 0, 100)).toBe(true); // lost 100 since the start
    expect(b.ratio).toBeCloseTo(0.7, 10);
    expect(b.behind(0.3, 600, 100)).toBe(false); // no new loss, not high
    expect(b.behind(0.3, 700, 150)).toBe(true);
    expect(b.behind(0.1, 1300, none)).toBe(false);
  });

  test("the ratio recovers a step a second only in seconds without a tightening, and says so once back at 1", () => {
    const events: string[] = [];
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 0 }, (e, _r, _d, why) => events.push(`${e} ${why}`));
    b.behind(0.9, 0, 0);
    b.behind(0.9, 100, 0);
    expect(b.ratio).toBeCloseTo(0.5, 10);
    b.sample({ cpuPercent: 0, rssMb: 0 }); // the second of the tightening: no step up
    expect(b.ratio).toBeCloseTo(0.5, 10);
    b.sample({ cpuPercent: 0, rssMb: 0 });
    expect(b.ratio).toBeCloseTo(0.635, 10);
    for (let s = 0; s < 5; s++) b.sample({ cpuPercent: 0, rssMb: 0 });
    expect(b.ratio).toBe(1);
    expect(b.shedding).toBe(false);
    expect(events).toEqual(["start behind", "stop behind"]);
    expect(b.shedReason()).toBeUndefined();
  });

  test("the reason shedding is in force: falling behind, the budget, a rate limit alone", () => {
    const b = new OverheadBudget({ cpuPercent: 5, memoryMb: 0 });
    expect(b.shedReason()).toBeUndefined();
    b.behind(0.9, 0, 1);
    expect(b.shedReason()).toBe("behind");
    const c = new OverheadBudget({ cpuPercent: 5, memoryMb: 0 });
    c.sample({ cpuPercent: 50, rssMb: 0 });
    expect(c.shedReason()).toBe("budget");
    const d = new OverheadBudget({ cpuPercent: 0, memoryMb: 0 });
    d.setRateLimit(9, 10);
    for (let i = 0; i < 1000; i++) d.spanEmitted(9, 1);
    d.sample({ cpuPercent: 0, rssMb: 0 });
    expect(d.shedReason()).toBe("rate_limit");
  });

  test("at the floor it stops counting steps", () => {
    const b = new OverheadBudget({ cpuPercent: 0, memoryMb: 0 });
    for (let t = 0; t < 100; t++) b.behind(0.9, t * 1000, t);
    expect(b.ratio).toBe(MIN_RATIO);
    expect(b.fallingBehind).toBeLessThan(100);
  });
});
