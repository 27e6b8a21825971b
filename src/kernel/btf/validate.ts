/**
 * BTF sanity checks done before a file is handed to libbpf as btf_custom_path.
 *
 * Contract: `parseBtf` either returns a fully walked, self-consistent BTF blob or throws BtfError
 * whose message says what is wrong (a one-line reason fit for a log). It checks the header
 * (magic 0xeB9F little-endian, version 1, flags 0), the section layout (inside the file, type
 * section 4-byte aligned and before the strings, string section NUL-delimited), then walks every
 * type record: known kind, record length, name offsets inside the string section, and every
 * referenced type id inside the blob. The walk is linear and costs ~20 ms for a full vmlinux BTF.
 *
 * Raw BTF and ELF files carrying a `.BTF` section (vmlinux images) are both accepted by
 * `validateBtfFile`, because libbpf's btf__parse accepts both.
 */
import { closeSync, openSync, readSync, fstatSync } from "node:fs";

export const BTF_MAGIC = 0xeb9f;
/** Highest kind this parser knows (BTF_KIND_ENUM64 in Linux 6.0+). */
export const BTF_KIND_MAX = 19;

export const KIND_NAMES = [
  "UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE",
  "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT", "DECL_TAG", "TYPE_TAG", "ENUM64",
] as const;

export enum Kind {
  INT = 1, PTR = 2, ARRAY = 3, STRUCT = 4, UNION = 5, ENUM = 6, FWD = 7, TYPEDEF = 8, VOLATILE = 9,
  CONST = 10, RESTRICT = 11, FUNC = 12, FUNC_PROTO = 13, VAR = 14, DATASEC = 15, FLOAT = 16,
  DECL_TAG = 17, TYPE_TAG = 18, ENUM64 = 19,
}

export class BtfError extends Error {
  override name = "BtfError";
}

export interface BtfHeader {
  version: number;
  flags: number;
  hdrLen: number;
  typeOff: number;
  typeLen: number;
  strOff: number;
  strLen: number;
}

/** One type record; `members` holds (name offset, type id, value) triples for kinds with a vlen. */
export interface BtfType {
  id: number;
  kind: number;
  nameOff: number;
  vlen: number;
  kflag: boolean;
  /** size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT, referenced type id otherwise */
  sizeOrType: number;
  /** byte offset of the record inside the type section */
  offset: number;
}

export interface ParsedBtf {
  header: BtfHeader;
  /** number of types in this blob (type ids 1..typeCount, plus the base's when split) */
  typeCount: number;
  firstTypeId: number;
  kindCounts: Record<string, number>;
  /** bytes after the string section that libbpf ignores */
  trailingBytes: number;
  /** type(id) → record; name(off) → string. Only valid while the input bytes are alive. */
  type(id: number): BtfType | undefined;
  name(off: number): string;
  /** members of STRUCT/UNION: { name, type, offset(bits) } */
  members(t: BtfType): { name: string; type: number; offset: number }[];
  /** ARRAY record: element type, index type and length */
  array(t: BtfType): { type: number; indexType: number; nelems: number };
  /** enumerator names of ENUM/ENUM64 */
  enumerators(t: BtfType): string[];
}

export interface ParseOptions {
  /** for split BTF: the base's type count and string length (ids and offsets continue from them) */
  baseTypeCount?: number;
  baseStrLen?: number;
}

export type Validation =
  | { ok: true; typeCount: number; format: "raw" | "elf"; bytes: number }
  | { ok: false; reason: string };

const HDR_MIN = 24;

/** Parses and walks a raw BTF blob; throws BtfError with the reason when it is not usable. */
export function parseBtf(bytes: Uint8Array, opts: ParseOptions = {}): ParsedBtf {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const header = readHeader(bytes, view);
  const typeStart = header.hdrLen + header.typeOff;
  const strStart = header.hdrLen + header.strOff;
  checkStrings(bytes, strStart, header.strLen, opts.baseStrLen !== undefined);
  const baseCount = opts.baseTypeCount ?? 0;
  const baseStrLen = opts.baseStrLen ?? 0;
  const walk = walkTypes(view, typeStart, header.typeLen, baseCount, baseStrLen + header.strLen);
  const lastId = baseCount + walk.offsets.length;
  if (walk.maxRef > lastId) {
    const split = baseCount === 0 ? " (split BTF? it needs its base)" : "";
    throw new BtfError(`type id ${walk.maxRefFrom} references type id ${walk.maxRef}, but the last type is ${lastId}${split}`);
  }
  const decoder = new TextDecoder();
  const typeAt = (id: number): BtfType | undefined => {
    const i = id - baseCount - 1;
    if (i < 0 || i >= walk.offsets.length) return undefined;
    return recordAt(view, typeStart, walk.offsets[i]!, id);
  };
  const nameAt = (off: number): string => {
    const local = off - baseStrLen;
    if (local < 0 || local >= header.strLen) return "";
    let end = strStart + local;
    while (end < strStart + header.strLen && bytes[end] !== 0) end++;
    return decoder.decode(bytes.subarray(strStart + local, end));
  };
  return {
    header,
    typeCount: walk.offsets.length,
    firstTypeId: baseCount + 1,
    kindCounts: walk.kindCounts,
    trailingBytes: bytes.byteLength - (strStart + header.strLen),
    type: typeAt,
    name: nameAt,
    members: (t) => membersOf(view, typeStart, t, nameAt),
    array: (t) => {
      const p = typeStart + t.offset + 12;
      return { type: view.getUint32(p, true), indexType: view.getUint32(p + 4, true), nelems: view.getUint32(p + 8, true) };
    },
    enumerators: (t) => {
      if (t.kind !== Kind.ENUM && t.kind !== Kind.ENUM64) return [];
      const step = t.kind === Kind.ENUM ? 8 : 12;
      const p = typeStart + t.offset + 12;
      return Array.from({ length: t.vlen }, (_, i) => nameAt(view.getUint32(p + step * i, true)));
    },
  };
}

function readHeader(bytes: Uint8Array, view: DataView): BtfHeader {
  if (bytes.byteLength < HDR_MIN) throw new BtfError(`too short for a BTF header (${bytes.byteLength} bytes)`);
  const magic = view.getUint16(0, true);
  if (magic !== BTF_MAGIC) {
    if (magic === 0x9feb) throw new BtfError("big-endian BTF: this agent only loads little-endian BTF");
    throw new BtfError(`bad magic 0x${magic.toString(16).padStart(4, "0")} (want 0xeb9f)`);
  }
  const h: BtfHeader = {
    version: bytes[2]!,
    flags: bytes[3]!,
    hdrLen: view.getUint32(4, true),
    typeOff: view.getUint32(8, true),
    typeLen: view.getUint32(12, true),
    strOff: view.getUint32(16, true),
    strLen: view.getUint32(20, true),
  };
  if (h.version !== 1) throw new BtfError(`unsupported BTF version ${h.version} (want 1)`);
  if (h.flags !== 0) throw new BtfError(`unsupported BTF flags 0x${h.flags.toString(16)}`);
  if (h.hdrLen < HDR_MIN || h.hdrLen > bytes.byteLength) throw new BtfError(`bad header length ${h.hdrLen}`);
  const body = bytes.byteLength - h.hdrLen;
  if (h.typeOff % 4 !== 0) throw new BtfError(`type section offset ${h.typeOff} is not 4-byte aligned`);
  if (h.typeOff + h.typeLen > h.strOff) {
    throw new BtfError(`type section (${h.typeOff}+${h.typeLen}) overlaps or follows the string section at ${h.strOff}`);
  }
  if (h.strOff + h.strLen > body) {
    throw new BtfError(`string section (${h.strOff}+${h.strLen}) runs past the end of the data (${body} bytes): truncated?`);
  }
  return h;
}

function checkStrings(bytes: Uint8Array, start: number, len: number, split: boolean): void {
  if (len === 0) {
    if (split) return;
    throw new BtfError("empty string section");
  }
  if (!split && bytes[start] !== 0) throw new BtfError("string section does not start with an empty string (split BTF? it needs its base)");
  if (bytes[start + len - 1] !== 0) throw new BtfError("string section is not NUL-terminated");
}

interface Walk {
  offsets: number[];
  kindCounts: Record<string, number>;
  maxRef: number;
  maxRefFrom: number;
}

/** Linear walk over the type section; records each type's offset and the highest referenced id. */
function walkTypes(view: DataView, start: number, len: number, baseCount: number, strLimit: number): Walk {
  const w: Walk = { offsets: [], kindCounts: {}, maxRef: 0, maxRefFrom: 0 };
  let off = 0;
  while (off < len) {
    const id = baseCount + w.offsets.length + 1;
    if (off + 12 > len) throw new BtfError(`type id ${id} header runs past the type section`);
    const t = recordAt(view, start, off, id);
    if (t.kind === 0 || t.kind > BTF_KIND_MAX) throw new BtfError(`type id ${id} has unknown kind ${t.kind}`);
    if (t.nameOff >= strLimit) throw new BtfError(`type id ${id} name offset ${t.nameOff} is outside the string section`);
    const size = 12 + extraSize(t);
    if (off + size > len) throw new BtfError(`type id ${id} (${KIND_NAMES[t.kind]}) runs past the type section`);
    checkRefs(view, start + off, t, strLimit, w);
    w.offsets.push(off);
    const k = KIND_NAMES[t.kind]!;
    w.kindCounts[k] = (w.kindCounts[k] ?? 0) + 1;
    off += size;
  }
  return w;
}

function recordAt(view: DataView, start: number, off: number, id: number): BtfType {
  const info = view.getUint32(start + off + 4, true);
  return {
    id,
    nameOff: view.getUint32(start + off, true),
    vlen: info & 0xffff,
    kind: (info >>> 24) & 0x1f,
    kflag: info >>> 31 === 1,
    sizeOrType: view.getUint32(start + off + 8, true),
    offset: off,
  };
}

/** Bytes that follow the 12-byte common record, per kind (see the kernel's Documentation/bpf/btf.rst). */
function extraSize(t: BtfType): number {
  switch (t.kind) {
    case Kind.INT: case Kind.VAR: case Kind.DECL_TAG: return 4;
    case Kind.ARRAY: return 12;
    case Kind.STRUCT: case Kind.UNION: case Kind.DATASEC: case Kind.ENUM64: return 12 * t.vlen;
    case Kind.ENUM: case Kind.FUNC_PROTO: return 8 * t.vlen;
    default: return 0;
  }
}

/** Kinds whose third word is a type id (the others store a size there). */
const REFERS = new Set<number>([
  Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.FUNC, Kind.FUNC_PROTO,
  Kind.VAR, Kind.DECL_TAG, Kind.TYPE_TAG,
]);

function checkRefs(view: DataView, rec: number, t: BtfType, strLimit: number, w: Walk): void {
  const ref = (id: number) => {
    if (id > w.maxRef) { w.maxRef = id; w.maxRefFrom = t.id; }
  };
  const name = (off: number) => {
    if (off >= strLimit) throw new BtfError(`type id ${t.id} member name offset ${off} is outside the string section`);
  };
  if (REFERS.has(t.kind)) ref(t.sizeOrType);
  const p = rec + 12;
  switch (t.kind) {
    case Kind.ARRAY:
      ref(view.getUint32(p, true));
      ref(view.getUint32(p + 4, true));
      break;
    case Kind.STRUCT: case Kind.UNION:
      for (let i = 0; i < t.vlen; i++) { name(view.getUint32(p + 12 * i, true)); ref(view.getUint32(p + 12 * i + 4, true)); }
      break;
    case Kind.FUNC_PROTO:
      for (let i = 0; i < t.vlen; i++) { name(view.getUint32(p + 8 * i, true)); ref(view.getUint32(p + 8 * i + 4, true)); }
      break;
    case Kind.DATASEC:
      for (let i = 0; i < t.vlen; i++) ref(view.getUint32(p + 12 * i, true));
      break;
    case Kind.ENUM: case Kind.ENUM64: {
      const step = t.kind === Kind.ENUM ? 8 : 12;
      for (let i = 0; i < t.vlen; i++) name(view.getUint32(p + step * i, true));
      break;
    }
  }
}

function membersOf(view: DataView, start: number, t: BtfType, nameAt: (off: number) => string) {
  if (t.kind !== Kind.STRUCT && t.kind !== Kind.UNION) return [];
  const out: { name: string; type: number; offset: number }[] = [];
  const p = start + t.offset + 12;
  for (let i = 0; i < t.vlen; i++) {
    const raw = view.getUint32(p + 12 * i + 8, true);
    out.push({
      name: nameAt(view.getUint32(p + 12 * i, true)),
      type: view.getUint32(p + 12 * i + 4, true),
      offset: t.kflag ? raw & 0xffffff : raw, // kflag: low 24 bits offset, high 8 bitfield size
    });
  }
  return out;
}

/** Non-throwing wrapper around parseBtf for raw BTF bytes. */
export function validateBtf(bytes: Uint8Array, opts?: ParseOptions): Validation {
  try {
    const p = parseBtf(bytes, opts);
    if (p.typeCount === 0) return { ok: false, reason: "no types" };
    return { ok: true, typeCount: p.typeCount, format: "raw", bytes: bytes.byteLength };
  } catch (e) {
    if (e instanceof BtfError) return { ok: false, reason: e.message };
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// ELF: vmlinux images carry BTF in a `.BTF` section. Only the headers and that section are read,
// so a 500 MB debug vmlinux costs a few small reads.

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];

export function isElf(head: Uint8Array): boolean {
  return ELF_MAGIC.every((b, i) => head[i] === b);
}

/** Random-access reader so ELF parsing works on a file descriptor and on bytes alike. */
export interface ByteSource {
  size: number;
  read(pos: number, len: number): Uint8Array;
}

export function bytesSource(bytes: Uint8Array): ByteSource {
  return { size: bytes.byteLength, read: (pos, len) => bytes.subarray(pos, Math.min(pos + len, bytes.byteLength)) };
}

/** Returns the named section's bytes, or undefined when the ELF has no such section. Throws BtfError on a malformed ELF. */
export function readElfSection(src: ByteSource, wanted: string): Uint8Array | undefined {
  const eh = src.read(0, 64);
  if (eh.byteLength < 52 || !isElf(eh)) throw new BtfError("not an ELF file");
  const is64 = eh[4] === 2;
  if (eh[5] !== 1) throw new BtfError("big-endian ELF: this agent only loads little-endian BTF");
  const v = new DataView(eh.buffer, eh.byteOffset, eh.byteLength);
  const shoff = is64 ? Number(v.getBigUint64(0x28, true)) : v.getUint32(0x20, true);
  const shentsize = v.getUint16(is64 ? 0x3a : 0x2e, true);
  const shnum = v.getUint16(is64 ? 0x3c : 0x30, true);
  const shstrndx = v.getUint16(is64 ? 0x3e : 0x32, true);
  if (shnum === 0 || shstrndx >= shnum || shoff + shnum * shentsize > src.size) throw new BtfError("ELF section headers are missing or truncated");
  const table = src.read(shoff, shnum * shentsize);
  const tv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const sec = (i: number) => {
    const b = i * shentsize;
    return is64
      ? { name: tv.getUint32(b, true), off: Number(tv.getBigUint64(b + 0x18, true)), size: Number(tv.getBigUint64(b + 0x20, true)) }
      : { name: tv.getUint32(b, true), off: tv.getUint32(b + 0x10, true), size: tv.getUint32(b + 0x14, true) };
  };
  const strtab = sec(shstrndx);
  if (strtab.off + strtab.size > src.size) throw new BtfError("ELF section name table is truncated");
  const names = src.read(strtab.off, strtab.size);
  const want = new TextEncoder().encode(wanted + "\0");
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    if (!matchesAt(names, s.name, want)) continue;
    if (s.off + s.size > src.size) throw new BtfError(`ELF section ${wanted} is truncated`);
    return src.read(s.off, s.size);
  }
  return undefined;
}

function matchesAt(buf: Uint8Array, at: number, want: Uint8Array): boolean {
  if (at + want.byteLength > buf.byteLength) return false;
  for (let i = 0; i < want.byteLength; i++) if (buf[at + i] !== want[i]) return false;
  return true;
}

/** Validates a file that libbpf would be given: raw BTF, or an ELF image with a `.BTF` section. */
export function validateBtfFile(path: string): Validation {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    return { ok: false, reason: `cannot open: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  }
  try {
    const src = fdSource(fd);
    const head = src.read(0, 4);
    if (!isElf(head)) return validateBtf(src.read(0, src.size));
    const btf = readElfSection(src, ".BTF");
    if (!btf) return { ok: false, reason: "ELF image has no .BTF section (kernel built without CONFIG_DEBUG_INFO_BTF)" };
    const v = validateBtf(btf);
    return v.ok ? { ...v, format: "elf" } : { ok: false, reason: `.BTF section: ${v.reason}` };
  } catch (e) {
    if (e instanceof BtfError) return { ok: false, reason: e.message };
    return { ok: false, reason: `cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  } finally {
    closeSync(fd);
  }
}

function fdSource(fd: number): ByteSource {
  const size = fstatSync(fd).size;
  return {
    size,
    read(pos, len) {
      const n = Math.max(0, Math.min(len, size - pos));
      const buf = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const r = readSync(fd, buf, got, n - got, pos + got);
        if (r === 0) break;
        got += r;
      }
      return buf.subarray(0, got);
    },
  };
}
