/**
 * Ctrl-C on `capture` must feel instant: SIGINT to process exit of an idle capture, through the
 * compiled binary. The kernel-side detach continues in a background process after exit; the
 * test also checks that it finishes (its kretprobe events are removed) in tracepoint and kprobe
 * mode.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, rootSkipReason } from "../support/tracer.ts";

const KPROBE_EVENTS = ["/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"].find((p) => existsSync(p));
const skip = rootSkipReason();
if (skip) console.warn(`skipping capture exit tests: ${skip}`);
else if (!KPROBE_EVENTS) console.warn("skipping the kprobe-mode capture exit test: this kernel has no kprobe_events (CONFIG_KPROBES off)");

const EXIT_BOUND_MS = 1000;

/** Collects a child's stderr as it comes, so a test can wait for a line and read the rest later. */
class StderrText {
  text = "";
  private readonly done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of stream) this.text += dec.decode(chunk, { stream: true });
    })();
  }
  async waitFor(want: RegExp, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!want.test(this.text)) {
      if (Date.now() > deadline) throw new Error(`no ${want} within ${ms} ms; stderr so far:\n${this.text}`);
      await Bun.sleep(20);
    }
  }
  async all(): Promise<string> {
    await this.done;
    return this.text;
  }
}

function kretprobeEventsOf(pid: number): string[] {
  return KPROBE_EVENTS ? readFileSync(KPROBE_EVENTS, "utf8").split("\n").filter((l) => l.includes(`/p${pid}_`)) : [];
}

async function interruptIdleCapture(extra: string[]): Promise<{ ms: number; code: number | null; pid: number; err: string; eventsBefore: number }> {
  const p = Bun.spawn([BIN, "capture", "--exe", "et-nothing-runs-this", "--log-level", "debug", ...extra], { stdout: "ignore", stderr: "pipe" });
  const err = new StderrText(p.stderr);
  await err.waitFor(/capturing \(Ctrl-C to stop\)/, 30_000);
  await Bun.sleep(300);
  const eventsBefore = kretprobeEventsOf(p.pid).length;
  const t0 = performance.now();
  p.kill("SIGINT");
  const code = await p.exited;
  const ms = performance.now() - t0;
  return { ms, code, pid: p.pid, err: await err.all(), eventsBefore };
}

async function eventually(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await Bun.sleep(100);
  }
  return cond();
}

describe.skipIf(!!skip)("capture exits at once on Ctrl-C", () => {
  test("idle capture (tracepoints): SIGINT to exit within the bound", async () => {
    const r = await interruptIdleCapture([]);
    console.log(`capture --exe (tracepoints): SIGINT to exit ${r.ms.toFixed(0)} ms`);
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(EXIT_BOUND_MS);
    expect(r.err).toContain("probe detach handed to a background process");
  }, 60_000);

  test.skipIf(!KPROBE_EVENTS)("idle capture (kprobes): fast exit, and the kretprobe events are removed after it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "et-exit-"));
    const cfg = join(dir, "kp.yaml");
    writeFileSync(cfg, "enable_tracepoints: false\n");
    const r = await interruptIdleCapture(["-c", cfg]);
    console.log(`capture --exe (kprobes): SIGINT to exit ${r.ms.toFixed(0)} ms`);
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(EXIT_BOUND_MS);
    expect(r.eventsBefore).toBeGreaterThan(0);
    expect(await eventually(() => kretprobeEventsOf(r.pid).length === 0, 20_000)).toBe(true);
  }, 60_000);
});
