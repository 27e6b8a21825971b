/**
 * The systemd unit's Environment= lines tune the JavaScript engine of the runtime the agent is
 * built with. BUN_JSC_gcMaxHeapSize is named like a limit: some JavaScriptCore releases ended the
 * process once the heap left by a collection was larger than it. The runtime used here (the one
 * `bun build --compile` embeds) only uses it as the allocation budget of a collection cycle; this
 * test holds a live set far above the value, under that environment, and fails if the runtime
 * stops the process or the unit loses the variable. BUN_JSC_useOMGJIT=0 keeps WebAssembly (the OTLP
 * client's HTTP parser) out of its optimizing tier: WebAssembly must still run, and hot. The runtime
 * refuses to start with an option it does not know, so a runtime upgrade that drops one of them
 * fails every test here.
 */
import { describe, expect, test } from "bun:test";
import { unitEnvironment } from "../support/unit-env.ts";

describe("systemd unit environment", () => {
  test("sets the engine's collection budget and heap growth", () => {
    const env = unitEnvironment();
    expect(Number(env.BUN_JSC_gcMaxHeapSize)).toBe(8 * 1024 * 1024);
    expect(Number(env.BUN_JSC_heapGrowthMaxIncrease)).toBeCloseTo(1.1);
    expect(env.BUN_JSC_useOMGJIT).toBe("0");
  });

  test("WebAssembly (the OTLP client's HTTP parser) runs hot under the unit's environment", () => {
    // (i32.add (local.get 0) (local.get 1)), called far past the engine's tier-up thresholds
    const script = `
      const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,7,1,96,2,127,127,1,127,3,2,1,0,7,7,1,3,97,100,100,0,0,10,9,1,7,0,32,0,32,1,106,11]);
      const add = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.add;
      let sum = 0;
      for (let i = 0; i < 3000000; i++) sum = add(sum, 1) | 0;
      console.log("ok", sum);
    `;
    const r = Bun.spawnSync([process.execPath, "-e", script], { env: { ...process.env, ...unitEnvironment() }, stdout: "pipe", stderr: "pipe" });
    expect({ exit: r.exitCode, out: r.stdout.toString().trim(), stderr: r.stderr.toString().slice(0, 500) }).toEqual({ exit: 0, out: "ok 3000000", stderr: "" });
  }, 60_000);

  test("the runtime keeps running with a live heap far above BUN_JSC_gcMaxHeapSize", () => {
    // ~80 MB live (10x the budget) while allocating garbage, with full collections in between
    const script = `
      const keep = [];
      for (let i = 0; i < 400000; i++) keep.push({ i, s: "v" + i, a: [i, i + 1] });
      for (let round = 0; round < 5; round++) {
        let junk = 0;
        for (let j = 0; j < 200000; j++) junk += ("x" + j).length;
        Bun.gc(true);
      }
      const { heapStats } = require("bun:jsc");
      console.log("ok", keep.length, Math.round(heapStats().heapSize / 1048576));
    `;
    const r = Bun.spawnSync([process.execPath, "-e", script], { env: { ...process.env, ...unitEnvironment() }, stdout: "pipe", stderr: "pipe" });
    const out = r.stdout.toString();
    expect({ exit: r.exitCode, stderr: r.stderr.toString().slice(0, 500) }).toEqual({ exit: 0, stderr: "" });
    const m = /^ok (\d+) (\d+)/.exec(out);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBe(400000);
    expect(Number(m![2])).toBeGreaterThan(8 * 4); // the heap really was several times the value
  }, 60_000);
});
