import { describe, expect, test } from "bun:test";
import { glibcRow, MIN_GLIBC } from "../../src/cli/preflight.ts";

describe("glibc preflight row", () => {
  test("this runtime reports its glibc and passes", () => {
    const r = glibcRow();
    expect(r.verdict).toBe("ok");
    expect(r.detail).toMatch(/^2\.\d+ \(2\.17\+ needed\)$/);
  });
  test("the floor itself passes, older and non-glibc runtimes fail with one line", () => {
    expect(glibcRow(MIN_GLIBC).verdict).toBe("ok");
    expect(glibcRow("2.9").verdict).toBe("fail"); // 9 < 17 numerically, not as text
    expect(glibcRow("2.16")).toEqual({ check: "glibc", verdict: "fail", detail: "glibc 2.16 is too old: the binary needs glibc 2.17 or newer" });
    expect(glibcRow(null).detail).toBe("not running on glibc: the binary needs glibc 2.17 or newer");
    expect(glibcRow("3.0").verdict).toBe("ok");
  });
});
