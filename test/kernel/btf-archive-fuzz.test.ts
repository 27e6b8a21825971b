/**
 * Hostile and fuzzed BTF archives (issue 13): tar entries with path traversal, absolute names,
 * symlinks and hard links, absurd sizes (octal and GNU base-256), pax overrides, and random byte
 * mutations / truncations of a valid .tar.xz. Extraction must return the BTF or throw an
 * ArchiveError with a one-line reason, quickly; a download must write nothing but its
 * destination file. Tar images are built here byte by byte; xz by the host's xz (test only).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { ArchiveError, extractBtfFromTarXz, untar } from "../../src/kernel/btf/tar-xz.ts";
import { downloadBtf, DownloadError } from "../../src/kernel/btf/download.ts";
import { hostToolsPresent, makeCerts, startServer } from "./btf-https-server.ts";

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const BUDGET_MS = Number(process.env.FUZZ_MS ?? 3000);
const FIXTURE = join(import.meta.dir, "../fixtures/btf/kyanos/custom-archive/ubuntu/20.04/x86_64/5.4.0-26-generic.btf");
const BTF = new Uint8Array(readFileSync(FIXTURE));
const RELEASE = "5.4.0-26-generic";
const tmp = mkdtempSync(join(tmpdir(), "btf-fuzz-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const haveXz = Bun.which("xz") !== null;

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const enc = new TextEncoder();

interface Entry {
  name: string;
  data?: Uint8Array;
  type?: string;
  link?: string;
  /** overrides the size field: octal text, or a number written GNU base-256 */
  size?: string | bigint;
}

/** One ustar header block (checksum computed), then the data padded to 512. */
function tarEntry(e: Entry): Uint8Array {
  const data = e.data ?? new Uint8Array(0);
  const h = new Uint8Array(512);
  const put = (off: number, len: number, s: string) => h.set(enc.encode(s).subarray(0, len), off);
  put(0, 100, e.name);
  put(100, 8, "0000644\0");
  put(108, 8, "0000000\0");
  put(116, 8, "0000000\0");
  if (typeof e.size === "bigint") {
    h[124] = 0x80;
    let v = e.size;
    for (let i = 135; i >= 125; i--) {
      h[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  } else {
    put(124, 12, (e.size ?? data.length.toString(8).padStart(11, "0")) + "\0");
  }
  put(136, 12, "00000000000\0");
  put(156, 1, e.type ?? "0");
  put(157, 100, e.link ?? "");
  put(257, 6, "ustar\0");
  put(263, 2, "00");
  h.fill(0x20, 148, 156);
  const sum = h.reduce((a, b) => a + b, 0);
  put(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  const out = new Uint8Array(512 + Math.ceil(data.length / 512) * 512);
  out.set(h);
  out.set(data, 512);
  return out;
}

function tar(entries: Entry[]): Uint8Array {
  const parts = [...entries.map(tarEntry), new Uint8Array(1024)];
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function xz(data: Uint8Array): Uint8Array {
  const r = Bun.spawnSync(["xz", "-c", "-0", "--check=crc32"], { stdin: data });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return new Uint8Array(r.stdout);
}

/** Resolves to the extracted entry name, or the ArchiveError's message; anything else fails. */
async function outcome(archive: Uint8Array): Promise<{ ok: string } | { err: string }> {
  const t0 = performance.now();
  try {
    const r = await extractBtfFromTarXz(archive, RELEASE);
    return { ok: r.name };
  } catch (e) {
    if (!(e instanceof ArchiveError)) throw new Error(`seed ${SEED}: not an ArchiveError: ${String((e as Error)?.stack ?? e)}`);
    expect(e.message).not.toContain("\n");
    return { err: e.message };
  } finally {
    expect(performance.now() - t0).toBeLessThan(5000);
  }
}

describe.skipIf(!haveXz)(`hostile BTF archives (seed ${SEED})`, () => {
  const traversal = `../../../../../${relative("/", tmp)}/escaped-${process.pid}/${RELEASE}.btf`;

  test("traversal and absolute names are only names: the data comes back, nothing is written", async () => {
    for (const name of [traversal, `/etc/${RELEASE}.btf`, `./a/../../${RELEASE}.btf`]) {
      const r = await extractBtfFromTarXz(xz(tar([{ name, data: BTF }])), RELEASE);
      expect(r.name).toBe(name);
      expect(Buffer.compare(Buffer.from(r.data), Buffer.from(BTF))).toBe(0);
    }
    expect(existsSync(join(tmp, `escaped-${process.pid}`))).toBe(false);
  });

  test("symlinks, hard links, devices and directories are never taken as the BTF", async () => {
    const entries: Entry[] = [
      { name: `${RELEASE}.btf`, type: "2", link: "/etc/shadow" },
      { name: `x/${RELEASE}.btf`, type: "1", link: "/etc/passwd" },
      { name: "dev.btf", type: "3" },
      { name: "fifo.btf", type: "6" },
      { name: `${RELEASE}.btf/`, type: "5" },
    ];
    const r = await outcome(xz(tar(entries)));
    expect(r).toEqual({ err: expect.stringContaining("holds no .btf file") });
  });

  test("absurd sizes are truncation errors, not allocations", async () => {
    for (const size of ["77777777777", "7777777777777", "99999999999", "-1"] as (string | bigint)[]) {
      const r = await outcome(xz(tar([{ name: `${RELEASE}.btf`, data: BTF.subarray(0, 100), size }])));
      expect("err" in r).toBe(true);
    }
    for (const size of [2n ** 80n, 2n ** 53n + 1n, 2n ** 33n]) {
      const r = await outcome(xz(tar([{ name: `${RELEASE}.btf`, data: BTF.subarray(0, 100), size }])));
      expect(r).toEqual({ err: expect.stringMatching(/truncated|size/) });
    }
    // and in memory, without xz
    expect(() => untar(tar([{ name: "a.btf", size: 2n ** 80n }]))).toThrow(ArchiveError);
  });

  test("pax and GNU long names may rename an entry, not reach the file system", async () => {
    const pax = enc.encode(`30 path=../../../etc/evil.btf\n`);
    const r = await extractBtfFromTarXz(xz(tar([{ name: "PaxHeader", type: "x", data: pax }, { name: "innocent", data: BTF }])), RELEASE);
    expect(r.name).toBe("../../../etc/evil.btf");
    const long = enc.encode("../".repeat(100) + `${RELEASE}.btf\0`);
    const r2 = await extractBtfFromTarXz(xz(tar([{ name: "././@LongLink", type: "L", data: long }, { name: "short", data: BTF }])), RELEASE);
    expect(r2.name.endsWith(`${RELEASE}.btf`)).toBe(true);
  });

  test("mutated and truncated archives: the BTF or an ArchiveError, never a crash or a hang", async () => {
    const good = xz(tar([{ name: `${RELEASE}.btf`, data: BTF.subarray(0, 64 * 1024) }, { name: "README", data: enc.encode("hi") }]));
    const r = rng(SEED);
    const end = Date.now() + BUDGET_MS;
    let n = 0;
    const kinds = { ok: 0, err: 0 };
    while (Date.now() < end || n < 30) {
      const a = good.slice();
      let input: Uint8Array = a;
      switch (n % 4) {
        case 0: for (let i = 0, k = 1 + Math.floor(r() * 8); i < k; i++) a[Math.floor(r() * a.length)] = Math.floor(r() * 256); break;
        case 1: input = a.subarray(0, Math.floor(r() * a.length)); break;
        case 2: input = new Uint8Array([...a.subarray(0, 6), ...crypto.getRandomValues(new Uint8Array(Math.floor(r() * 4096)))]); break;
        default: { // a valid xz of a mutated tar
          const t = tar([{ name: `${RELEASE}.btf`, data: BTF.subarray(0, 4096) }]);
          for (let i = 0, k = 1 + Math.floor(r() * 6); i < k; i++) t[Math.floor(r() * 1024)] = Math.floor(r() * 256);
          input = xz(t);
        }
      }
      const o = await outcome(input);
      kinds["ok" in o ? "ok" : "err"]++;
      n++;
    }
    expect(kinds.err).toBeGreaterThan(0);
  });
});

describe.skipIf(!hostToolsPresent)("a hostile archive through downloadBtf", () => {
  test("only the destination file is written; traversal names and junk leave nothing behind", async () => {
    const certs = makeCerts(join(tmp, "certs"));
    const srv = startServer(certs);
    const store = join(tmp, "store");
    const escape = join(tmp, `escaped-dl-${process.pid}`);
    try {
      srv.routes.set("/evil.btf.tar.xz", { body: xz(tar([{ name: `../../../../../${relative("/", escape)}/${RELEASE}.btf`, data: BTF }])) });
      srv.routes.set("/junk.btf.tar.xz", { body: xz(tar([{ name: `${RELEASE}.btf`, data: crypto.getRandomValues(new Uint8Array(4096)) }])) });
      srv.routes.set("/link.btf.tar.xz", { body: xz(tar([{ name: `${RELEASE}.btf`, type: "2", link: "/etc/shadow" }])) });
      const dest = join(store, "ubuntu/20.04/x86_64", `${RELEASE}.btf`);
      const d = await downloadBtf({ url: `${srv.origin}/evil.btf.tar.xz`, destPath: dest, release: RELEASE, timeoutMs: 5000, ca: certs.ca });
      expect(d.path).toBe(dest);
      expect(existsSync(escape)).toBe(false);
      const listing = (dir: string): string[] => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => relative(store, join(e.parentPath, e.name)));
      expect(listing(store)).toEqual([`ubuntu/20.04/x86_64/${RELEASE}.btf`]);
      for (const [path, kind] of [["/junk.btf.tar.xz", "invalid"], ["/link.btf.tar.xz", "archive"]]) {
        const dest2 = join(store, "other", path.slice(1, 5), `${RELEASE}.btf`);
        try {
          await downloadBtf({ url: `${srv.origin}${path}`, destPath: dest2, release: RELEASE, timeoutMs: 5000, ca: certs.ca });
          throw new Error("accepted");
        } catch (e) {
          expect(e).toBeInstanceOf(DownloadError);
          expect((e as DownloadError).kind).toBe(kind as DownloadError["kind"]);
        }
        expect(existsSync(dest2)).toBe(false);
      }
      expect(listing(store)).toEqual([`ubuntu/20.04/x86_64/${RELEASE}.btf`]);
    } finally {
      await srv.stop();
    }
  });
});
