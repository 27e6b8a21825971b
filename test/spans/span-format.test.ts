/** The small formatters every span goes through: timestamps, ids, authorities. */
import { describe, expect, test } from "bun:test";
import { parseTraceparent, randomHex, splitHostPort } from "../../src/spans/builder.ts";
import { nanosToIso } from "../../src/spans/span.ts";

describe("nanosToIso", () => {
  test("nanosecond digits kept; the cached second never leaks into the next one", () => {
    const base = 1_764_201_600n * 1_000_000_000n; // 2025-11-27T00:00:00Z
    expect(nanosToIso(base)).toBe("2025-11-27T00:00:00.000000000Z");
    expect(nanosToIso(base + 999_999_999n)).toBe("2025-11-27T00:00:00.999999999Z");
    expect(nanosToIso(base + 1_000_000_000n)).toBe("2025-11-27T00:00:01.000000000Z");
    expect(nanosToIso(base + 5n)).toBe("2025-11-27T00:00:00.000000005Z"); // back to an earlier second
    expect(nanosToIso(base + 86_400_000_000_123n)).toBe("2025-11-28T00:00:00.000000123Z");
    // under one second since the epoch: no second digits at all
    expect(nanosToIso(42n)).toBe("1970-01-01T00:00:00.000000042Z");
    expect(nanosToIso(1_000_000_000n)).toBe("1970-01-01T00:00:01.000000000Z");
  });

  test("agrees with Date to the millisecond over random times", () => {
    for (let i = 0; i < 2000; i++) {
      const ms = 1_600_000_000_000 + Math.floor(Math.random() * 400_000_000_000);
      const ns = BigInt(ms) * 1_000_000n + BigInt(Math.floor(Math.random() * 1_000_000));
      expect(nanosToIso(ns).slice(0, 23)).toBe(new Date(ms).toISOString().slice(0, 23));
    }
  });
});

describe("randomHex", () => {
  test("lowercase hex of the asked length, distinct across pool refills", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const id = randomHex(i % 2 ? 16 : 8);
      expect(id).toMatch(i % 2 ? /^[0-9a-f]{32}$/ : /^[0-9a-f]{16}$/);
      seen.add(id);
    }
    expect(seen.size).toBe(3000);
  });

  test("ids taken across a refill are whole: the pool's last bytes, then a new pool", () => {
    const lens: number[] = [];
    for (let i = 0; i < 700; i++) lens.push(randomHex(i % 3 === 0 ? 16 : 8).length);
    expect(lens.every((n, i) => n === (i % 3 === 0 ? 32 : 16))).toBe(true);
  });
});

describe("splitHostPort", () => {
  test("names, IPv6 in brackets, no port, and a repeated authority", () => {
    expect(splitHostPort("api.example:8443")).toEqual({ host: "api.example", port: 8443 });
    expect(splitHostPort("api.example:8443")).toEqual({ host: "api.example", port: 8443 });
    expect(splitHostPort("[::1]:80")).toEqual({ host: "::1", port: 80 });
    expect(splitHostPort("[::1]")).toEqual({ host: "::1", port: undefined });
    expect(splitHostPort("example")).toEqual({ host: "example", port: undefined });
    expect(splitHostPort("a:b:c")).toEqual({ host: "a:b:c" });
  });
});

describe("parseTraceparent", () => {
  const old = (v: string | undefined) => {
    if (!v) return undefined;
    const m = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}/.exec(v.trim());
    if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
    return { traceId: m[1]!, parentId: m[2]! };
  };
  const T = "4bf92f3577b34da6a3ce929d0e0e4736";
  const P = "00f067aa0ba902b7";

  test("valid, invalid, zero ids, uppercase, short, surrounding blanks, trailing fields", () => {
    expect(parseTraceparent(`00-${T}-${P}-01`)).toEqual({ traceId: T, parentId: P });
    expect(parseTraceparent(` \t00-${T}-${P}-01 `)).toEqual({ traceId: T, parentId: P });
    expect(parseTraceparent(`01-${T}-${P}-00-extra`)).toEqual({ traceId: T, parentId: P });
    for (const bad of [undefined, "", `00-${T.toUpperCase()}-${P}-01`, `00-${"0".repeat(32)}-${P}-01`, `00-${T}-${"0".repeat(16)}-01`, `00-${T}-${P}-0`, `00_${T}-${P}-01`, `00-${T}x${P}-01`, `0g-${T}-${P}-01`]) {
      expect(parseTraceparent(bad)).toBeUndefined();
    }
  });

  test("agrees with the W3C regex on mutated headers", () => {
    const alphabet = "0123456789abcdefABCDEF- xg";
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let k = 0; k < 20000; k++) {
      const chars = [...`00-${T}-${P}-01`];
      for (let m = rnd(3); m >= 0; m--) chars[rnd(chars.length)] = alphabet[rnd(alphabet.length)]!;
      if (rnd(10) === 0) chars.splice(rnd(chars.length), 1);
      const v = chars.join("");
      expect(parseTraceparent(v)).toEqual(old(v));
    }
  });
});

describe("nanosToIso across seconds and out of order", () => {
  test("matches Date's ISO form with the nine fraction digits, whatever the order of calls", () => {
    const base = 1_764_201_600_000_000_000n; // 2025-11-27T00:00:00Z
    const cases = [5n, base + 123n, 999_999_999n, base - 1n, base + 1_000_000_000n, -7n, base + 86_400_999_999_999n, base + 100_000_000n, 0n, base + 99_999_999n];
    for (const ns of cases) {
      const sec = ns < 0n ? 0n : ns / 1_000_000_000n;
      const frac = ns < 0n ? "000000000" : (ns % 1_000_000_000n).toString().padStart(9, "0");
      expect(nanosToIso(ns)).toBe(new Date(Number(sec) * 1000).toISOString().slice(0, 20) + frac + "Z");
    }
  });
});
