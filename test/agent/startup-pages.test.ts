/**
 * Which mappings the agent gives back after its start (read-only mappings of its executable) and
 * how their resident size is read, over /proc texts laid out as the kernel writes them; and the
 * release itself on this process (the test runner's executable), where the kernel has
 * MADV_PAGEOUT.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, readlinkSync } from "node:fs";
import { readOnlyRangesOf, releaseStartupPages, residentKb } from "../../src/agent/startup-pages.ts";

const EXE = "/usr/local/bin/ebpf tracer"; // a space in the path on purpose
const MAPS = [
  `00200000-01a39000 r--p 00000000 fe:01 1234                       ${EXE}`,
  `01a40000-0684a000 r-xp 01839000 fe:01 1234                       ${EXE}`,
  `0684a000-0685f000 rw-p 06649000 fe:01 1234                       ${EXE}`,
  `06867000-06fc7000 rw-p 06666000 fe:01 1234                       ${EXE}`,
  "7fe7dc302000-7fe7dd303000 r--s 00000000 00:0e 1055                       anon_inode:bpf-map",
  "7fe81e59a000-7fe81e6f0000 r-xp 00026000 fe:01 917                        /usr/lib/x86_64-linux-gnu/libc.so.6",
  "5db22200000-5db62200000 rw-p 00000000 00:00 0 ",
  `7fe81e700000-7fe81e701000 r--p 00000000 fe:01 99                         ${EXE}.old`,
].join("\n");

describe("startup pages", () => {
  test("only the executable's read-only mappings are chosen", () => {
    expect(readOnlyRangesOf(MAPS, EXE)).toEqual([
      { start: 0x200000, end: 0x1a39000 },
      { start: 0x1a40000, end: 0x684a000 },
    ]);
    expect(readOnlyRangesOf(MAPS, "/nowhere")).toEqual([]);
  });

  test("resident kB are summed over those mappings only", () => {
    const smaps = [
      MAPS.split("\n")[0], "Size:              24804 kB", "Rss:                7460 kB", "Pss:                7460 kB",
      MAPS.split("\n")[1], "Size:              79912 kB", "Rss:               34460 kB",
      MAPS.split("\n")[2], "Size:                 84 kB", "Rss:                  84 kB",
      MAPS.split("\n")[5], "Size:               1368 kB", "Rss:                1276 kB",
    ].join("\n");
    expect(residentKb(smaps, readOnlyRangesOf(MAPS, EXE))).toBe(7460 + 34460);
  });

  test("releasing this process's executable pages lowers their resident size (Linux 5.4+)", () => {
    const ranges = readOnlyRangesOf(readFileSync("/proc/self/maps", "utf8"), readlinkSync("/proc/self/exe"));
    expect(ranges.length).toBeGreaterThan(0);
    const r = releaseStartupPages();
    const [maj, min] = require("node:os").release().split(".").map(Number) as [number, number];
    if (maj < 5 || (maj === 5 && min < 4)) {
      expect(r).toMatchObject({ released: false });
      return;
    }
    if (!r.released) throw new Error(r.reason);
    expect(r.mappedKb).toBeGreaterThan(0);
    expect(r.residentKbAfter).toBeLessThan(r.residentKbBefore);
  });
});
