/**
 * Selector with a recording stand-in for the kernel maps: the periodic safety-net rescan
 * (proc_fs_scan_period_in_sec) restores what the kernel filter lost (against the real /proc), and
 * a full selected_pids map is counted, not reported as selected (against an empty /proc).
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Selector, type SelectorMaps } from "../../src/selection/selector.ts";
import { ProcessRegistry } from "../../src/selection/process-registry.ts";
import { compileRules } from "../../src/selection/rules.ts";
import { defaultConfig, parseConfigText } from "../../src/config/config.ts";
import type { ProcEvent } from "../../src/kernel/event-decoder.ts";

/** A kernel pid filter that holds `capacity` pids and then answers E2BIG, like a full BPF hash. */
class Maps implements SelectorMaps {
  readonly pidMap = new Map<number, number>();
  constructor(private readonly capacity = Infinity) {}
  setPid(tgid: number, mode: number): number {
    if (!this.pidMap.has(tgid) && this.pidMap.size >= this.capacity) return -7;
    this.pidMap.set(tgid, mode);
    return 0;
  }
  deletePid(tgid: number): number { return this.pidMap.delete(tgid) ? 0 : -2; }
  pids(): Map<number, number> { return new Map(this.pidMap); }
  setExeName(): number { return 0; }
  deleteExeName(): number { return 0; }
  setCgroup(): number { return 0; }
  deleteCgroup(): number { return 0; }
  setFlags(): void {}
}

describe("selector rescan", () => {
  test("an entry the kernel filter lost is written again by rescan(); nothing else changes", () => {
    const maps = new Maps();
    const sel = new Selector(maps, new ProcessRegistry());
    sel.apply(compileRules(defaultConfig(), [{ pid: process.pid }]));
    const mode = maps.pidMap.get(process.pid);
    expect(mode).toBeGreaterThan(0);
    maps.pidMap.delete(process.pid); // what a missed event or a full map would leave
    sel.rescan();
    expect(maps.pidMap.get(process.pid)).toBe(mode!);
    const before = new Map(maps.pidMap);
    sel.rescan();
    expect(maps.pidMap).toEqual(before);
  });
});

function exec(tgid: number, path: string): ProcEvent {
  return { kind: "exec", tgid, tid: tgid, tsNs: 1, ppid: 1, mode: 0, cgroupId: 0n, comm: path.slice(path.lastIndexOf("/") + 1), path, args: [path] };
}

describe("Selector and a full selected_pids map", () => {
  test("setPid failures are counted, not reported as selected", () => {
    const proc = mkdtempSync(join(tmpdir(), "et-proc-"));
    try {
      const maps = new Maps(2);
      const sel = new Selector(maps, new ProcessRegistry(), proc, proc);
      sel.apply(compileRules(parseConfigText("targets:\n  - exe: /usr/bin/app\n", "t.yaml")));
      expect(sel.onExec(exec(100, "/usr/bin/app"))).toBe(true);
      expect(sel.onExec(exec(101, "/usr/bin/app"))).toBe(true);
      expect(sel.stats()).toEqual({ SelectedPidsFull: 0, SelectedPidsErrors: 0 });
      // the third does not fit: not captured, counted
      expect(sel.onExec(exec(102, "/usr/bin/app"))).toBe(false);
      expect(sel.onExec(exec(103, "/usr/bin/app"))).toBe(false);
      expect(sel.stats()).toEqual({ SelectedPidsFull: 2, SelectedPidsErrors: 0 });
      expect(sel.selected().map((p) => p.pid).sort()).toEqual([100, 101]);
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
  });
});

/** A fake /proc entry: enough for scanProcs (stat with comm and ppid, cmdline). */
function fakeProc(root: string, pid: number, ppid: number, comm: string): void {
  mkdirSync(join(root, String(pid)));
  writeFileSync(join(root, String(pid), "stat"), `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1\n`);
  writeFileSync(join(root, String(pid), "cmdline"), `${comm}\0`);
}

describe("a child forked while the selection is written", () => {
  test("a worker forked after the scan but before its parent reached the kernel map is selected (and its own child)", () => {
    const proc = mkdtempSync(join(tmpdir(), "et-proc-"));
    try {
      fakeProc(proc, 100, 1, "nginx");
      // The fork probe cannot see these: each appears after the scan, as its parent is written.
      const forks = new Map([[100, [101, "nginx-worker"]], [101, [102, "helper"]]] as const);
      const maps = new (class extends Maps {
        override setPid(tgid: number, mode: number): number {
          const r = super.setPid(tgid, mode);
          const f = forks.get(tgid as 100 | 101);
          if (f) fakeProc(proc, f[0], tgid, f[1]);
          return r;
        }
      })();
      const sel = new Selector(maps, new ProcessRegistry(), proc, proc);
      sel.apply(compileRules(defaultConfig(), [{ pid: 100 }]));
      const mode = maps.pidMap.get(100);
      expect(mode).toBeGreaterThan(0);
      expect([...maps.pidMap].sort()).toEqual([[100, mode!], [101, mode!], [102, mode!]]);
      expect(sel.selected().map((p) => p.pid).sort()).toEqual([100, 101, 102]);
      // an unrelated process that appears later is not adopted
      fakeProc(proc, 200, 1, "other");
      sel.rescan();
      expect(maps.pidMap.has(200)).toBe(false);
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
  });
});
