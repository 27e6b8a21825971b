/**
 * A bounded ELF64 reader (little-endian x86-64 and aarch64) for TLS discovery: sections, symbols,
 * virtual address → file offset (what a uprobe needs), Go build info and string search in .rodata.
 *
 * Contract: every read is checked against the file size and against fixed caps, so a truncated or
 * corrupted file gives a TracerError("IO", …) naming the file and what is wrong — never a crash, a
 * hang or an allocation larger than the caps below. Reads go through a `ByteSource` so a 100 MB
 * executable is never loaded whole: only the headers, the symbol tables and the sections asked for.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { TracerError } from "../../errors.ts";

/** Upper bounds for one read; a file asking for more is reported as malformed or too large. */
export const ELF_LIMITS = {
  maxSections: 4096,
  maxSegments: 512,
  /** One symbol table (.symtab/.dynsym) or its string table. Large Go/C++ binaries stay far below. */
  maxTableBytes: 128 << 20,
  /** One section read for searching (.rodata, .go.buildinfo, notes). */
  maxSectionBytes: 256 << 20,
  maxNameBytes: 4096,
};

export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;
export const PT_LOAD = 1;
export const SHT_SYMTAB = 2;
export const SHT_DYNSYM = 11;
export const SHT_NOBITS = 8;
export const STT_FUNC = 2;

/** Random access to the bytes of one file. */
export interface ByteSource {
  readonly size: number;
  /** Exactly `len` bytes at `off`; the caller has checked the bounds. */
  read(off: number, len: number): Uint8Array;
  /** The same, into `out` (its length is `len`). */
  readInto(off: number, out: Uint8Array): void;
  close(): void;
}

export function bytesSource(buf: Uint8Array): ByteSource {
  return { size: buf.length, read: (off, len) => buf.subarray(off, off + len), readInto: (off, out) => out.set(buf.subarray(off, off + out.length)), close() {} };
}

export function fileSource(path: string): ByteSource {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new TracerError("IO", `cannot open ${path}: ${(e as Error).message}`);
  }
  const size = fstatSync(fd).size;
  const readInto = (off: number, out: Uint8Array): void => {
    let done = 0;
    while (done < out.length) {
      const n = readSync(fd, out, done, out.length - done, off + done);
      if (n <= 0) throw new TracerError("IO", `${path}: short read at ${off + done}`);
      done += n;
    }
  };
  return {
    size,
    read(off, len) {
      const out = new Uint8Array(len);
      readInto(off, out);
      return out;
    },
    readInto,
    close() {
      closeSync(fd);
    },
  };
}

export interface ElfSection {
  index: number;
  name: string;
  type: number;
  flags: number;
  addr: number;
  offset: number;
  size: number;
  link: number;
  info: number;
  entsize: number;
}

export interface ElfSegment {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfSymbol {
  name: string;
  value: number;
  size: number;
  /** STT_* (low nibble of st_info). */
  type: number;
  /** STB_* (high nibble of st_info). */
  bind: number;
  shndx: number;
}

export interface GoBuildInfo {
  /** e.g. "go1.19.8" */
  version: string;
  /** the module info text ("path\tcmd/x\nmod\t…"), "" when absent */
  modinfo: string;
}

const utf8 = new TextDecoder("utf-8", { fatal: false });
const latin1 = new TextDecoder("latin1");

/** A 64-bit value as a JS number; values above 2^53 are malformed for our purposes. */
function u64(v: DataView, off: number, what: string, file: string): number {
  const n = v.getBigUint64(off, true);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(file, `${what} out of range (${n})`);
  return Number(n);
}

function bad(file: string, why: string): TracerError {
  return new TracerError("IO", `${file}: not a readable ELF64 file: ${why}`);
}

export class ElfFile {
  readonly machine: number;
  /** ET_EXEC (2) or ET_DYN (3) */
  readonly type: number;
  readonly entry: number;
  readonly sections: ElfSection[] = [];
  readonly segments: ElfSegment[] = [];
  private readonly symCache = new Map<string, ElfSymbol[]>();

  private constructor(
    private readonly src: ByteSource,
    readonly path: string,
  ) {
    const file = path;
    if (src.size < 64) throw bad(file, `too short for an ELF header (${src.size} bytes)`);
    const h = src.read(0, 64);
    if (h[0] !== 0x7f || h[1] !== 0x45 || h[2] !== 0x4c || h[3] !== 0x46) throw bad(file, "no ELF magic");
    if (h[4] !== 2) throw bad(file, "not 64-bit (EI_CLASS)");
    if (h[5] !== 1) throw bad(file, "not little-endian (EI_DATA)");
    const v = new DataView(h.buffer, h.byteOffset, 64);
    this.type = v.getUint16(16, true);
    this.machine = v.getUint16(18, true);
    this.entry = u64(v, 24, "e_entry", file);
    const phoff = u64(v, 32, "e_phoff", file);
    const shoff = u64(v, 40, "e_shoff", file);
    const phentsize = v.getUint16(54, true);
    let phnum = v.getUint16(56, true);
    const shentsize = v.getUint16(58, true);
    let shnum = v.getUint16(60, true);
    let shstrndx = v.getUint16(62, true);

    // Section headers are optional (a stripped-to-the-bone file has none): tolerate shoff 0.
    if (shoff !== 0) {
      if (shentsize < 64) throw bad(file, `e_shentsize ${shentsize} < 64`);
      if (shoff + 64 > src.size) throw bad(file, `section headers at ${shoff} past end of file (${src.size})`);
      // Extended numbering: the real count/strndx live in section 0.
      const s0b = src.read(shoff, 64);
      const s0 = new DataView(s0b.buffer, s0b.byteOffset, 64);
      const realShnum = shnum === 0 ? u64(s0, 32, "sh_size[0]", file) : shnum;
      if (shstrndx === 0xffff) shstrndx = s0.getUint32(40, true);
      if (realShnum > ELF_LIMITS.maxSections) throw bad(file, `${realShnum} sections (limit ${ELF_LIMITS.maxSections})`);
      shnum = realShnum;
      if (shoff + shnum * shentsize > src.size) throw bad(file, `section header table (${shnum} × ${shentsize}) truncated`);
      const tab = src.read(shoff, shnum * shentsize);
      const tv = new DataView(tab.buffer, tab.byteOffset, tab.byteLength);
      const raw: (ElfSection & { nameOff: number })[] = [];
      for (let i = 0; i < shnum; i++) {
        const o = i * shentsize;
        raw.push({
          index: i,
          name: "",
          nameOff: tv.getUint32(o, true),
          type: tv.getUint32(o + 4, true),
          flags: u64(tv, o + 8, "sh_flags", file),
          addr: u64(tv, o + 16, "sh_addr", file),
          offset: u64(tv, o + 24, "sh_offset", file),
          size: u64(tv, o + 32, "sh_size", file),
          link: tv.getUint32(o + 40, true),
          info: tv.getUint32(o + 44, true),
          entsize: u64(tv, o + 56, "sh_entsize", file),
        });
      }
      const strtab = shstrndx < shnum ? raw[shstrndx] : undefined;
      const names = strtab && strtab.type !== SHT_NOBITS ? this.readChecked(strtab.offset, strtab.size, ELF_LIMITS.maxTableBytes, "section name table") : undefined;
      for (const r of raw) {
        const { nameOff, ...s } = r;
        if (names) s.name = cstr(names, nameOff);
        this.sections.push(s);
      }
    }

    if (phoff !== 0 && phnum !== 0) {
      if (phentsize < 56) throw bad(file, `e_phentsize ${phentsize} < 56`);
      if (phnum === 0xffff && this.sections[0]) phnum = this.sections[0].info;
      if (phnum > ELF_LIMITS.maxSegments) throw bad(file, `${phnum} program headers (limit ${ELF_LIMITS.maxSegments})`);
      if (phoff + phnum * phentsize > src.size) throw bad(file, `program headers (${phnum} × ${phentsize}) truncated`);
      const tab = src.read(phoff, phnum * phentsize);
      const tv = new DataView(tab.buffer, tab.byteOffset, tab.byteLength);
      for (let i = 0; i < phnum; i++) {
        const o = i * phentsize;
        this.segments.push({
          type: tv.getUint32(o, true),
          flags: tv.getUint32(o + 4, true),
          offset: u64(tv, o + 8, "p_offset", file),
          vaddr: u64(tv, o + 16, "p_vaddr", file),
          filesz: u64(tv, o + 32, "p_filesz", file),
          memsz: u64(tv, o + 40, "p_memsz", file),
        });
      }
    }
  }

  static fromBytes(buf: Uint8Array, name = "<bytes>"): ElfFile {
    return new ElfFile(bytesSource(buf), name);
  }

  /** Opens `path`; the caller must `close()` it. */
  static open(path: string): ElfFile {
    const src = fileSource(path);
    try {
      return new ElfFile(src, path);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Runs `fn` on the opened file and closes it whatever happens. */
  static with<T>(path: string, fn: (elf: ElfFile) => T): T {
    const elf = ElfFile.open(path);
    try {
      return fn(elf);
    } finally {
      elf.close();
    }
  }

  close(): void {
    this.src.close();
  }

  get size(): number {
    return this.src.size;
  }

  get arch(): "x86_64" | "aarch64" | "other" {
    return this.machine === EM_X86_64 ? "x86_64" : this.machine === EM_AARCH64 ? "aarch64" : "other";
  }

  section(name: string): ElfSection | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** The bytes of a section (empty for SHT_NOBITS); throws when it lies outside the file or exceeds the cap. */
  sectionBytes(s: ElfSection, cap = ELF_LIMITS.maxSectionBytes): Uint8Array {
    if (s.type === SHT_NOBITS) return new Uint8Array(0);
    return this.readChecked(s.offset, s.size, cap, `section ${s.name || s.index}`);
  }

  /** Bounded read of file bytes. */
  readChecked(off: number, len: number, cap: number, what: string): Uint8Array {
    if (len > cap) throw bad(this.path, `${what}: ${len} bytes exceeds the ${cap}-byte limit`);
    if (off > this.src.size || len > this.src.size - off) throw bad(this.path, `${what} (${off}+${len}) past end of file (${this.src.size})`);
    return this.src.read(off, len);
  }

  /** The symbol table section of that kind and its string table, checked; undefined when absent. */
  private symbolTable(table: ".symtab" | ".dynsym"): { syms: Uint8Array; names: Uint8Array } | undefined {
    const want = table === ".symtab" ? SHT_SYMTAB : SHT_DYNSYM;
    const sec = this.sections.find((s) => s.type === want);
    if (!sec) return undefined;
    if (sec.entsize !== 0 && sec.entsize !== 24) throw bad(this.path, `${table} entry size ${sec.entsize}`);
    const str = this.sections[sec.link];
    if (!str) throw bad(this.path, `${table} links to missing string table ${sec.link}`);
    return { syms: this.sectionBytes(sec, ELF_LIMITS.maxTableBytes), names: this.sectionBytes(str, ELF_LIMITS.maxTableBytes) };
  }

  private symbolAt(v: DataView, o: number, name: string): ElfSymbol {
    const info = v.getUint8(o + 4);
    return {
      name,
      type: info & 0xf,
      bind: info >> 4,
      shndx: v.getUint16(o + 6, true),
      value: u64(v, o + 8, "st_value", this.path),
      size: u64(v, o + 16, "st_size", this.path),
    };
  }

  /**
   * Every symbol of ".symtab" or ".dynsym" (by section type, so renamed sections still count) as
   * objects: for tests and small files. Empty when the table is absent. Cached per table.
   * Lookups by name go through findSymbols, which builds nothing for the other symbols.
   */
  symbols(table: ".symtab" | ".dynsym"): ElfSymbol[] {
    const hit = this.symCache.get(table);
    if (hit) return hit;
    const out: ElfSymbol[] = [];
    const t = this.symbolTable(table);
    if (t) {
      const v = new DataView(t.syms.buffer, t.syms.byteOffset, t.syms.byteLength);
      const n = Math.floor(t.syms.length / 24);
      for (let i = 1; i < n; i++) out.push(this.symbolAt(v, i * 24, cstr(t.names, v.getUint32(i * 24, true))));
    }
    this.symCache.set(table, out);
    return out;
  }

  /** Whether the table exists with at least one symbol besides the null entry. */
  hasSymbols(table: ".symtab" | ".dynsym"): boolean {
    const want = table === ".symtab" ? SHT_SYMTAB : SHT_DYNSYM;
    const sec = this.sections.find((s) => s.type === want);
    return !!sec && sec.size >= 48; // 24-byte entries, the first the null symbol
  }

  /**
   * First defined symbol (non-zero value) with each wanted name, from .dynsym then .symtab.
   * Exported (dynamic) definitions win: they are what other objects call.
   *
   * Names are compared as bytes in the string table: an executable like Node exports ~75,000
   * symbols and keeps ~110,000 more in .symtab, and making an object and a string of each (what
   * this did through symbols()) took ~60 MB of heap at the agent's start, its peak RSS.
   */
  findSymbols(names: Iterable<string>, tables: (".dynsym" | ".symtab")[] = [".dynsym", ".symtab"]): Map<string, ElfSymbol> {
    const wanted = [...new Set(names)].map((n) => ({ name: n, bytes: Buffer.from(n, "latin1") }));
    const out = new Map<string, ElfSymbol>();
    for (const table of tables) {
      if (out.size === wanted.length) break;
      const t = this.symbolTable(table);
      if (!t) continue;
      const { syms, names: str } = t;
      const v = new DataView(syms.buffer, syms.byteOffset, syms.byteLength);
      const n = Math.floor(syms.length / 24);
      for (let i = 1; i < n; i++) {
        const o = i * 24;
        if (v.getUint16(o + 6, true) === 0) continue; // undefined here (SHN_UNDEF)
        const at = v.getUint32(o, true);
        for (const w of wanted) {
          if (out.has(w.name) || !bytesNameAt(str, at, w.bytes)) continue;
          const sym = this.symbolAt(v, o, w.name);
          if (sym.value !== 0) out.set(w.name, sym);
          break;
        }
      }
    }
    return out;
  }

  /**
   * The file offset of virtual address `vaddr` through the PT_LOAD segment holding it (uprobes take
   * file offsets). Undefined when no loaded file bytes back the address (e.g. .bss).
   */
  vaddrToOffset(vaddr: number): number | undefined {
    for (const p of this.segments) {
      if (p.type === PT_LOAD && vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz) return vaddr - p.vaddr + p.offset;
    }
    return undefined;
  }

  /** Reads `len` bytes at virtual address `vaddr`, bounded; undefined when unmapped or truncated. */
  readVaddr(vaddr: number, len: number, cap = ELF_LIMITS.maxSectionBytes): Uint8Array | undefined {
    const off = this.vaddrToOffset(vaddr);
    if (off === undefined) return undefined;
    const seg = this.segments.find((p) => p.type === PT_LOAD && vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz)!;
    if (vaddr + len > seg.vaddr + seg.filesz) return undefined;
    if (len > cap || off + len > this.src.size) return undefined;
    return this.src.read(off, len);
  }

  /** The machine code of a function symbol (bounded by `cap`). */
  functionBytes(sym: ElfSymbol, cap = 1 << 20): Uint8Array {
    if (sym.size === 0) throw bad(this.path, `symbol ${sym.name} has size 0`);
    const b = this.readVaddr(sym.value, sym.size, cap);
    if (!b) throw bad(this.path, `code of ${sym.name} (0x${sym.value.toString(16)}+${sym.size}) is not in the file`);
    return b;
  }

  /** DT_SONAME from the dynamic section, when present. */
  soname(): string | undefined {
    const dyn = this.sections.find((s) => s.type === 6 /* SHT_DYNAMIC */);
    if (!dyn) return undefined;
    const str = this.sections[dyn.link];
    if (!str) return undefined;
    const b = this.sectionBytes(dyn, 1 << 20);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let o = 0; o + 16 <= b.length; o += 16) {
      const tag = v.getBigInt64(o, true);
      if (tag === 0n) break;
      if (tag === 14n /* DT_SONAME */) {
        const names = this.sectionBytes(str, ELF_LIMITS.maxTableBytes);
        return cstr(names, Number(v.getBigUint64(o + 8, true) & 0xffffffffn));
      }
    }
    return undefined;
  }

  /** The Go build ID from .note.go.buildid, when present. */
  goBuildId(): string | undefined {
    const s = this.section(".note.go.buildid");
    if (!s) return undefined;
    const b = this.sectionBytes(s, 1 << 16);
    for (const n of notes(b)) if (n.name === "Go" && n.type === 4) return latin1.decode(n.desc);
    return undefined;
  }

  /**
   * Go version and module info from the build info blob ("\xff Go buildinf:"): the .go.buildinfo
   * section, else (no section headers) the first writable PT_LOAD segment's start. Handles both the
   * pointer format (Go < 1.18) and the inline varint-string format (flag bit 1, Go ≥ 1.18).
   */
  goBuildInfo(): GoBuildInfo | undefined {
    let blob: Uint8Array | undefined;
    const s = this.section(".go.buildinfo");
    if (s) blob = this.sectionBytes(s, 1 << 20);
    else if (this.sections.length === 0) {
      const rw = this.segments.find((p) => p.type === PT_LOAD && p.flags & 2);
      if (rw) blob = this.readVaddr(rw.vaddr, Math.min(rw.filesz, 64 << 10));
    }
    if (!blob) return undefined;
    const at = indexOf(blob, GO_BUILDINFO_MAGIC, 16);
    if (at < 0 || at + 32 > blob.length) return undefined;
    const ptrSize = blob[at + 14]!;
    const flags = blob[at + 15]!;
    if (flags & 1) return undefined; // big-endian: not an architecture we probe
    if (flags & 2) {
      let pos = at + 32;
      const ver = varString(blob, pos);
      if (!ver) return undefined;
      pos = ver.next;
      const mod = varString(blob, pos);
      return { version: ver.text, modinfo: stripModinfoSentinels(mod?.text ?? "") };
    }
    if (ptrSize !== 8) return undefined;
    const v = new DataView(blob.buffer, blob.byteOffset + at, 32);
    const version = this.goStringAt(Number(v.getBigUint64(16, true)));
    if (version === undefined) return undefined;
    const modinfo = this.goStringAt(Number(v.getBigUint64(24, true))) ?? "";
    return { version, modinfo: stripModinfoSentinels(modinfo) };
  }

  /** A Go string header {ptr, len} at `vaddr`, read through the segments (bounded to 64 KiB). */
  private goStringAt(vaddr: number): string | undefined {
    const hdr = this.readVaddr(vaddr, 16);
    if (!hdr) return undefined;
    const v = new DataView(hdr.buffer, hdr.byteOffset, 16);
    const ptr = v.getBigUint64(0, true);
    const len = v.getBigUint64(8, true);
    if (len > 65536n || ptr > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    const b = this.readVaddr(Number(ptr), Number(len));
    return b ? utf8.decode(b) : undefined;
  }

  /**
   * Strings in a section (default .rodata) matching `re`, searched in bounded windows read into
   * one reused buffer. Returns the first match's text, or undefined. `re` must not use the g/y
   * flags, and a match must be shorter than 256 bytes when `re` starts with a literal.
   *
   * When `re` starts with a literal of 3+ characters (all the callers' patterns do), the bytes are
   * searched for it natively and only the text just after a hit is decoded for the regex:
   * decoding every window as a string made ~8 MB of garbage per 4 MB searched, ~90 MB for
   * Node's 47 MB .rodata, which set the agent's peak RSS at its start.
   */
  findString(re: RegExp, sectionName = ".rodata", cap = ELF_LIMITS.maxSectionBytes): string | undefined {
    const s = this.section(sectionName);
    if (!s || s.type === SHT_NOBITS) return undefined;
    if (s.size > cap || s.offset > this.src.size || s.size > this.src.size - s.offset) return undefined;
    // Windows with an overlap so a match spanning a boundary is not lost.
    const win = 4 << 20;
    const overlap = 4096;
    const literal = literalPrefix(re);
    const buf = Buffer.allocUnsafe(Math.min(win, s.size));
    for (let off = 0; off < s.size; off += win - overlap) {
      const len = Math.min(win, s.size - off);
      const bytes = buf.subarray(0, len);
      this.src.readInto(s.offset + off, bytes);
      if (literal) {
        for (let at = bytes.indexOf(literal); at >= 0; at = bytes.indexOf(literal, at + 1)) {
          const m = re.exec(latin1.decode(bytes.subarray(at, at + MAX_LITERAL_MATCH)));
          if (m?.index === 0) return m[0];
        }
      } else {
        const m = re.exec(latin1.decode(bytes));
        if (m) return m[0];
      }
      if (off + len >= s.size) break;
    }
    return undefined;
  }
}

const MAX_LITERAL_MATCH = 256;

/** The literal text a regex must start with (escaped punctuation included), when 3+ bytes long. */
export function literalPrefix(re: RegExp): Buffer | undefined {
  if (re.flags.includes("i")) return undefined;
  let lit = "";
  const src = re.source;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === "\\") {
      const n = src[i + 1];
      if (n === undefined || /[0-9A-Za-z]/.test(n)) break; // \d, \w, \b, back-references: not literal
      lit += n;
      i++;
      continue;
    }
    if ("^$.*+?()[]{}|".includes(c)) {
      // A quantifier applies to the character before it, which is then not certain.
      if ("*?{".includes(c)) lit = lit.slice(0, -1);
      break;
    }
    lit += c;
  }
  return lit.length >= 3 ? Buffer.from(lit, "latin1") : undefined;
}

export const GO_BUILDINFO_MAGIC = new Uint8Array([0xff, 0x20, 0x47, 0x6f, 0x20, 0x62, 0x75, 0x69, 0x6c, 0x64, 0x69, 0x6e, 0x66, 0x3a]); // "\xff Go buildinf:"

/** The module info blob is framed by 16-byte sentinels; callers want the text between. */
function stripModinfoSentinels(s: string): string {
  return s.length >= 33 && s.charCodeAt(s.length - 17) === 0x0a ? s.slice(16, -16) : s;
}

function varString(b: Uint8Array, pos: number): { text: string; next: number } | undefined {
  let n = 0;
  let shift = 0;
  for (;;) {
    if (pos >= b.length || shift > 28) return undefined;
    const c = b[pos++]!;
    n |= (c & 0x7f) << shift;
    if (!(c & 0x80)) break;
    shift += 7;
  }
  if (n < 0 || pos + n > b.length) return undefined;
  return { text: utf8.decode(b.subarray(pos, pos + n)), next: pos + n };
}

/** Whether the NUL-terminated string at `at` of `table` is exactly `name`. */
function bytesNameAt(table: Uint8Array, at: number, name: Uint8Array): boolean {
  if (at + name.length >= table.length) return false; // room for the name and its NUL
  for (let k = 0; k < name.length; k++) if (table[at + k] !== name[k]) return false;
  return table[at + name.length] === 0;
}

/** NUL-terminated string at `off`, bounded; "" when out of range. */
export function cstr(b: Uint8Array, off: number): string {
  if (off >= b.length) return "";
  let end = off;
  const lim = Math.min(b.length, off + ELF_LIMITS.maxNameBytes);
  while (end < lim && b[end] !== 0) end++;
  return latin1.decode(b.subarray(off, end));
}

/** Position of `needle` in `hay` at a multiple of `align`, or -1. */
export function indexOf(hay: Uint8Array, needle: Uint8Array, align = 1): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i += align) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** ELF notes of a SHT_NOTE section, stopping at the first malformed one. */
export function* notes(b: Uint8Array): Generator<{ name: string; type: number; desc: Uint8Array }> {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = 0;
  while (o + 12 <= b.length) {
    const namesz = v.getUint32(o, true);
    const descsz = v.getUint32(o + 4, true);
    const type = v.getUint32(o + 8, true);
    const nameEnd = o + 12 + namesz;
    const descOff = o + 12 + ((namesz + 3) & ~3);
    if (namesz > b.length || descsz > b.length || descOff + descsz > b.length) return;
    const name = latin1.decode(b.subarray(o + 12, nameEnd)).replace(/\0+$/, "");
    yield { name, type, desc: b.subarray(descOff, descOff + descsz) };
    o = descOff + ((descsz + 3) & ~3);
  }
}
