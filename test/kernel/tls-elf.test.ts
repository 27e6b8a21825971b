/**
 * The ELF reader against binutils on real files (libssl, Node, a Go program built here), both Go
 * build-info formats, and a fuzz pass over truncated and corrupted copies: every outcome is either an
 * answer or a TracerError, never another exception.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { TracerError } from "../../src/errors.ts";
import { analyzeElf } from "../../src/kernel/tls/discover.ts";
import { structMemberOffsets } from "../../src/kernel/tls/dwarf.ts";
import { ELF_LIMITS, ElfFile, GO_BUILDINFO_MAGIC, literalPrefix } from "../../src/kernel/tls/elf.ts";
import { buildGo, GO, goSkipReason } from "../fixtures/go/build.ts";

const LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
const NODE = "/usr/bin/node";
const goSkip = goSkipReason();
if (goSkip) console.warn(`Go parts of tls-elf.test.ts skipped: ${goSkip}`);

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd);
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** Symbol → {value, size} as readelf prints them (version suffixes dropped). */
function readelfSymbols(path: string, dyn: boolean): Map<string, { value: number; size: number }> {
  const out = new Map<string, { value: number; size: number }>();
  for (const line of sh(["readelf", "-W", dyn ? "--dyn-syms" : "--syms", path]).split("\n")) {
    const m = /^\s*\d+: ([0-9a-f]+)\s+(\d+)\s+FUNC\s+\S+\s+\S+\s+\d+\s+(\S+)$/.exec(line);
    if (m) out.set(m[3]!.replace(/@.*$/, ""), { value: parseInt(m[1]!, 16), size: Number(m[2]) });
  }
  return out;
}

/** objdump's "File Offset" of a function, an independent vaddr → offset translation. */
function objdumpFileOffset(path: string, sym: string): number {
  const m = /<[^>]+> \(File Offset: 0x([0-9a-f]+)\):/.exec(sh(["objdump", "-d", "-F", `--disassemble=${sym}`, path]));
  if (!m) throw new Error(`objdump found no ${sym} in ${path}`);
  return parseInt(m[1]!, 16);
}

describe("literalPrefix (the bytes findString searches for)", () => {
  test("escaped punctuation counts, classes and quantified characters end it, short ones are not used", () => {
    const lit = (re: RegExp) => literalPrefix(re)?.toString("latin1");
    expect(lit(/OpenSSL (\d+)/)).toBe("OpenSSL ");
    expect(lit(/crypto\/tls\.\(\*Conn\)\.Read/)).toBe("crypto/tls.(*Conn).Read");
    expect(lit(/rustls[-/]\d/)).toBe("rustls");
    expect(lit(/GnuTLS (\d+)/)).toBe("GnuTLS ");
    expect(lit(/abcd*e/)).toBe("abc");
    expect(lit(/abcd?e/)).toBe("abc");
    expect(lit(/ab\d/)).toBeUndefined();
    expect(lit(/^OpenSSL/)).toBeUndefined();
    expect(lit(/openssl/i)).toBeUndefined();
  });
});

describe.skipIf(!existsSync(LIBSSL))("ELF reader on libssl.so.3", () => {
  test("section headers, soname and dynamic symbols agree with readelf", () => {
    ElfFile.with(LIBSSL, (elf) => {
      expect(elf.arch).toBe("x86_64");
      expect(elf.soname()).toBe("libssl.so.3");
      const names = sh(["readelf", "-W", "-S", LIBSSL]).match(/\]\s(\.\S+)/g)!.map((s) => s.slice(2));
      expect(elf.sections.map((s) => s.name).filter((n) => n)).toEqual(names);
      const want = readelfSymbols(LIBSSL, true);
      const got = elf.findSymbols(["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"]);
      expect(got.size).toBe(5);
      for (const [name, s] of got) expect({ value: s.value, size: s.size }).toEqual(want.get(name)!);
    });
  });
});

describe.skipIf(!existsSync(NODE))("ELF reader on /usr/bin/node (vaddr ≠ file offset)", () => {
  test("SSL_read's file offset is objdump's File Offset", () => {
    ElfFile.with(NODE, (elf) => {
      for (const name of ["SSL_read", "SSL_write"]) {
        const s = elf.findSymbols([name]).get(name)!;
        const off = elf.vaddrToOffset(s.value)!;
        expect(off).not.toBe(s.value);
        expect(off).toBe(objdumpFileOffset(NODE, name));
      }
      expect(elf.findString(/OpenSSL \d+\.\d+\.\d+/)).toMatch(/^OpenSSL 3\./);
    });
  }, 30_000);

  test("findString (literal searched in bytes, regex on the text after a hit) finds what a regex over the whole text does", () => {
    ElfFile.with(NODE, (elf) => {
      const rodata = elf.section(".rodata")!;
      const text = new TextDecoder("latin1").decode(elf.sectionBytes(rodata));
      const patterns = [/OpenSSL (\d+\.\d+\.\d+[a-z]?)(?:[+-][\w.]+)? +\d{1,2} \w{3} \d{4}/, /BoringSSL/, /rustls[-/]\d/, /OpenSSL \d/, /v8::internal::\w+/, /node\.js\/v\d+/];
      for (const re of patterns) expect(elf.findString(re)).toBe(re.exec(text)?.[0]);
    });
  }, 30_000);

  test("findSymbols (bytes compared in place) answers what a walk over every symbol object does", () => {
    ElfFile.with(NODE, (elf) => {
      const names = ["SSL_read", "SSL_write_ex", "SSL_free", "napi_create_string_utf8", "no_such_symbol_anywhere", "SSL_rea"];
      for (const table of [".dynsym", ".symtab"] as const) {
        const brute = new Map<string, { value: number; size: number }>();
        for (const s of elf.symbols(table)) {
          if (s.value !== 0 && s.shndx !== 0 && names.includes(s.name) && !brute.has(s.name)) brute.set(s.name, { value: s.value, size: s.size });
        }
        const got = elf.findSymbols(names, [table]);
        expect(new Map([...got].map(([n, s]) => [n, { value: s.value, size: s.size }]))).toEqual(brute);
        expect(got.has("SSL_read")).toBe(true);
        expect(got.has("SSL_rea")).toBe(false);
      }
    });
  }, 30_000);
});

describe.skipIf(!!goSkip)("Go build info", () => {
  test("inline format (Go ≥ 1.18): version and module path; build id from .note.go.buildid", () => {
    const bin = buildGo("httpsecho");
    ElfFile.with(bin, (elf) => {
      const info = elf.goBuildInfo()!;
      expect(info.version).toBe(sh([GO, "env", "GOVERSION"]).trim());
      expect(info.modinfo).toMatch(/^path\t\S*httpsecho\n/);
      expect(info.modinfo).toContain("build\tGOARCH=amd64");
      expect(elf.goBuildId()).toBe(sh([`${GO.replace(/go$/, "")}../pkg/tool/linux_amd64/buildid`, bin]).trim());
    });
  }, 180_000);

  test("pointer format (Go < 1.18) read through the segments", () => {
    const elf = ElfFile.fromBytes(syntheticOldGoElf("go1.16.15", "path\tx\n"), "synthetic");
    expect(elf.goBuildInfo()).toEqual({ version: "go1.16.15", modinfo: "path\tx\n" });
  });
});

/**
 * A minimal ELF64 with one PT_LOAD (vaddr 0x400000 → offset 0) and a .go.buildinfo section in the
 * pre-1.18 layout: magic, ptrSize 8, flags 0, then pointers to two Go string headers.
 */
function syntheticOldGoElf(version: string, modinfo: string): Uint8Array {
  const base = 0x400000;
  const buf = new Uint8Array(0x400);
  const v = new DataView(buf.buffer);
  buf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true);
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setBigUint64(40, 0x300n, true); // e_shoff
  v.setUint16(54, 56, true);
  v.setUint16(56, 1, true);
  v.setUint16(58, 64, true);
  v.setUint16(60, 3, true); // null, .go.buildinfo, .shstrtab
  v.setUint16(62, 2, true);
  // PT_LOAD covering the whole file, RW.
  v.setUint32(64, 1, true);
  v.setUint32(68, 6, true);
  v.setBigUint64(64 + 16, BigInt(base), true);
  v.setBigUint64(64 + 32, 0x400n, true);
  v.setBigUint64(64 + 40, 0x400n, true);
  // build info at 0x100: magic, 8, 0, pad, ptr(version hdr), ptr(mod hdr)
  buf.set(GO_BUILDINFO_MAGIC, 0x100);
  buf[0x100 + 14] = 8;
  v.setBigUint64(0x110, BigInt(base + 0x140), true);
  v.setBigUint64(0x118, BigInt(base + 0x150), true);
  const mod = new TextEncoder().encode("0123456789abcdef" + modinfo + "fedcba9876543210");
  const ver = new TextEncoder().encode(version);
  v.setBigUint64(0x140, BigInt(base + 0x180), true);
  v.setBigUint64(0x148, BigInt(ver.length), true);
  v.setBigUint64(0x150, BigInt(base + 0x1c0), true);
  v.setBigUint64(0x158, BigInt(mod.length), true);
  buf.set(ver, 0x180);
  buf.set(mod, 0x1c0);
  const names = new TextEncoder().encode("\0.go.buildinfo\0.shstrtab\0");
  buf.set(names, 0x2c0);
  const sh = (i: number, name: number, type: number, addr: number, off: number, size: number) => {
    const o = 0x300 + i * 64;
    v.setUint32(o, name, true);
    v.setUint32(o + 4, type, true);
    v.setBigUint64(o + 16, BigInt(addr), true);
    v.setBigUint64(o + 24, BigInt(off), true);
    v.setBigUint64(o + 32, BigInt(size), true);
  };
  sh(1, 1, 1, base + 0x100, 0x100, 0x20);
  sh(2, 15, 3, 0, 0x2c0, names.length);
  return buf;
}

/** Deterministic PRNG (mulberry32) so a failing fuzz case can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs the whole read path; returns "ok" or "TracerError", and rethrows anything else. */
function exercise(bytes: Uint8Array): "ok" | "TracerError" {
  try {
    const elf = ElfFile.fromBytes(bytes, "fuzz");
    elf.soname();
    elf.goBuildId();
    elf.goBuildInfo();
    elf.findString(/OpenSSL \d/);
    analyzeElf(elf, true);
    structMemberOffsets(elf, ["runtime.g", "crypto/tls.Conn"]);
    return "ok";
  } catch (e) {
    if (e instanceof TracerError) return "TracerError";
    throw e;
  }
}

describe("ELF reader on malformed input", () => {
  const sources = [LIBSSL, ...(goSkip ? [] : [buildGo("offsets")])].filter(existsSync);

  test("truncated copies: an answer or a TracerError, nothing else", () => {
    const rand = rng(1);
    let errors = 0;
    for (const path of sources) {
      const full = readFileSync(path);
      const cuts = [0, 1, 4, 63, 64, 65, 200, full.length - 1, ...Array.from({ length: 60 }, () => Math.floor(rand() * full.length))];
      for (const n of cuts) if (exercise(full.subarray(0, n)) === "TracerError") errors++;
    }
    expect(errors).toBeGreaterThan(sources.length * 5); // the cuts really break files
  }, 30_000);

  test("corrupted copies (headers, section table, random bytes): an answer or a TracerError", () => {
    const rand = rng(2);
    const outcomes = { ok: 0, TracerError: 0 };
    for (const path of sources) {
      const full = readFileSync(path);
      const elf = ElfFile.fromBytes(full);
      const shoff = Number(new DataView(full.buffer, full.byteOffset).getBigUint64(40, true));
      const shEnd = shoff + elf.sections.length * 64;
      for (let i = 0; i < 150; i++) {
        const copy = new Uint8Array(full);
        const hits = 1 + Math.floor(rand() * 8);
        for (let h = 0; h < hits; h++) {
          const zone = rand();
          // Mostly where structure lives: ELF header, program headers, section header table.
          const at = zone < 0.3 ? Math.floor(rand() * 64) : zone < 0.5 ? 64 + Math.floor(rand() * 56 * elf.segments.length) : zone < 0.9 ? shoff + Math.floor(rand() * (shEnd - shoff)) : Math.floor(rand() * full.length);
          copy[at] = rand() < 0.3 ? 0xff : Math.floor(rand() * 256);
        }
        outcomes[exercise(copy)]++;
      }
    }
    expect(outcomes.ok + outcomes.TracerError).toBe(150 * sources.length);
    expect(outcomes.TracerError).toBeGreaterThan(0);
  }, 30_000);

  test.skipIf(!!goSkip)("corrupted uncompressed DWARF: an answer or a TracerError", () => {
    const full = readFileSync(buildGo("offsets", "-compressdwarf=false"));
    const elf = ElfFile.fromBytes(full);
    const secs = [".debug_info", ".debug_abbrev"].map((n) => elf.section(n)!);
    expect(structMemberOffsets(elf, ["runtime.g"])!.get("runtime.g")!.get("goid")).toBe(152);
    const rand = rng(3);
    const outcomes = { ok: 0, TracerError: 0 };
    for (let i = 0; i < 200; i++) {
      const copy = new Uint8Array(full);
      const s = secs[i % 2]!;
      // Early bytes hold the unit headers and the first abbreviations: corrupt there mostly.
      for (let h = 0; h < 4; h++) copy[s.offset + Math.floor(rand() * Math.min(s.size, 4096))] = Math.floor(rand() * 256);
      try {
        structMemberOffsets(ElfFile.fromBytes(copy), ["runtime.g", "crypto/tls.Conn", "internal/poll.FD"]);
        outcomes.ok++;
      } catch (e) {
        if (!(e instanceof TracerError)) throw e;
        outcomes.TracerError++;
      }
    }
    expect(outcomes.TracerError).toBeGreaterThan(0);
  }, 180_000);

  test("huge declared sizes are refused before any allocation", () => {
    const full = new Uint8Array(readFileSync(LIBSSL));
    const elf = ElfFile.fromBytes(full);
    const dynsym = elf.sections.find((s) => s.name === ".dynsym")!;
    const shoff = Number(new DataView(full.buffer).getBigUint64(40, true));
    new DataView(full.buffer).setBigUint64(shoff + dynsym.index * 64 + 32, BigInt(ELF_LIMITS.maxTableBytes + 1), true);
    expect(() => ElfFile.fromBytes(full, "big").symbols(".dynsym")).toThrow(/exceeds the .*-byte limit/);
    new DataView(full.buffer).setBigUint64(shoff + dynsym.index * 64 + 32, 2n ** 62n, true);
    expect(() => ElfFile.fromBytes(full, "huge").symbols(".dynsym")).toThrow(/out of range|exceeds/);
    expect(() => ElfFile.fromBytes(new Uint8Array(10), "tiny")).toThrow(/too short/);
    expect(() => ElfFile.open("/nonexistent/lib.so")).toThrow(TracerError);
  });
});
