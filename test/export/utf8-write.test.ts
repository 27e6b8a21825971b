import { describe, expect, test } from "bun:test";
import { writeUtf8 } from "../../src/export/utf8-write.ts";

describe("writeUtf8", () => {
  test("writes what buf.write(s, offset, 'utf8') writes, and returns the same count", () => {
    const cases = ["", "plain ascii", "é", "€uro", "😀 and \u0000 and \ud800 lone surrogate", "x".repeat(5000), "ü".repeat(300)];
    for (const s of cases) {
      for (const offset of [0, 7]) {
        const a = Buffer.alloc(16_384, 0xaa);
        const b = Buffer.alloc(16_384, 0xaa);
        expect(writeUtf8(a, s, offset)).toBe(b.write(s, offset, "utf8"));
        expect(a.equals(b)).toBe(true);
      }
    }
  });

  test("stops at the end of the buffer without splitting a character", () => {
    const a = Buffer.alloc(5, 0);
    const n = writeUtf8(a, "ab€c", 0); // € is 3 bytes: a b € fit (5), c does not
    expect(n).toBe(5);
    expect(a.toString("utf8", 0, n)).toBe("ab€");
    const b = Buffer.alloc(4, 0);
    expect(writeUtf8(b, "ab€", 0)).toBe(2); // € would need bytes 2..4
  });
});
