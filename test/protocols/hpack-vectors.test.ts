/**
 * HPACK decoding against third-party vectors: RFC 7541 Appendix C (headers, table contents and
 * size after each block) and the hpack-test-case stories (every case of every story decoded
 * exactly, then decoded again started at case k and with case k dropped: every header either
 * correct or reported unknown, never wrong).
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { HeaderBlock, HpackDecoder, HpackMemory } from "../../src/protocols/http2/hpack.ts";
import { CODES, CODE_LENGTHS, huffmanDecode } from "../../src/protocols/http2/huffman.ts";

const FIX = join(import.meta.dir, "../fixtures/hpack");
/** This file's own budget, so other test files' tables do not count against it. */
const MEM = new HpackMemory(1 << 30);

interface Case {
  seqno: number;
  wire: string;
  headers: Record<string, string>[];
  header_table_size?: number;
  rfc_section?: string;
  dynamic_table_after?: [string, string][];
  dynamic_table_size_after?: number;
}
interface Story { description: string; cases: Case[] }
/** A story's cases with wire bytes and expected fields decoded once. */
interface Prepared { cases: { wire: Uint8Array; want: [string, string][]; size?: number }[] }

function load(dir: string, file: string): Story {
  return JSON.parse(readFileSync(join(FIX, dir, file), "utf8")) as Story;
}
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, "hex"));
const pairs = (c: Case): [string, string][] => c.headers.map((h) => Object.entries(h)[0]!);
const fields = (b: HeaderBlock): [string, string][] => b.names.slice(0, b.count).map((n, i) => [n, b.values[i]!]);

function table(d: HpackDecoder): [string | null, string | null][] {
  const out: [string | null, string | null][] = [];
  for (let i = 0; i < d.entryCount; i++) out.push(d.entry(i)!);
  return out;
}

describe("RFC 7541 Appendix C", () => {
  test("C.1 integers", () => {
    const ints = JSON.parse(readFileSync(join(FIX, "rfc7541-appendix-c/integers_C_1.json"), "utf8")) as {
      cases: { prefix_bits: number; value: number; wire: string }[];
    };
    // An integer is read through a size update (5-bit prefix) or an indexed field (7-bit prefix).
    for (const c of ints.cases) {
      if (c.prefix_bits !== 5) continue;
      const d = new HpackDecoder({ fromStart: true, memory: MEM });
      d.setSettingBound(1 << 20);
      const w = hex(c.wire);
      w[0] = w[0]! | 0x20;
      const out = new HeaderBlock();
      d.decode(w, 0, w.length, out);
      expect(out.error).toBeUndefined();
      expect(d.maxTableSize).toBe(c.value);
    }
  });

  for (const f of ["story_C_2.json", "story_C_3.json", "story_C_4.json", "story_C_5.json", "story_C_6.json"]) {
    test(f, () => {
      const story = load("rfc7541-appendix-c", f);
      // C.2 sections are independent examples, each with a fresh table; C.3-C.6 share one.
      const shared = !f.includes("C_2");
      let d = new HpackDecoder({ fromStart: true, memory: MEM });
      const out = new HeaderBlock();
      for (const c of story.cases) {
        if (!shared) d = new HpackDecoder({ fromStart: true, memory: MEM });
        if (c.header_table_size !== undefined) d.setMaxSize(c.header_table_size);
        const w = hex(c.wire);
        d.decode(w, 0, w.length, out);
        expect(out.error).toBeUndefined();
        expect(fields(out)).toEqual(pairs(c));
        if (c.dynamic_table_after) expect(table(d)).toEqual(c.dynamic_table_after);
        if (c.dynamic_table_size_after !== undefined) expect(d.size).toBe(c.dynamic_table_size_after);
        expect(d.complete).toBe(true);
      }
    });
  }
});

describe("Huffman code", () => {
  test("is complete (Kraft sum 1) and matches codes listed in Appendix B", () => {
    let kraft = 0;
    for (let s = 0; s <= 256; s++) kraft += 2 ** -CODE_LENGTHS[s]!;
    expect(kraft).toBe(1);
    // a few codes as listed in the RFC (hex, length)
    const listed: [number, number, number][] = [
      [0, 0x1ff8, 13], [1, 0x7fffd8, 23], [9, 0xffffea, 24], [10, 0x3ffffffc, 30], [32, 0x14, 6],
      [48, 0x0, 5], [65, 0x21, 6], [88, 0xfc, 8], [97, 0x3, 5], [126, 0x1ffd, 13], [127, 0xffffffc, 28],
      [128, 0xfffe6, 20], [200, 0x3ffffe2, 26], [255, 0x3ffffee, 26], [256, 0x3fffffff, 30],
    ];
    for (const [s, code, len] of listed) expect([s, CODES[s], CODE_LENGTHS[s]]).toEqual([s, code, len]);
  });

  test("rejects EOS, long padding and padding that is not ones", () => {
    const out = new Uint8Array(64);
    // 'a' = 00011 then padding 111 → 0x1f
    expect(huffmanDecode(Uint8Array.of(0x1f), 0, 1, out)).toBe(1);
    expect(out[0]).toBe(0x61);
    expect(huffmanDecode(Uint8Array.of(0x18), 0, 1, out)).toBe(-1);          // padding 000
    expect(huffmanDecode(Uint8Array.of(0x1f, 0xff), 0, 2, out)).toBe(-1);    // 11 bits of padding
    expect(huffmanDecode(Uint8Array.of(0xff, 0xff, 0xff, 0xff), 0, 4, out)).toBe(-1); // EOS
    expect(huffmanDecode(Uint8Array.of(0xff), 0, 1, out)).toBe(-1);          // 8 bits of padding
    expect(huffmanDecode(new Uint8Array(0), 0, 0, out)).toBe(0);
  });
});

const STORY_DIRS = ["nghttp2", "haskell-http2-static"];
const stories: [string, Prepared][] = [];
for (const dir of STORY_DIRS) {
  for (const f of readdirSync(join(FIX, "hpack-test-case", dir)).filter((x) => x.endsWith(".json")).sort()) {
    const story = load(join("hpack-test-case", dir), f);
    stories.push([`${dir}/${f}`, {
      cases: story.cases.map((c) => ({ wire: hex(c.wire), want: pairs(c), size: c.header_table_size })),
    }]);
  }
}

/**
 * Decodes cases [from..] of a story, skipping `drop`; `from > 0` starts as an agent attached
 * mid-connection, a dropped case is a lost header block. Returns [correct, unknown, wrong] field
 * counts against the story's headers (as a multiset per block: a decoded field must be one of the
 * block's fields, in order among the decoded ones).
 */
function replay(story: Prepared, from: number, drop: number): { correct: number; unknown: number; wrong: string[] } {
  const d = new HpackDecoder({ fromStart: from === 0, memory: MEM });
  const out = new HeaderBlock();
  let correct = 0;
  let unknown = 0;
  const wrong: string[] = [];
  for (let k = from; k < story.cases.length; k++) {
    const c = story.cases[k]!;
    if (k === drop) { d.forget(); continue; }
    if (c.size !== undefined && from === 0 && k === 0) d.setMaxSize(c.size);
    d.decode(c.wire, 0, c.wire.length, out);
    if (out.error !== undefined) wrong.push(`case ${k}: error ${out.error}`);
    const want = c.want;
    // decoded fields must be the expected list with some fields removed, order kept
    let j = 0;
    for (let i = 0; i < out.count; i++) {
      while (j < want.length && !(want[j]![0] === out.names[i] && want[j]![1] === out.values[i])) j++;
      if (j === want.length) { wrong.push(`case ${k}: ${out.names[i]}: ${out.values[i]}`); break; }
      j++;
    }
    if (out.count + out.unknown !== want.length) wrong.push(`case ${k}: ${out.count}+${out.unknown} fields, want ${want.length}`);
    correct += out.count;
    unknown += out.unknown;
  }
  d.release(); // give its size back to the shared budget
  return { correct, unknown, wrong };
}

describe("hpack-test-case stories", () => {
  test("every story decodes exactly from the start", () => {
    expect(stories.length).toBe(64);
    let fieldsSeen = 0;
    for (const [name, story] of stories) {
      const r = replay(story, 0, -1);
      expect({ name, wrong: r.wrong, unknown: r.unknown }).toEqual({ name, wrong: [], unknown: 0 });
      fieldsSeen += r.correct;
    }
    expect(fieldsSeen).toBeGreaterThan(30000);
  });

  test("started at case k, for every k: every field correct or unknown, none wrong", () => {
    let unknown = 0;
    let correct = 0;
    for (const [name, story] of stories) {
      for (let k = 1; k < story.cases.length; k++) {
        const r = replay(story, k, -1);
        if (r.wrong.length > 0) expect({ name, k, wrong: r.wrong.slice(0, 3) }).toEqual({ name, k, wrong: [] });
        unknown += r.unknown;
        correct += r.correct;
      }
    }
    // the test must exercise unknown entries, and most fields still resolve
    expect(unknown).toBeGreaterThan(1000);
    expect(correct).toBeGreaterThan(unknown);
  }, 120_000);

  test("with case k dropped, for every k: every field correct or unknown, none wrong", () => {
    let unknown = 0;
    for (const [name, story] of stories) {
      for (let k = 0; k < story.cases.length; k++) {
        const r = replay(story, 0, k);
        if (r.wrong.length > 0) expect({ name, k, wrong: r.wrong.slice(0, 3) }).toEqual({ name, k, wrong: [] });
        unknown += r.unknown;
      }
    }
    expect(unknown).toBeGreaterThan(1000);
  }, 120_000);
});

test("tables share a memory budget and stay within it", () => {
  const mem = new HpackMemory(10_000);
  const story = stories.find(([n]) => n === "nghttp2/story_30.json")![1];
  const decoders = Array.from({ length: 8 }, () => new HpackDecoder({ fromStart: true, memory: mem }));
  const out = new HeaderBlock();
  let wrong = 0;
  for (const c of story.cases) {
    for (const d of decoders) {
      d.decode(c.wire, 0, c.wire.length, out);
      expect(mem.used).toBeLessThanOrEqual(10_000);
      const want = new Set(c.want.map(([n, v]) => `${n}\0${v}`));
      for (let i = 0; i < out.count; i++) if (!want.has(`${out.names[i]}\0${out.values[i]}`)) wrong++;
    }
  }
  expect(wrong).toBe(0);
  for (const d of decoders) d.release();
  expect(mem.used).toBe(0);
});
