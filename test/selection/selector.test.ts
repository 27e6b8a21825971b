/**
 * Selector against the real /proc with a recording stand-in for the kernel maps: the periodic
 * safety-net rescan (proc_fs_scan_period_in_sec) restores what the kernel filter lost.
 */
import { describe, expect, test } from "bun:test";
import { Selector, type SelectorMaps } from "../../src/selection/selector.ts";
import { ProcessRegistry } from "../../src/selection/process-registry.ts";
import { compileRules } from "../../src/selection/rules.ts";
import { defaultConfig } from "../../src/config/config.ts";

class Maps implements SelectorMaps {
  pidMap = new Map<number, number>();
  setPid(t: number, m: number) { this.pidMap.set(t, m); return 0; }
  deletePid(t: number) { this.pidMap.delete(t); return 0; }
  pids() { return new Map(this.pidMap); }
  setExeName() { return 0; }
  deleteExeName() { return 0; }
  setCgroup() { return 0; }
  deleteCgroup() { return 0; }
  setFlags() {}
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
