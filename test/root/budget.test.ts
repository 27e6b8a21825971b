/**
 * The overhead budget through the compiled binary: nginx under a saturating load of short
 * connections (wrk, Connection: close), the agent capturing it with `budget.cpu_percent` set.
 * Checked: the agent's CPU over the second half of the run stays near the budget (noise allowed:
 * the floor is the cost of connection-open events, which arrive whatever is shed), spans carry
 * the sampling ratio they were captured with, the shed counters are logged, and captured spans
 * plus the estimated shed requests add up to the requests wrk made.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { startNginx } from "../support/servers.ts";
import { Cleanups, exitStats, logRecords, stopNginx } from "../support/http-kit.ts";
import { toYaml } from "../support/yaml.ts";

const SKIP = rootSkipReason() ?? (Bun.which("wrk") ? undefined : "wrk is not installed (apt-get install wrk)");
if (SKIP) console.warn(`test/root/budget.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]); // utime + stime (fields 14, 15)
}

describe.skipIf(!!SKIP)("overhead budget", () => {
  test("a CPU budget under saturating load: the agent stays near it, spans carry the ratio, the counts add up", async () => {
    const BUDGET = 8;
    const dir = mkdtempSync(join(tmpdir(), "et-budget-"));
    const cfg = join(dir, "cfg.yaml");
    writeFileSync(cfg, toYaml({ budget: { cpu_percent: BUDGET }, stats_interval: "1s", logging: { level: "info" } }));
    const t = c.add(await TracerProcess.capture(["-c", cfg, "--exe", "nginx"]), (x) => x.stop());
    const ng = c.add(await startNginx((p, d) => `server { listen 127.0.0.1:${p}; root ${d}/www; location = /ok { return 200 "ok"; } }`), stopNginx);
    chmodSync(ng.dir, 0o755);
    const SECONDS = 20;
    const wrk = Bun.spawn(["wrk", "-t1", "-c8", `-d${SECONDS}s`, "-H", "Connection: close", `http://127.0.0.1:${ng.port}/ok`], { stdout: "pipe", stderr: "pipe" });
    const hz = 100; // USER_HZ
    await Bun.sleep((SECONDS / 2) * 1000);
    const t0 = cpuTicks(t.proc.pid);
    const w0 = performance.now();
    await Bun.sleep((SECONDS / 2 - 1) * 1000);
    const cpu = ((cpuTicks(t.proc.pid) - t0) / hz) / ((performance.now() - w0) / 1000) * 100;
    const out = await new Response(wrk.stdout).text();
    await wrk.exited;
    const m = /(\d+) requests in/.exec(out);
    expect(m).not.toBeNull();
    const requests = Number(m![1]);
    await Bun.sleep(1500);
    expect(await t.stop()).toBe(0);
    const spans = t.spans.filter((s) => s.attributes["url.path"] === "/ok");
    const stats = exitStats(t.stderr)!;
    const shedStart = logRecords(t.stderr).filter((r) => r.msg === "over the overhead budget: shedding connections");
    console.log(`budget ${BUDGET}%: agent CPU ${cpu.toFixed(1)}% over the second half; ${requests} requests, ${spans.length} spans, ` +
      `ShedConnections ${stats.ShedConnections}, ShedRequestsEstimated ${stats.ShedRequestsEstimated}, last ratio ${stats.SamplingRatio}, ` +
      `FallingBehind ${stats.FallingBehind}, ReadmittedConnections ${stats.ReadmittedConnections}, EventLost ${stats.EventLost}`);
    expect(shedStart.length).toBeGreaterThanOrEqual(1);
    expect(stats.ShedConnections).toBeGreaterThan(0);
    // near the budget: the floor it cannot shed is the open/close events of ~15k connections/s,
    // and CI machines are noisy, so 2.5x is allowed (without a budget this load costs 40-60 %)
    expect(cpu).toBeLessThan(2.5 * BUDGET);
    const ratios = new Set(spans.map((s) => s.attributes["ebpf.sampling.ratio"]));
    expect([...ratios].every((r) => typeof r === "number" && r > 0 && r <= 1)).toBe(true);
    expect([...ratios].some((r) => (r as number) < 1)).toBe(true);
    const estimated = spans.length + stats.ShedRequestsEstimated!;
    expect(Math.abs(estimated - requests) / requests).toBeLessThan(0.15);
  }, 60_000);

  test("after a reload (SIGHUP) a target's max_spans_per_second still sheds", async () => {
    const dir = mkdtempSync(join(tmpdir(), "et-budget-"));
    const cfg = join(dir, "cfg.yaml");
    const LIMIT = 50;
    const spansFile = join(dir, "spans.jsonl");
    writeFileSync(cfg, toYaml({
      targets: [{ exe: "nginx", max_spans_per_second: LIMIT }], exporter: `file:${spansFile}`, admin: { enabled: false },
      stats_interval: "1s", logging: { level: "info" },
    }));
    // `run`: the command that reloads its config (SIGHUP, file change)
    const t = c.add(await TracerProcess.start(["run", "-c", cfg], "capture started"), (x) => x.stop("SIGTERM"));
    const ng = c.add(await startNginx((p, d) => `server { listen 127.0.0.1:${p}; root ${d}/www; location = /ok { return 200 "ok"; } }`), stopNginx);
    chmodSync(ng.dir, 0o755);
    t.proc.kill("SIGHUP");
    for (let i = 0; i < 150 && !logRecords(t.stderr).some((r) => r.msg === "config reloaded"); i++) await Bun.sleep(100);
    expect(logRecords(t.stderr).some((r) => r.msg === "config reloaded")).toBe(true);
    const SECONDS = 6;
    const wrk = Bun.spawn(["wrk", "-t1", "-c4", `-d${SECONDS}s`, "-H", "Connection: close", `http://127.0.0.1:${ng.port}/ok`], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(wrk.stdout).text();
    await wrk.exited;
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
    await Bun.sleep(1500);
    expect(await t.stop("SIGTERM")).toBe(0);
    const spans = readFileSync(spansFile, "utf8").split("\n").filter((l) => l.includes('"url.path":"/ok"'));
    const stats = exitStats(t.stderr)!;
    console.log(`after reload: ${requests} requests, ${spans.length} spans, ShedConnections ${stats.ShedConnections}`);
    expect(requests).toBeGreaterThan(20 * LIMIT * SECONDS); // premise: far more than the limit
    // Shedding acts from the first once-a-second sample on, and its ratio stops at 0.01 (at
    // ~14k connections/s that is ~140 spans/s, not 50): most connections shed, not all. Before the
    // fix a reload stopped the budget's timer: every connection was captured, none shed.
    expect(stats.ShedConnections).toBeGreaterThan(requests / 2);
    expect(spans.length).toBeLessThan(requests / 4);
  }, 60_000);
});
