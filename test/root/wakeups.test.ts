/**
 * How often the agent wakes: it sleeps between drains of the ring buffer for as long as the
 * arrival rate allows (src/agent/poll-interval.ts, up to 100 ms), and the few records that cannot
 * wait (a process exec, a listen(), an executable mapping: output_now in bpf/lib/output.h) wake
 * it at once through the ring's forced wakeups and the helper thread of
 * scripts/native/ring-wakeup.c. Through the compiled binary, as root, on this kernel's ring buffer.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cleanups, exitStats, logRecords } from "../support/http-kit.ts";
import { rootSkipReason, TracerProcess } from "../support/tracer.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`skipping ring buffer wakeup tests: ${SKIP}`);
const c = new Cleanups();
afterEach(() => c.run());

/** Context switches of thread `tid` of process `pid` so far (voluntary + involuntary). */
function switches(pid: number, tid = pid): number {
  const s = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
  let n = 0;
  for (const m of s.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
  return n;
}

describe.skipIf(!!SKIP)("ring buffer wakeups", () => {
  test("idle, the main thread is not woken every few ms; a process exec that user space decides wakes it within milliseconds", async () => {
    const marker = `et-wake-${process.pid}-${Date.now()}`;
    const dir = mkdtempSync(join(tmpdir(), "et-wakeups-"));
    c.add(dir, (d) => rmSync(d, { recursive: true, force: true }));
    const cfg = join(dir, "config.yaml");
    // a cmdline target: only user space can decide it, from the exec record
    writeFileSync(cfg, `targets:\n  - cmdline: "${marker}"\n`);
    const t = c.add(await TracerProcess.start(["capture", "-c", cfg, "--json", "--log-level", "info"]), (x) => x.stop());
    const pid = t.proc.pid;
    await Bun.sleep(1500); // past the start's own timers

    const s0 = switches(pid);
    await Bun.sleep(3000);
    const perSecond = (switches(pid) - s0) / 3;
    console.log(`agent main thread, idle: ${perSecond.toFixed(1)} wakeups/s`);
    // Polling every 10 ms, it switched ~113 times a second (each timer costs the runtime about
    // two switches); a bare Bun process with a 100 ms timer switches ~20 times, the agent ~26
    expect(perSecond).toBeLessThan(50);

    const latencies: number[] = [];
    for (let i = 0; i < 3; i++) {
      const at = Date.now();
      const p = Bun.spawn(["sh", "-c", "sleep 0.2", marker], { stdout: "ignore", stderr: "ignore" });
      await p.exited;
      const added = logRecords(t.stderr).find((r) => r.msg === "Added process to maps" && r.Pid === p.pid);
      expect(added).toBeDefined();
      latencies.push(Date.parse(String(added!.ts)) - at);
      await Bun.sleep(150);
    }
    console.log(`spawn → selected by user space: ${latencies.join(" / ")} ms`);
    // the timed drain alone would take up to 100 ms; a forced wakeup takes a few
    for (const ms of latencies) expect(ms).toBeLessThan(60);

    expect(await t.stop()).toBe(0);
    const stats = exitStats(t.stderr)!;
    expect(stats.EventLost).toBe(0);
    // each of the three execs (sh, and sleep run by it) is a record that wakes the agent
    expect(stats.RingWakeups).toBeGreaterThanOrEqual(3);
  }, 30_000);
});
