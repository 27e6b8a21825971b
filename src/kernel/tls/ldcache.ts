/**
 * The dynamic loader's cache (/etc/ld.so.cache, glibc's "glibc-ld.so.cache1.1" format, alone or after
 * the old "ld.so-1.7.0" table): the shared libraries the host's programs load by name.
 *
 * Why: uprobes are attached per file for all processes, so probing the host's TLS libraries at start
 * means a program that maps one later (Python's `import ssl`) is probed before its first TLS call —
 * the kernel installs the breakpoints when the file is mapped. Candidates are picked by file name
 * here and then classified by their exported symbols (discover.ts), never by name alone.
 */
import { readFileSync } from "node:fs";
import { TracerError } from "../../errors.ts";
import { cstr, indexOf } from "./elf.ts";

export interface LdCacheEntry {
  /** the name programs ask for, e.g. "libssl.so.3" */
  name: string;
  /** where the loader finds it */
  path: string;
  /** glibc's entry flags (bits 8–15: architecture; 0x0303 = x86-64 libc6) */
  flags: number;
}

const NEW_MAGIC = new TextEncoder().encode("glibc-ld.so.cache1.1");
const NEW_HEADER = 48;
const NEW_ENTRY = 24;
const MAX_ENTRIES = 1 << 20;

export function parseLdCache(b: Uint8Array, file = "ld.so.cache"): LdCacheEntry[] {
  // The new-format table starts the file, or follows the old one (8-byte aligned); its string
  // offsets count from the start of the new header.
  const base = indexOf(b.subarray(0, Math.min(b.length, 1 << 20)), NEW_MAGIC, 4);
  if (base < 0 || base + NEW_HEADER > b.length) throw new TracerError("IO", `${file}: no glibc-ld.so.cache1.1 table`);
  const v = new DataView(b.buffer, b.byteOffset + base, b.length - base);
  const n = v.getUint32(20, true);
  if (n > MAX_ENTRIES || NEW_HEADER + n * NEW_ENTRY > v.byteLength) throw new TracerError("IO", `${file}: ${n} entries do not fit the file`);
  const strings = b.subarray(base);
  const out: LdCacheEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = NEW_HEADER + i * NEW_ENTRY;
    out.push({ flags: v.getInt32(o, true), name: cstr(strings, v.getUint32(o + 4, true)), path: cstr(strings, v.getUint32(o + 8, true)) });
  }
  return out;
}

/** Default candidate names: versioned OpenSSL and GnuTLS sonames (not the unversioned dev links). */
export const TLS_LIBRARY_NAME = /^lib(ssl|gnutls)\.so\.\d/;

/**
 * Paths of TLS library candidates in the loader cache, first occurrence per path. `prefixes`
 * (config `libssl_prefixes`) replaces the default name pattern when given.
 */
export function tlsLibraryCandidates(entries: LdCacheEntry[], prefixes?: string[]): string[] {
  const match = prefixes && prefixes.length ? (n: string) => prefixes.some((p) => n.startsWith(p)) : (n: string) => TLS_LIBRARY_NAME.test(n);
  const seen = new Set<string>();
  for (const e of entries) if (match(e.name) && e.path) seen.add(e.path);
  return [...seen];
}

export function readLdCache(path = "/etc/ld.so.cache"): LdCacheEntry[] {
  let b: Uint8Array;
  try {
    b = readFileSync(path);
  } catch (e) {
    throw new TracerError("IO", `cannot read ${path}: ${(e as Error).message}`);
  }
  return parseLdCache(b, path);
}
