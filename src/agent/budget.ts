/**
 * The overhead budget: the agent measures what it costs (its own CPU, user + system, as a share
 * of one core; its resident memory) once a second and, when over budget, sheds load by
 * CONNECTION — a shed connection is left to the kernel to skip, so its exchanges are captured
 * whole or not at all. The sampling ratio in force is carried by every span; shed connections
 * and an estimate of the requests they carried are counted per process.
 *
 * Control: multiplicative decrease proportional to the overshoot, gentle increase when well under
 * budget; the ratio never drops below MIN_RATIO so some traffic is always seen. Near the memory
 * budget a garbage collection comes first (MemoryGuard). Per-target rate limits
 * (targets[].max_spans_per_second) use the same mechanism with a ratio per process.
 *
 * Falling behind (`behind()`), with or without a budget: when drains find the kernel's ring at
 * least half full for BEHIND_AFTER_MS, or the kernel reports records it could not write, the
 * agent is not keeping up with the events (a CPU quota throttles it, or the load needs more CPU
 * than it gets). Where the ring overflows the kernel drops records one by one: exchanges cut
 * anywhere, spans flagged with gaps. Shedding whole connections instead turns that loss into a
 * counted, even sample. The ratio then recovers as under a budget, one step a second, while no
 * tightening for falling behind happened in that second.
 *
 * Pure apart from the clock and measurement functions, which are injected.
 */
import { residentBytes } from "./gc-pacer.ts";

export const MIN_RATIO = 0.01;
/** Ring fill (share of its capacity) found at drains from which the agent may be falling behind:
 * the drain period keeps it at most a quarter full while the agent keeps up (poll-interval.ts). */
export const BEHIND_FILL = 0.5;
/** Under this fill the agent is keeping up: the BEHIND_AFTER_MS clock restarts, and a drain need
 * not read the kernel's lost-record count for behind(). */
export const BEHIND_LOW_FILL = BEHIND_FILL / 2;
/** How long the ring must stay at least BEHIND_FILL full (no drain finding it under a quarter)
 * before that counts as falling behind: a burst the agent absorbs is gone sooner. */
export const BEHIND_AFTER_MS = 100;
/** Least time between two tightenings for falling behind: the records already in the ring were
 * copied before the last one and still arrive for a while. */
export const BEHIND_EVERY_MS = 500;
/** A drop of the ring's fill since the last tightening (share of its capacity) that shows the
 * agent catching up: no further tightening then. */
export const BEHIND_PROGRESS = 0.05;
/** What one tightening multiplies the ratio by; BEHIND_FACTOR_FULL at three quarters full or more. */
export const BEHIND_FACTOR = 0.7;
export const BEHIND_FACTOR_FULL = 0.5;

export interface BudgetLimits {
  /** percent of one core (user + system); 0 = no CPU budget */
  cpuPercent: number;
  /** resident set size in MB; 0 = no memory budget */
  memoryMb: number;
}

export interface Usage {
  /** CPU used since the previous sample, percent of one core */
  cpuPercent: number;
  rssMb: number;
}

export interface ShedCounters {
  connections: number;
  /** requests not captured, estimated from the captured ones: each span captured at ratio r
   * stands for 1/r requests (unbiased however many requests a connection carries) */
  estimatedRequests: number;
}

/** Deterministic keep/shed for a ratio: keeps exactly ⌊n·ratio⌋ of n decisions in a row. */
class Stride {
  private acc = 0;
  keep(ratio: number): boolean {
    if (ratio >= 1) return true;
    this.acc += ratio;
    if (this.acc >= 1) {
      this.acc -= 1;
      return true;
    }
    return false;
  }
}

interface ProcState {
  limit: number;       // spans per second; 0 = none
  ratio: number;       // per-process ratio from the rate limit
  spans: number;       // spans emitted in the current second
  stride: Stride;
  shed: ShedCounters;
}

/** Why connections are shed: the budget (CPU or memory over it), the agent falling behind the
 * ring, or only a per-target rate limit (targets[].max_spans_per_second). */
export type ShedReason = "budget" | "behind" | "rate_limit";

/** What each reason is called in the log ("<text>: shedding connections") and in `status`. */
export const SHED_REASON_TEXT: Record<ShedReason, string> = {
  budget: "over the overhead budget",
  behind: "falling behind the kernel's events",
  rate_limit: "a target's max_spans_per_second",
};

export class OverheadBudget {
  /** ratio in force from the agent-wide budget */
  ratio = 1;
  shedding = false;
  /** tightenings because a drain found the ring at least BEHIND_FILL full */
  fallingBehind = 0;
  private lastBehindAt = -Infinity;
  /** since when drains have found the ring at least BEHIND_FILL full (-1: not now) */
  private highSince = -1;
  /** the ring's fill at the last tightening for falling behind, while it stays high (-1: none) */
  private behindFill = -1;
  /** the kernel's lost-record count at the last behind() that read it */
  private lostSeen = 0;
  /** a tightening for falling behind since the last sample(): no recovery step then */
  private behindSinceSample = false;
  /** what last lowered the agent-wide ratio */
  private loweredBy: "budget" | "behind" = "budget";
  /** why the shedding in progress started (for its "stop" event) */
  private reason: ShedReason = "budget";
  private readonly stride = new Stride();
  private readonly procs = new Map<number, ProcState>();
  readonly total: ShedCounters = { connections: 0, estimatedRequests: 0 };

  constructor(
    private limits: BudgetLimits,
    /** `detail`: the usage measured (reason "budget", and every "stop"), or the ring's fill in
     * percent (`ringFillPercent`, a "start" for reason "behind") */
    private readonly onChange: (event: "start" | "stop", ratio: number, detail: Record<string, number>, reason: ShedReason) => void = () => {},
  ) {}

  /** Why connections are shed now: the budget ("budget"), the agent falling behind the ring
   * ("behind"), only a per-target rate limit ("rate_limit"); undefined when every ratio is 1. */
  shedReason(): ShedReason | undefined {
    if (!this.shedding) return undefined;
    return this.ratio >= 1 ? "rate_limit" : this.loweredBy;
  }

  setLimits(l: BudgetLimits): void {
    this.limits = l;
  }

  setRateLimit(tgid: number, spansPerSecond: number | undefined): void {
    const limit = spansPerSecond ?? 0;
    const p = this.procs.get(tgid);
    if (p) p.limit = limit;
    else if (limit > 0) this.procs.set(tgid, this.newProc(limit));
  }

  forget(tgid: number): void {
    this.procs.delete(tgid);
  }

  private newProc(limit: number): ProcState {
    return { limit, ratio: 1, spans: 0, stride: new Stride(), shed: { connections: 0, estimatedRequests: 0 } };
  }

  /** The ratio a connection of `tgid` opened now is captured with. */
  ratioFor(tgid: number): number {
    const p = this.procs.get(tgid);
    return p ? this.ratio * p.ratio : this.ratio;
  }

  /**
   * Decides at a connection's open whether it is captured; returns the sampling ratio it is
   * captured with, or 0 when it is shed (then counted).
   */
  admit(tgid: number): number {
    const p = this.procs.get(tgid);
    const r = p ? this.ratio * p.ratio : this.ratio;
    if (r >= 1) return 1;
    if ((p ? p.stride : this.stride).keep(r)) return r;
    this.total.connections++;
    if (p) p.shed.connections++;
    return 0;
  }

  /** An open connection of `tgid` was shed after the ratio fell (counted like admit's). */
  shedOpen(tgid: number): void {
    this.total.connections++;
    const p = this.procs.get(tgid);
    if (p) p.shed.connections++;
  }

  /** A span was emitted for `tgid` (feeds the rate limits and the per-connection average). */
  spanEmitted(tgid: number, ratio: number): void {
    const p = this.procs.get(tgid);
    if (p) p.spans++;
    if (ratio < 1) {
      const unseen = 1 / ratio - 1;
      this.total.estimatedRequests += unseen;
      if (p) p.shed.estimatedRequests += unseen;
    }
  }

  /**
   * A drain found the kernel's ring `fill` full (share of its capacity) at `nowMs`; `lost` is the
   * kernel's count of records it could not write so far (NaN when not read: the caller reads it
   * only from BEHIND_LOW_FILL up). The agent-wide ratio falls (at most every
   * BEHIND_EVERY_MS) when the ring has stayed at least BEHIND_FILL full for BEHIND_AFTER_MS or
   * records are being lost; returns whether it did, and the caller then sheds open connections
   * (Pipeline.applySampling).
   */
  behind(fill: number, nowMs: number, lost: number): boolean {
    const losing = lost > this.lostSeen;
    if (lost >= 0) this.lostSeen = lost;
    if (fill >= BEHIND_FILL) {
      if (this.highSince < 0) this.highSince = nowMs;
    } else if (fill < BEHIND_LOW_FILL) {
      this.highSince = -1;
      this.behindFill = -1;
    }
    const sustained = this.highSince >= 0 && nowMs - this.highSince >= BEHIND_AFTER_MS;
    if (!(losing || sustained) || nowMs - this.lastBehindAt < BEHIND_EVERY_MS) return false;
    // Draining the records copied before the last tightening takes a while: a ring emptying by
    // BEHIND_PROGRESS since then is the last tightening working, not a reason for another.
    if (!losing && this.behindFill >= 0 && fill <= this.behindFill - BEHIND_PROGRESS) return false;
    this.lastBehindAt = nowMs;
    this.behindFill = fill;
    this.behindSinceSample = true;
    if (this.ratio <= MIN_RATIO) return false;
    this.fallingBehind++;
    this.ratio = Math.max(MIN_RATIO, this.ratio * (fill >= 0.75 ? BEHIND_FACTOR_FULL : BEHIND_FACTOR));
    this.loweredBy = "behind";
    const was = this.shedding;
    this.shedding = true;
    if (!was) {
      this.reason = "behind";
      this.onChange("start", this.ratio, { ringFillPercent: Math.round(fill * 100), ...(losing ? { recordsLost: lost } : {}) }, "behind");
    }
    return true;
  }

  /** Once a second: adjusts the ratios from the measured usage and the rate limits. */
  sample(u: Usage, elapsedS = 1): void {
    const over = Math.max(
      this.limits.cpuPercent > 0 ? u.cpuPercent / this.limits.cpuPercent : 0,
      this.limits.memoryMb > 0 ? u.rssMb / this.limits.memoryMb : 0,
    );
    const was = this.shedding;
    if (over > 1) {
      this.ratio = Math.max(MIN_RATIO, this.ratio * Math.min(0.9, 0.9 / over));
      this.loweredBy = "budget";
    } else if (over < 0.7 && this.ratio < 1 && !this.behindSinceSample) {
      this.ratio = Math.min(1, this.ratio * 1.25 + 0.01);
    }
    this.behindSinceSample = false;
    for (const p of this.procs.values()) {
      if (p.limit <= 0) { p.ratio = 1; p.spans = 0; continue; }
      // spans seen are the kept share: what would have come at ratio 1 is spans / ratio
      const rate = p.spans / elapsedS;
      const unsampled = rate / Math.max(p.ratio * this.ratio, MIN_RATIO);
      if (unsampled > p.limit) p.ratio = Math.max(MIN_RATIO, Math.min(1, p.limit / unsampled));
      else if (rate < 0.7 * p.limit) p.ratio = Math.min(1, p.ratio * 1.25 + 0.01);
      p.spans = 0;
    }
    // after the rate limits' ratios: a limit reached in this second sheds from now on
    this.shedding = this.ratio < 1 || [...this.procs.values()].some((p) => p.ratio < 1);
    if (this.shedding && !was) this.reason = this.shedReason()!;
    const detail = { cpuPercent: Math.round(u.cpuPercent * 10) / 10, rssMb: Math.round(u.rssMb) };
    if (this.shedding !== was) this.onChange(this.shedding ? "start" : "stop", this.ratio, detail, this.reason);
  }

  perProcess(): Map<number, ShedCounters & { ratio: number }> {
    const out = new Map<number, ShedCounters & { ratio: number }>();
    for (const [tgid, p] of this.procs) out.set(tgid, { ...p.shed, ratio: this.ratio * p.ratio });
    return out;
  }
}

/** This process's resident set size in MB. */
function rssMb(): number {
  return residentBytes() / (1024 * 1024);
}

/**
 * Memory first gets a collection, then shedding. Most of the agent's RSS above its live set is
 * garbage its JavaScript heap has not collected yet (bench/README.md, "Memory"), and shedding
 * connections would not give that back. So once RSS reaches NEAR_SHARE of `budget.memory_mb`,
 * a full synchronous collection runs first (at most one per COLLECT_EVERY_MS: each stops the
 * drain for a few ms) and RSS is measured again; only what remains over the budget sheds.
 * Returns the usage to judge the budget by. `collect` and `rss` are injected for tests.
 */
export class MemoryGuard {
  static readonly NEAR_SHARE = 0.8;
  static readonly COLLECT_EVERY_MS = 2000;
  /** full collections run because RSS came near the budget */
  collections = 0;
  private lastAt = -Infinity;

  constructor(
    private readonly collect: () => void = () => Bun.gc(true),
    private readonly rss: () => number = rssMb,
    private readonly now: () => number = () => performance.now(),
  ) {}

  check(u: Usage, memoryMb: number): Usage {
    if (memoryMb <= 0 || u.rssMb < MemoryGuard.NEAR_SHARE * memoryMb) return u;
    const t = this.now();
    if (t - this.lastAt < MemoryGuard.COLLECT_EVERY_MS) return u;
    this.lastAt = t;
    this.collect();
    this.collections++;
    return { ...u, rssMb: this.rss() };
  }
}

/**
 * Measures this process: CPU since the last call (percent of one core: user + system, plus the
 * run time of its BPF programs where `bpfRunTimeNs` counts it — the kernel does while
 * kernel.bpf_stats_enabled is 1; that time is spent in the traced processes, on the agent's
 * behalf) and RSS.
 */
export function selfUsage(bpfRunTimeNs: () => bigint = () => 0n): () => Usage {
  let last = process.cpuUsage();
  let lastBpf = bpfRunTimeNs();
  let lastAt = performance.now();
  return () => {
    const now = performance.now();
    const cur = process.cpuUsage();
    const bpf = bpfRunTimeNs();
    const usedUs = cur.user - last.user + cur.system - last.system + Number(bpf - lastBpf) / 1000;
    const cpuPercent = (usedUs / 1000 / Math.max(1, now - lastAt)) * 100;
    last = cur;
    lastBpf = bpf;
    lastAt = now;
    return { cpuPercent, rssMb: rssMb() };
  };
}
