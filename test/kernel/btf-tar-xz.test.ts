/**
 * tar + xz extraction. Archives are BUILT here with the host's tar and xz (test-only); the code
 * under test never runs them.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArchiveError, extractBtfFromTarXz, untar, xzDecompress } from "../../src/kernel/btf/tar-xz.ts";

const SAMPLE = join(import.meta.dir, "../fixtures/btf/kyanos/custom-archive/ubuntu/20.04/x86_64/5.4.0-26-generic.btf");
const BTF = new Uint8Array(readFileSync(SAMPLE));
const tools = Bun.which("tar") !== null && Bun.which("xz") !== null;
const tmp = mkdtempSync(join(tmpdir(), "btf-tarxz-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** Writes `files` into a fresh dir and returns `tar c <format> | xz` of them (or plain tar). */
function makeTar(files: Record<string, Uint8Array | string>, opts: { format?: string; xz?: boolean } = {}): Uint8Array {
  const dir = join(tmp, `src${n++}`);
  for (const [name, data] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), data);
  }
  const tar = Bun.spawnSync(["tar", "-c", `--format=${opts.format ?? "gnu"}`, "-C", dir, ...Object.keys(files)]);
  if (tar.exitCode !== 0) throw new Error(tar.stderr.toString());
  if (opts.xz === false) return new Uint8Array(tar.stdout);
  return xz(new Uint8Array(tar.stdout));
}

function xz(data: Uint8Array): Uint8Array {
  const r = Bun.spawnSync(["xz", "-c", "-6"], { stdin: data });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return new Uint8Array(r.stdout);
}

async function archiveError(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ArchiveError);
    return (e as Error).message;
  }
  throw new Error("expected an ArchiveError");
}

describe.skipIf(!tools)("xzDecompress", () => {
  test("round-trips host xz output", async () => {
    expect(await xzDecompress(xz(BTF))).toEqual(BTF);
  });

  test("rejects non-xz, corrupt, truncated and oversized input", async () => {
    const good = xz(BTF);
    expect(await archiveError(xzDecompress(new Uint8Array(0)))).toContain("bad magic");
    expect(await archiveError(xzDecompress(BTF))).toContain("bad magic");
    const flipped = good.slice();
    flipped[good.byteLength >> 1]! ^= 0xff;
    expect(await archiveError(xzDecompress(flipped))).toMatch(/^xz: /);
    expect(await archiveError(xzDecompress(good.subarray(0, good.byteLength - 20)))).toMatch(/^xz: /);
    expect(await archiveError(xzDecompress(good, 100))).toContain("exceeds 100 bytes");
  });

  test("the decoder stays usable after errors (its internal lock is released)", async () => {
    await archiveError(xzDecompress(xz(BTF).subarray(0, 40)));
    expect((await xzDecompress(xz(BTF))).byteLength).toBe(BTF.byteLength);
  });
});

describe.skipIf(!tools)("untar", () => {
  test("gnu, pax and ustar archives, long names", () => {
    const long = `${"d".repeat(60)}/${"e".repeat(60)}/${"f".repeat(40)}.btf`;
    for (const format of ["gnu", "pax", "ustar"]) {
      const names = format === "ustar" ? ["a.btf", "sub/b.txt"] : ["a.btf", "sub/b.txt", long];
      const files = Object.fromEntries(names.map((k) => [k, k === "sub/b.txt" ? "hello" : BTF]));
      const entries = untar(makeTar(files, { format, xz: false }));
      const byName = Object.fromEntries(entries.filter((e) => e.type === "file").map((e) => [e.name, e.data]));
      for (const k of names) expect(byName[k]).toEqual(k === "sub/b.txt" ? new TextEncoder().encode("hello") : BTF);
    }
  });

  test("checksum mismatch, truncation and non-tar input are errors", () => {
    const t = makeTar({ "a.btf": BTF }, { xz: false });
    const bad = t.slice();
    bad[10] ^= 0x01;
    expect(() => untar(bad)).toThrow(/checksum mismatch at offset 0/);
    expect(() => untar(t.subarray(0, 1024))).toThrow(/truncated/);
    expect(() => untar(new Uint8Array(2048))).toThrow(/empty/);
    expect(() => untar(BTF)).toThrow(ArchiveError);
  });
});

describe.skipIf(!tools)("extractBtfFromTarXz", () => {
  const rel = "5.4.0-26-generic";

  test("BTFHub shape: one <release>.btf", async () => {
    const r = await extractBtfFromTarXz(makeTar({ [`${rel}.btf`]: BTF }), rel);
    expect(r.name).toBe(`${rel}.btf`);
    expect(r.data).toEqual(BTF);
  });

  test("prefers <release>.btf among several, accepts a lone .btf under another name", async () => {
    const other = BTF.slice(0, 100);
    const r = await extractBtfFromTarXz(makeTar({ "x.btf": other, [`dir/${rel}.btf`]: BTF, "README": "hi" }), rel);
    expect(r.name).toBe(`dir/${rel}.btf`);
    expect((await extractBtfFromTarXz(makeTar({ "renamed.btf": BTF }), rel)).data).toEqual(BTF);
  });

  test("no .btf or an ambiguous archive is an error that lists entries", async () => {
    expect(await archiveError(extractBtfFromTarXz(makeTar({ "README": "x" }), rel))).toBe("archive holds no .btf file (entries: README)");
    expect(await archiveError(extractBtfFromTarXz(makeTar({ "a.btf": BTF, "b.btf": BTF }), rel))).toContain("holds 2 .btf files and none is 5.4.0-26-generic.btf");
  });

  test("xz of something that is not a tar", async () => {
    expect(await archiveError(extractBtfFromTarXz(xz(BTF), rel))).toMatch(/not a tar archive/);
  });
});
