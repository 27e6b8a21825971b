/**
 * Kernels before 6.4 (5.10 and 6.1 of the kernel matrix among them) reject a program whose
 * control flow reaches a loop head through a fall-through edge while the DFS of check_cfg() still
 * has that head on its stack ("back-edge from insn X to Y"): only jump instructions may close a
 * loop there (loop_ok, removed by kernel commit 10e14e9652bf). Whether clang lays a loop out that
 * way changes with unrelated edits, so this test replays that older check_cfg() over every
 * program of .output/tracer.bpf.o, and over each function of .text, instead of waiting for the
 * qemu matrix to find it. Skips, saying why, when the object or llvm-objdump is missing.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { checkCfg510, parseObjdump, stackChains, type Insn } from "../support/bpf-cfg.ts";

const OBJ = resolve(import.meta.dir, "../../.output/tracer.bpf.o");
const OBJDUMP = Bun.which("llvm-objdump");
const SKIP = !existsSync(OBJ) ? `${OBJ} is missing (bun run build)` : !OBJDUMP ? "llvm-objdump is not installed" : undefined;
if (SKIP) console.warn(`test/kernel/bpf-cfg.test.ts skipped: ${SKIP}`);

describe("checkCfg510", () => {
  const I = (code: number, off = 0): Insn => ({ code, src: 0, off, imm: 0 });
  const MOV = I(0xb7), EXIT = I(0x95), JA = (off: number) => I(0x05, off), JEQ = (off: number) => I(0x15, off);
  test("accepts a loop closed by a jump", () => {
    // 0: r0 = 0   1: if r0 == 0 goto 3   2: goto 0   3: exit
    expect(checkCfg510([MOV, JEQ(1), JA(-3), EXIT])).toBeUndefined();
  });
  test("rejects a loop whose body falls through into its head", () => {
    // 0: goto 2   1: r0 = 0 (body, falls into 2)   2: if r0 == 0 goto 4 (head)   3: goto 1   4: exit
    expect(checkCfg510([JA(1), MOV, JEQ(1), JA(-3), EXIT])).toBe("back-edge from insn 1 to 2");
  });
  test("follows ld_imm64 as two slots and pseudo calls into the same section", () => {
    const lines = [
      "Disassembly of section s:",
      "0000000000000000 <f>:",
      "       0:\t18 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00\tr1 = 0 ll",
      "       2:\t85 10 00 00 01 00 00 00\tcall 1",
      "       3:\t95 00 00 00 00 00 00 00\texit",
      "       4:\t95 00 00 00 00 00 00 00\texit",
    ].join("\n");
    const s = parseObjdump(lines).get("s")!;
    expect(s.insns.length).toBe(5);
    expect(s.insns[2]).toEqual({ code: 0x85, src: 1, off: 0, imm: 1 });
    expect(checkCfg510(s.insns)).toBeUndefined();
  });
});

describe.skipIf(!!SKIP)("every program of .output/tracer.bpf.o passes check_cfg() of Linux 5.10", () => {
  const r = SKIP ? undefined : Bun.spawnSync([OBJDUMP!, "-dr", OBJ], { stdout: "pipe", stderr: "pipe" });
  const text = r ? r.stdout.toString() : "";
  const sections = r ? parseObjdump(text) : new Map();
  const failures = (): string[] => {
    const out: string[] = [];
    for (const [name, s] of sections) {
      const entries = name === ".text" ? [...s.functions] : [[name, 0] as [string, number]];
      for (const [fn, at] of entries) {
        const why = checkCfg510(s.insns, at);
        if (why) out.push(`${name}${name === ".text" ? ` ${fn}` : ""}: ${why}`);
      }
    }
    return out;
  };
  test("no fall-through back-edges", () => {
    expect(sections.size).toBeGreaterThan(20);
    expect(failures()).toEqual([]);
  });
  test("stack: each program's frame plus its deepest chain of subprogram frames fits 512 bytes as 5.10 counts (frames rounded to 32)", () => {
    const chains = stackChains(text);
    const progs = [...chains].filter(([k]) => !k.startsWith(".text"));
    expect(progs.length).toBeGreaterThan(20);
    // the model sees the calls: the syscall exits reach a subprogram
    expect(chains.get("tracepoint/syscalls/sys_exit_read tp_exit_read")!.chain.length).toBeGreaterThan(1);
    const over = progs.filter(([, v]) => v.total > 512).map(([k, v]) => `${k}: ${v.total} (${v.chain.join(" → ")})`);
    expect(over).toEqual([]);
  });
});
