/**
 * Just enough DWARF (version 2–4, 32-bit format, as the Go linker writes it) to read the member
 * offsets of named structure types from .debug_info: the Go TLS probes' struct offsets come from here
 * when the binary keeps its DWARF (go build without -ldflags=-w), else from the version table.
 *
 * Bounded like elf.ts: compressed sections (SHF_COMPRESSED or the older ".zdebug" "ZLIB" header) are
 * inflated with an output cap, every read is range-checked, and a malformed unit ends the walk with a
 * TracerError — never a crash or an unbounded loop.
 */
import { inflateSync } from "node:zlib";
import { TracerError } from "../../errors.ts";
import type { ElfFile, ElfSection } from "./elf.ts";

const SHF_COMPRESSED = 0x800;
const MAX_DWARF_BYTES = 64 << 20;

const DW_TAG_structure_type = 0x13;
const DW_TAG_member = 0x0d;
const DW_AT_name = 0x03;
const DW_AT_data_member_location = 0x38;

/** Section bytes, inflated when compressed; undefined when absent. */
export function debugSection(elf: ElfFile, name: string): Uint8Array | undefined {
  const plain = elf.section(name);
  const z = plain ? undefined : elf.section(name.replace(/^\.debug/, ".zdebug"));
  const s: ElfSection | undefined = plain ?? z;
  if (!s) return undefined;
  const raw = elf.sectionBytes(s, MAX_DWARF_BYTES);
  try {
    if (s.flags & SHF_COMPRESSED) {
      // Elf64_Chdr: ch_type (1 = zlib), reserved, ch_size, ch_addralign
      if (raw.length < 24) throw new Error("short compression header");
      const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      if (v.getUint32(0, true) !== 1) throw new Error(`compression type ${v.getUint32(0, true)}`);
      return inflateSync(raw.subarray(24), { maxOutputLength: MAX_DWARF_BYTES });
    }
    if (z) {
      if (raw.length < 12 || String.fromCharCode(...raw.subarray(0, 4)) !== "ZLIB") throw new Error("no ZLIB header");
      return inflateSync(raw.subarray(12), { maxOutputLength: MAX_DWARF_BYTES });
    }
  } catch (e) {
    throw new TracerError("IO", `${elf.path}: cannot inflate ${s.name}: ${(e as Error).message}`);
  }
  return raw;
}

interface Abbrev {
  tag: number;
  children: boolean;
  attrs: [name: number, form: number][];
}

class Reader {
  pos = 0;
  constructor(
    readonly b: Uint8Array,
    readonly what: string,
  ) {}
  need(n: number): void {
    if (n < 0 || this.pos + n > this.b.length) throw new TracerError("IO", `${this.what}: truncated at ${this.pos}`);
  }
  u8(): number {
    this.need(1);
    return this.b[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.b[this.pos]! | (this.b[this.pos + 1]! << 8);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = (this.b[this.pos]! | (this.b[this.pos + 1]! << 8) | (this.b[this.pos + 2]! << 16)) + this.b[this.pos + 3]! * 2 ** 24;
    this.pos += 4;
    return v;
  }
  uleb(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      const c = this.u8();
      n += (c & 0x7f) * mul;
      if (!(c & 0x80)) return n;
      mul *= 128;
    }
    throw new TracerError("IO", `${this.what}: LEB128 too long at ${this.pos}`);
  }
  sleb(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      const c = this.u8();
      n += (c & 0x7f) * mul;
      mul *= 128;
      if (!(c & 0x80)) return c & 0x40 ? n - mul : n;
    }
    throw new TracerError("IO", `${this.what}: LEB128 too long at ${this.pos}`);
  }
  cstr(): string {
    const start = this.pos;
    while (this.pos < this.b.length && this.b[this.pos] !== 0) this.pos++;
    this.need(1);
    const s = String.fromCharCode(...this.b.subarray(start, Math.min(this.pos, start + 4096)));
    this.pos++;
    return s;
  }
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
}

function parseAbbrevs(b: Uint8Array, off: number): Map<number, Abbrev> {
  const r = new Reader(b, ".debug_abbrev");
  r.pos = off;
  const out = new Map<number, Abbrev>();
  for (let guard = 0; guard < 100_000; guard++) {
    const code = r.uleb();
    if (code === 0) return out;
    const tag = r.uleb();
    const children = r.u8() === 1;
    const attrs: [number, number][] = [];
    for (let g2 = 0; g2 < 1000; g2++) {
      const name = r.uleb();
      const form = r.uleb();
      if (name === 0 && form === 0) break;
      if (form === 0x21) r.sleb(); // DW_FORM_implicit_const (DWARF 5) carries its value here
      attrs.push([name, form]);
    }
    out.set(code, { tag, children, attrs });
  }
  throw new TracerError("IO", ".debug_abbrev: too many abbreviations");
}

/** Reads one attribute value: a number, a string, or undefined for forms we only skip. */
function readForm(r: Reader, form: number, addrSize: number, strtab: Uint8Array | undefined): number | string | undefined {
  switch (form) {
    case 0x01: r.skip(addrSize); return undefined; // addr
    case 0x0b: case 0x11: return r.u8(); // data1, ref1
    case 0x05: case 0x12: return r.u16(); // data2, ref2
    case 0x06: case 0x13: case 0x10: case 0x17: case 0x0e: { // data4, ref4, ref_addr, sec_offset, strp
      const v = r.u32();
      if (form === 0x0e && strtab) {
        const sr = new Reader(strtab, ".debug_str");
        sr.pos = v;
        return sr.cstr();
      }
      return v;
    }
    case 0x07: case 0x14: case 0x20: r.skip(8); return undefined; // data8, ref8, ref_sig8
    case 0x0d: return r.sleb(); // sdata
    case 0x0f: case 0x15: return r.uleb(); // udata, ref_udata
    case 0x08: return r.cstr(); // string
    case 0x0c: r.skip(1); return undefined; // flag
    case 0x19: return undefined; // flag_present
    case 0x0a: r.skip(r.u8()); return undefined; // block1
    case 0x03: r.skip(r.u16()); return undefined; // block2
    case 0x04: r.skip(r.u32()); return undefined; // block4
    case 0x09: case 0x18: r.skip(r.uleb()); return undefined; // block, exprloc
    case 0x16: return readForm(r, r.uleb(), addrSize, strtab); // indirect
    default:
      throw new TracerError("IO", `.debug_info: unsupported attribute form 0x${form.toString(16)} at ${r.pos}`);
  }
}

/**
 * Member offsets of the structure types named in `wanted` (e.g. "crypto/tls.Conn"):
 * type name → member name → byte offset. Types not found are absent from the result.
 * Undefined when the file has no .debug_info.
 */
export function structMemberOffsets(elf: ElfFile, wanted: Iterable<string>): Map<string, Map<string, number>> | undefined {
  const info = debugSection(elf, ".debug_info");
  const abbrevBytes = debugSection(elf, ".debug_abbrev");
  if (!info || !abbrevBytes) return undefined;
  const strtab = debugSection(elf, ".debug_str");
  const want = new Set(wanted);
  const out = new Map<string, Map<string, number>>();
  const abbrevCache = new Map<number, Map<number, Abbrev>>();
  const r = new Reader(info, ".debug_info");
  while (r.pos + 11 <= info.length && out.size < want.size) {
    const unitStart = r.pos;
    const len = r.u32();
    if (len >= 0xfffffff0) throw new TracerError("IO", ".debug_info: 64-bit DWARF units are not supported");
    const end = r.pos + len;
    if (end > info.length) throw new TracerError("IO", `.debug_info: unit at ${unitStart} overruns the section`);
    const version = r.u16();
    let abbrevOff: number;
    let addrSize: number;
    if (version >= 2 && version <= 4) {
      abbrevOff = r.u32();
      addrSize = r.u8();
    } else if (version === 5) {
      r.u8(); // unit type
      addrSize = r.u8();
      abbrevOff = r.u32();
    } else throw new TracerError("IO", `.debug_info: DWARF version ${version}`);
    let abbrevs = abbrevCache.get(abbrevOff);
    if (!abbrevs) {
      abbrevs = parseAbbrevs(abbrevBytes, abbrevOff);
      abbrevCache.set(abbrevOff, abbrevs);
    }
    // Walk the DIEs of this unit. `current` is the wanted struct whose members we are reading, at `depth`.
    let depth = 0;
    let current: Map<string, number> | undefined;
    let currentDepth = -1;
    while (r.pos < end) {
      const code = r.uleb();
      if (code === 0) {
        depth--;
        if (depth < currentDepth) current = undefined;
        continue;
      }
      const ab = abbrevs.get(code);
      if (!ab) throw new TracerError("IO", `.debug_info: unknown abbreviation ${code} at ${r.pos}`);
      let name: string | undefined;
      let loc: number | undefined;
      for (const [at, form] of ab.attrs) {
        const v = readForm(r, form, addrSize, strtab);
        if (at === DW_AT_name && typeof v === "string") name = v;
        else if (at === DW_AT_data_member_location && typeof v === "number") loc = v;
      }
      if (ab.tag === DW_TAG_structure_type && ab.children && name !== undefined && want.has(name) && !out.has(name)) {
        current = new Map();
        out.set(name, current);
        currentDepth = depth + 1;
      } else if (ab.tag === DW_TAG_member && current && depth === currentDepth && name !== undefined && loc !== undefined) {
        current.set(name, loc);
      }
      if (ab.children) depth++;
    }
    r.pos = end;
  }
  return out;
}
