import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BtfError, Kind, parseBtf, readElfSection, bytesSource, validateBtf, validateBtfFile } from "../../src/kernel/btf/validate.ts";

const FIX = join(import.meta.dir, "../fixtures/btf");
const KY = join(FIX, "kyanos/custom-archive");
const SAMPLE = join(KY, "centos/7/x86_64/3.10.0-957.el7.x86_64.btf");
const read = (p: string) => new Uint8Array(readFileSync(p));
const tmp = mkdtempSync(join(tmpdir(), "btf-validate-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of `b` with `edit` applied through a little-endian DataView. */
function patched(b: Uint8Array, edit: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const c = b.slice();
  edit(new DataView(c.buffer), c);
  return c;
}

function reason(b: Uint8Array): string {
  const v = validateBtf(b);
  if (v.ok) throw new Error("expected a rejection");
  return v.reason;
}

/** Minimal little-endian ELF64 with the given sections (name → bytes), enough for readElfSection. */
function elf64(sections: Record<string, Uint8Array>): Uint8Array {
  const names = ["", ...Object.keys(sections), ".shstrtab"];
  const shstr = new TextEncoder().encode(names.join("\0") + "\0");
  const nameOff = (i: number) => names.slice(0, i).reduce((n, s) => n + s.length + 1, 0);
  const datas = [new Uint8Array(0), ...Object.values(sections), shstr];
  let off = 64;
  const offs = datas.map((d) => { const o = off; off += d.byteLength; return o; });
  const shoff = (off + 7) & ~7;
  const out = new Uint8Array(shoff + 64 * names.length);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setBigUint64(0x28, BigInt(shoff), true);
  v.setUint16(0x3a, 64, true);
  v.setUint16(0x3c, names.length, true);
  v.setUint16(0x3e, names.length - 1, true);
  datas.forEach((d, i) => {
    out.set(d, offs[i]!);
    const b = shoff + 64 * i;
    v.setUint32(b, nameOff(i), true);
    v.setBigUint64(b + 0x18, BigInt(offs[i]!), true);
    v.setBigUint64(b + 0x20, BigInt(d.byteLength), true);
  });
  return out;
}

describe("parseBtf on real files", () => {
  test("every kyanos min-core sample parses and walks", () => {
    for (const rel of [
      "centos/7/x86_64/3.10.0-957.el7.x86_64.btf", "centos/8/x86_64/4.18.0-147.el8.x86_64.btf",
      "ubuntu/18.04/x86_64/4.15.0-101-generic.btf", "ubuntu/20.04/x86_64/5.4.0-26-generic.btf",
    ]) {
      const p = parseBtf(read(join(KY, rel)));
      expect(p.typeCount).toBeGreaterThan(20);
      expect(p.kindCounts.STRUCT).toBeGreaterThan(0);
      expect(p.trailingBytes).toBe(0);
    }
  });

  test("type and member lookup resolves names", () => {
    const p = parseBtf(read(SAMPLE));
    const structs = Array.from({ length: p.typeCount }, (_, i) => p.type(i + 1)!).filter((t) => t.kind === Kind.STRUCT);
    const named = structs.map((t) => p.name(t.nameOff));
    expect(named).toContain("task_struct");
    const task = structs[named.indexOf("task_struct")]!;
    expect(p.members(task).map((m) => m.name)).toContain("tgid");
    expect(p.type(0)).toBeUndefined();
    expect(p.type(p.typeCount + 1)).toBeUndefined();
  });

  test("split BTF is rejected alone and accepted with its base", () => {
    const split = read(join(FIX, "cilium/btf_testmod.btf"));
    const base = parseBtf(read(join(FIX, "cilium/btf_testmod.btf.base")));
    expect(reason(split)).toContain("split BTF");
    const v = validateBtf(split, { baseTypeCount: base.typeCount, baseStrLen: base.header.strLen });
    expect(v).toMatchObject({ ok: true });
    const p = parseBtf(split, { baseTypeCount: base.typeCount, baseStrLen: base.header.strLen });
    expect(p.firstTypeId).toBe(base.typeCount + 1);
  });

  test.skipIf(!existsSync("/sys/kernel/btf/vmlinux"))("this machine's full kernel BTF walks quickly", () => {
    const b = read("/sys/kernel/btf/vmlinux");
    const t0 = performance.now();
    const p = parseBtf(b);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(p.typeCount).toBeGreaterThan(10_000);
    expect(Object.keys(p.kindCounts)).toEqual(expect.arrayContaining(["INT", "PTR", "STRUCT", "FUNC", "FUNC_PROTO"]));
  });
});

describe("parseBtf rejects inconsistent data with a reason", () => {
  const good = read(SAMPLE);
  const typeStart = 24; // kyanos files: hdr_len 24, type_off 0
  test.each<[string, (v: DataView, b: Uint8Array) => void, string]>([
    ["bad magic", (v) => v.setUint16(0, 0x1234, true), "bad magic 0x1234"],
    ["big-endian magic", (v) => v.setUint16(0, 0x9feb, true), "big-endian"],
    ["version", (_v, b) => { b[2] = 2; }, "unsupported BTF version 2"],
    ["flags", (_v, b) => { b[3] = 1; }, "unsupported BTF flags"],
    ["header length past end", (v) => v.setUint32(4, 1 << 20, true), "bad header length"],
    ["unaligned type section", (v) => v.setUint32(8, 2, true), "not 4-byte aligned"],
    ["type section overlaps strings", (v) => v.setUint32(12, v.getUint32(16, true) + 4, true), "overlaps"],
    ["string section past the end", (v) => v.setUint32(20, v.getUint32(20, true) + 100, true), "truncated"],
    ["unknown kind", (v) => v.setUint32(typeStart + 4, 25 << 24, true), "unknown kind 25"],
    ["kind 0", (v) => v.setUint32(typeStart + 4, 0, true), "unknown kind 0"],
    ["name offset out of range", (v) => v.setUint32(typeStart, 0x7fffffff, true), "name offset"],
    ["strings not NUL-terminated", (v, b) => { b[24 + v.getUint32(16, true) + v.getUint32(20, true) - 1] = 0x41; }, "NUL-terminated"],
  ])("%s", (_name, edit, want) => {
    expect(reason(patched(good, edit))).toContain(want);
    expect(() => parseBtf(patched(good, edit))).toThrow(BtfError);
  });

  test("a type reference beyond the last type", () => {
    const p = parseBtf(good);
    const ptrId = Array.from({ length: p.typeCount }, (_, i) => p.type(i + 1)!).find((t) => t.kind === Kind.PTR)!;
    const bad = patched(good, (v) => v.setUint32(typeStart + ptrId.offset + 8, p.typeCount + 50, true));
    expect(reason(bad)).toBe(`type id ${ptrId.id} references type id ${p.typeCount + 50}, but the last type is ${p.typeCount} (split BTF? it needs its base)`);
  });

  test("a record that runs past the type section", () => {
    const bad = patched(good, (v) => v.setUint32(12, v.getUint32(12, true) - 4, true));
    expect(reason(bad)).toMatch(/runs past the type section/);
  });

  test("too short, empty, random", () => {
    expect(reason(new Uint8Array(10))).toContain("too short");
    expect(reason(new Uint8Array(0))).toContain("too short");
    expect(reason(new Uint8Array(4096).map((_, i) => (i * 7919) & 0xff))).toContain("bad magic");
  });

  test("trailing bytes are tolerated (as libbpf does) and reported", () => {
    const longer = new Uint8Array(good.byteLength + 8);
    longer.set(good);
    expect(parseBtf(longer).trailingBytes).toBe(8);
  });
});

describe("validateBtfFile", () => {
  test("raw BTF file", () => {
    expect(validateBtfFile(SAMPLE)).toEqual({ ok: true, typeCount: 69, format: "raw", bytes: 2807 });
  });

  test("missing file", () => {
    expect(validateBtfFile(join(tmp, "nope.btf"))).toEqual({ ok: false, reason: "cannot open: ENOENT" });
  });

  test("ELF vmlinux image with a .BTF section", () => {
    const p = join(tmp, "vmlinux-ok");
    writeFileSync(p, elf64({ ".text": new Uint8Array(100), ".BTF": read(SAMPLE) }));
    expect(validateBtfFile(p)).toEqual({ ok: true, typeCount: 69, format: "elf", bytes: 2807 });
    expect(readElfSection(bytesSource(read(p)), ".BTF")?.byteLength).toBe(2807);
    expect(readElfSection(bytesSource(read(p)), ".BTF.ext")).toBeUndefined();
  });

  test("ELF image without .BTF names the kernel option", () => {
    const p = join(tmp, "vmlinux-nobtf");
    writeFileSync(p, elf64({ ".text": new Uint8Array(100) }));
    expect(validateBtfFile(p)).toEqual({ ok: false, reason: "ELF image has no .BTF section (kernel built without CONFIG_DEBUG_INFO_BTF)" });
  });

  test("ELF image with a corrupt .BTF or truncated headers", () => {
    const bad = join(tmp, "vmlinux-bad");
    writeFileSync(bad, elf64({ ".BTF": new Uint8Array(64) }));
    expect(validateBtfFile(bad)).toMatchObject({ ok: false, reason: expect.stringContaining(".BTF section: bad magic") });
    const cut = join(tmp, "vmlinux-cut");
    writeFileSync(cut, elf64({ ".BTF": read(SAMPLE) }).subarray(0, 200));
    expect(validateBtfFile(cut)).toMatchObject({ ok: false, reason: expect.stringContaining("truncated") });
  });
});
