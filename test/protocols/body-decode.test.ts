import { describe, expect, test } from "bun:test";
import * as zlib from "node:zlib";
import { decodeContentEncoding, parseContentEncoding } from "../../src/protocols/body-decode.ts";

const text = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item-${i}`, token: "t" })) });
const plain = new TextEncoder().encode(text);
const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
const ENC: Record<string, (b: Uint8Array) => Uint8Array> = {
  gzip: (b) => u8(zlib.gzipSync(b)),
  "x-gzip": (b) => u8(zlib.gzipSync(b)),
  deflate: (b) => u8(zlib.deflateSync(b)),
  br: (b) => u8(zlib.brotliCompressSync(b)),
  zstd: (b) => u8(zlib.zstdCompressSync(b)),
};
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe("decodeContentEncoding", () => {
  for (const [name, enc] of Object.entries(ENC)) {
    test(`${name}: decoded exactly`, () => {
      const r = decodeContentEncoding(enc(plain), name.toUpperCase(), 1 << 20);
      expect(r.status).toBe("decoded");
      expect(dec(r.body)).toBe(text);
      expect(r.encodings).toEqual([name]);
    });
  }
  test("raw deflate (no zlib header) is accepted as deflate", () => {
    const r = decodeContentEncoding(u8(zlib.deflateRawSync(plain)), "deflate", 1 << 20);
    expect(r.status).toBe("decoded");
    expect(dec(r.body)).toBe(text);
  });
  test("layers are undone in reverse order", () => {
    const r = decodeContentEncoding(ENC.br!(ENC.gzip!(plain)), "gzip, br", 1 << 20);
    expect(r.status).toBe("decoded");
    expect(dec(r.body)).toBe(text);
    expect(r.encodings).toEqual(["gzip", "br"]);
  });
  test("identity and no header leave the body as it is", () => {
    expect(decodeContentEncoding(plain, undefined, 10).body).toBe(plain);
    expect(decodeContentEncoding(plain, "identity", 10).status).toBe("identity");
  });
  test("unknown coding, garbage and too many layers: flagged, empty body, no throw", () => {
    expect(decodeContentEncoding(plain, "compress", 1 << 20)).toMatchObject({ status: "unsupported", body: new Uint8Array(0) });
    for (const name of Object.keys(ENC)) {
      const r = decodeContentEncoding(plain, name, 1 << 20);
      expect(r.status).toBe("error");
      expect(r.body.length).toBe(0);
      expect(r.detail).toBeString();
    }
    expect(decodeContentEncoding(plain, "gzip, gzip, gzip, gzip", 1 << 20).status).toBe("unsupported");
  });
  test("a body cut by the capture cap: gzip/deflate decode their complete part", () => {
    for (const name of ["gzip", "deflate"]) {
      const full = ENC[name]!(plain);
      const r = decodeContentEncoding(full.subarray(0, full.length >> 1), name, 1 << 20, false);
      expect(r.status).toBe("incomplete");
      expect(r.body.length).toBeGreaterThan(0);
      expect(text.startsWith(dec(r.body))).toBe(true);
    }
    for (const name of ["br", "zstd"]) {
      const full = ENC[name]!(plain);
      const r = decodeContentEncoding(full.subarray(0, full.length >> 1), name, 1 << 20, false);
      expect(["incomplete", "error"]).toContain(r.status);
      expect(text.startsWith(dec(r.body))).toBe(true);
    }
  });
  test("decompression bombs stop at the limit, quickly, and are flagged", () => {
    const bomb = new Uint8Array(64 * 1024 * 1024).fill(0x61); // 64 MB of "a"
    const max = 128 * 1024;
    for (const name of Object.keys(ENC)) {
      const packed = ENC[name]!(bomb);
      const t0 = performance.now();
      const r = decodeContentEncoding(packed, name, max);
      const ms = performance.now() - t0;
      expect(r.status).toBe("limit");
      expect(r.body.length).toBeLessThanOrEqual(max);
      if (name === "gzip" || name === "deflate" || name === "x-gzip") expect(r.body.length).toBeGreaterThan(max / 2);
      expect(r.body.every((b) => b === 0x61)).toBe(true);
      expect(ms).toBeLessThan(2000);
    }
  });
  test("a layered bomb (gzip inside br) stops at the limit too", () => {
    const bomb = new Uint8Array(16 * 1024 * 1024);
    const r = decodeContentEncoding(ENC.br!(ENC.gzip!(bomb)), "gzip, br", 4096);
    expect(r.status).toBe("limit");
    expect(r.body.length).toBeLessThanOrEqual(4096);
  });
  test("parseContentEncoding", () => {
    expect(parseContentEncoding(" GZIP , br ")).toEqual({ codings: ["gzip", "br"], names: ["gzip", "br"] });
    expect(parseContentEncoding("gzip, lzma")).toEqual({ unknown: "lzma", names: ["gzip", "lzma"] });
  });
});
