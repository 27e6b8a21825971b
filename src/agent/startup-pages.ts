/**
 * Gives back the pages of the agent's own executable that only its start used.
 *
 * The binary is ~110 MB (Bun's runtime, the bundled BPF object and BTF); starting — config, BTF
 * parsing, libbpf loading, CLI — touches ~45 MB of it, and those clean file pages stay resident
 * and count in the agent's RSS until the kernel needs the memory. Under load the agent runs on
 * ~20 MB of them (bench/README.md, "Memory"). Once the agent is capturing, the read-only
 * mappings of the executable get MADV_PAGEOUT (Linux 5.4+): their pages leave the process, and
 * whatever the agent still runs faults back in from the file (the page cache keeps it when
 * another process maps the same file). Nothing is lost — they are clean pages of a file — and
 * the RSS a fleet operator budgets is then the working set. Once only: a second pass would make
 * the agent read its hot code from disk again.
 */
import { readFileSync, readlinkSync } from "node:fs";
import { pageOut } from "../kernel/libbpf-ffi.ts";

const EINVAL = 22;

export interface MappedRange {
  start: number;
  end: number;
}

/**
 * The read-only (r--p, r-xp) mappings of `exe` in a /proc/PID/maps text. Writable ones are left
 * alone: their touched pages are private copies, which MADV_PAGEOUT would push to swap.
 */
export function readOnlyRangesOf(maps: string, exe: string): MappedRange[] {
  const out: MappedRange[] = [];
  for (const line of maps.split("\n")) {
    // start-end perms offset dev inode path (the path may contain spaces)
    const m = /^([0-9a-f]+)-([0-9a-f]+) (r-[x-]p) \S+ \S+ \d+\s+(.*)$/.exec(line);
    if (!m || m[4] !== exe) continue;
    out.push({ start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16) });
  }
  return out;
}

/** Resident kB of the given ranges in a /proc/PID/smaps text (mappings matched by start). */
export function residentKb(smaps: string, ranges: readonly MappedRange[]): number {
  const starts = new Set(ranges.map((r) => r.start));
  let kb = 0;
  let inRange = false;
  for (const line of smaps.split("\n")) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (head) inRange = starts.has(parseInt(head[1]!, 16));
    else if (inRange && line.startsWith("Rss:")) kb += parseInt(line.slice(4), 10) || 0;
  }
  return kb;
}

export type StartupPagesResult =
  | { released: true; mappedKb: number; residentKbBefore: number; residentKbAfter: number }
  | { released: false; reason: string };

export function releaseStartupPages(): StartupPagesResult {
  let exe: string;
  let ranges: MappedRange[];
  try {
    exe = readlinkSync("/proc/self/exe");
    ranges = readOnlyRangesOf(readFileSync("/proc/self/maps", "utf8"), exe);
  } catch (e) {
    return { released: false, reason: `cannot read /proc/self: ${(e as Error).message}` };
  }
  if (ranges.length === 0) return { released: false, reason: `no read-only mapping of ${exe} in /proc/self/maps` };
  const before = residentKb(readFileSync("/proc/self/smaps", "utf8"), ranges);
  let mapped = 0;
  for (const r of ranges) {
    const err = pageOut(r.start, r.end - r.start);
    if (err === EINVAL) return { released: false, reason: "MADV_PAGEOUT is not supported by this kernel (5.4+)" };
    if (err !== 0) return { released: false, reason: `madvise(MADV_PAGEOUT) failed: errno ${err}` };
    mapped += r.end - r.start;
  }
  return { released: true, mappedKb: Math.floor(mapped / 1024), residentKbBefore: before, residentKbAfter: residentKb(readFileSync("/proc/self/smaps", "utf8"), ranges) };
}
