/**
 * In-process `.tar.xz` extraction for BTFHub archives (`<release>.btf.tar.xz` holding one
 * `<release>.btf`). No host `xz` or `tar` is used: xz is decoded by xz-embedded compiled to
 * WebAssembly (the `xz-decompress` package, which inlines its wasm so it works inside a
 * `bun build --compile` binary) and tar is parsed here.
 *
 * Contract: everything happens in memory with size caps; entry names are only reported, never
 * used as file system paths, so a hostile archive cannot write anywhere. Errors are thrown as
 * ArchiveError with a one-line reason.
 */
import { XzReadableStream } from "xz-decompress";

export class ArchiveError extends Error {
  override name = "ArchiveError";
}

/** Cap on decompressed size: full vmlinux BTF is 4–12 MB, so 256 MiB only stops bombs. */
export const MAX_XZ_OUTPUT = 256 * 1024 * 1024;

const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

/** xz-embedded's xz_ret codes, for readable messages. */
const XZ_ERRORS: Record<string, string> = {
  "2": "unsupported integrity check",
  "3": "out of memory",
  "4": "memory limit reached",
  "5": "not in .xz format",
  "6": "unsupported compression options",
  "7": "corrupt compressed data (integrity check failed)",
  "8": "truncated input",
};

export function isXz(bytes: Uint8Array): boolean {
  return XZ_MAGIC.every((b, i) => bytes[i] === b);
}

/** Decompresses one .xz stream. Throws ArchiveError for non-xz, corrupt, truncated or oversized input. */
export async function xzDecompress(input: Uint8Array, maxOutput = MAX_XZ_OUTPUT): Promise<Uint8Array> {
  if (!isXz(input)) throw new ArchiveError("not an .xz stream (bad magic)");
  const reader = new XzReadableStream(new Blob([input]).stream()).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxOutput) {
        await reader.cancel();
        throw new ArchiveError(`decompressed size exceeds ${maxOutput} bytes`);
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof ArchiveError) throw e;
    const code = /error code (\d+)/.exec(String((e as Error)?.message ?? e))?.[1];
    throw new ArchiveError(`xz: ${code ? XZ_ERRORS[code] ?? `error ${code}` : String((e as Error)?.message ?? e)}`);
  }
  return concat(chunks, total);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) { out.set(c, off); off += c.byteLength; }
  return out;
}

export interface TarEntry {
  name: string;
  type: "file" | "dir" | "other";
  data: Uint8Array;
}

const BLOCK = 512;
const dec = new TextDecoder();

/** Parses a ustar/pax/GNU tar image. Throws ArchiveError on a bad checksum or a truncated entry. */
export function untar(tar: Uint8Array): TarEntry[] {
  const out: TarEntry[] = [];
  let pos = 0;
  let longName: string | undefined;
  let paxPath: string | undefined;
  while (pos + BLOCK <= tar.byteLength) {
    const h = tar.subarray(pos, pos + BLOCK);
    if (h.every((b) => b === 0)) break; // end-of-archive marker
    verifyChecksum(h, pos);
    const size = readSize(h, pos);
    const dataStart = pos + BLOCK;
    if (dataStart + size > tar.byteLength) throw new ArchiveError(`tar entry at offset ${pos} is truncated`);
    const data = tar.subarray(dataStart, dataStart + size);
    const flag = String.fromCharCode(h[156]!);
    pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (flag === "L") { longName = cstr(data); continue; }
    if (flag === "x") { paxPath = paxAttr(data, "path"); continue; }
    if (flag === "g") continue;
    const name = paxPath ?? longName ?? headerName(h);
    longName = paxPath = undefined;
    const type = flag === "0" || flag === "\0" || flag === "7" ? "file" : flag === "5" ? "dir" : "other";
    out.push({ name, type, data });
  }
  if (out.length === 0) throw new ArchiveError("not a tar archive or an empty one");
  return out;
}

function verifyChecksum(h: Uint8Array, pos: number): void {
  const stored = parseOctal(h.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  if (stored === undefined || stored !== sum) throw new ArchiveError(`tar header checksum mismatch at offset ${pos} (not a tar archive?)`);
}

function readSize(h: Uint8Array, pos: number): number {
  if (h[124]! & 0x80) {
    // GNU base-256: big-endian binary in the remaining 11 bytes
    let n = 0;
    for (let i = 125; i < 136; i++) n = n * 256 + h[i]!;
    return n;
  }
  const n = parseOctal(h.subarray(124, 136));
  if (n === undefined) throw new ArchiveError(`tar entry at offset ${pos} has a bad size field`);
  return n;
}

function parseOctal(field: Uint8Array): number | undefined {
  const s = cstr(field).trim();
  if (s === "") return 0;
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : undefined;
}

function cstr(b: Uint8Array): string {
  const end = b.indexOf(0);
  return dec.decode(end < 0 ? b : b.subarray(0, end));
}

function headerName(h: Uint8Array): string {
  const name = cstr(h.subarray(0, 100));
  const ustar = cstr(h.subarray(257, 263)).startsWith("ustar");
  const prefix = ustar ? cstr(h.subarray(345, 500)) : "";
  return prefix ? `${prefix}/${name}` : name;
}

/** pax records are "<len> <key>=<value>\n". */
function paxAttr(data: Uint8Array, key: string): string | undefined {
  for (const rec of dec.decode(data).split("\n")) {
    const m = /^\d+ ([^=]+)=(.*)$/.exec(rec);
    if (m && m[1] === key) return m[2];
  }
  return undefined;
}

function baseName(p: string): string {
  return p.replace(/\/+$/, "").split("/").pop() ?? p;
}

/**
 * Picks the BTF file out of a BTFHub `.btf.tar.xz`: the entry named `<release>.btf` if present,
 * otherwise the only `*.btf` regular file. Throws ArchiveError when there is none or it is ambiguous.
 */
export async function extractBtfFromTarXz(archive: Uint8Array, release?: string): Promise<{ name: string; data: Uint8Array }> {
  const entries = untar(await xzDecompress(archive));
  const btfs = entries.filter((e) => e.type === "file" && baseName(e.name).endsWith(".btf"));
  const exact = release ? btfs.find((e) => baseName(e.name) === `${release}.btf`) : undefined;
  const pick = exact ?? (btfs.length === 1 ? btfs[0] : undefined);
  if (!pick) {
    const names = entries.map((e) => e.name).slice(0, 10).join(", ");
    const why = btfs.length === 0 ? "holds no .btf file" : `holds ${btfs.length} .btf files and none is ${release}.btf`;
    throw new ArchiveError(`archive ${why} (entries: ${names})`);
  }
  return { name: pick.name, data: pick.data };
}
