/** The small formatters every span goes through: timestamps, ids, authorities. */
import { describe, expect, test } from "bun:test";
import { randomHex, splitHostPort } from "../../src/spans/builder.ts";
import { nanosToIso } from "../../src/spans/span.ts";

describe("nanosToIso", () => {
  test("nanosecond digits kept; the cached second never leaks into the next one", () => {
    const base = 1_764_201_600n * 1_000_000_000n; // 2025-11-27T00:00:00Z
    expect(nanosToIso(base)).toBe("2025-11-27T00:00:00.000000000Z");
    expect(nanosToIso(base + 999_999_999n)).toBe("2025-11-27T00:00:00.999999999Z");
    expect(nanosToIso(base + 1_000_000_000n)).toBe("2025-11-27T00:00:01.000000000Z");
    expect(nanosToIso(base + 5n)).toBe("2025-11-27T00:00:00.000000005Z"); // back to an earlier second
    expect(nanosToIso(base + 86_400_000_000_123n)).toBe("2025-11-28T00:00:00.000000123Z");
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
