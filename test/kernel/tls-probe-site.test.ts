/**
 * Where the C TLS uprobes go on x86-64 (src/kernel/tls/probe-site.ts): hand-made code for the
 * instruction classes and the thin-wrapper rule, then Debian's libssl.so.3 read back with objdump:
 * the probes sit on the one function SSL_read_ex calls and SSL_read calls too, whose first
 * instruction the kernel emulates, and SSL_read's own first instruction is one it would single-step.
 * Go functions: the entry probe goes on the stack check's branch (emulated), whose morestack path
 * jumps back to the first instruction (the probe fires again there; the kernel skips the hit with
 * the branch taken: the per-binary flag), checked against objdump on Go 1.19 builds for x86-64
 * and arm64. Go's (*Conn).Read is probed where it copies its plaintext out (its one call of
 * runtime.memmove, emulated) instead of at its RETs (single-stepped), also checked against objdump.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { analyzeElf } from "../../src/kernel/tls/discover.ts";
import { ElfFile } from "../../src/kernel/tls/elf.ts";
import { directCallsTo, goReadCopySite, goStackCheck, x86CallTargets, x86Emulated, x86EntrySite, x86ThinWrapperCallee } from "../../src/kernel/tls/probe-site.ts";
import { buildGo, GO, goSkipReason } from "../fixtures/go/build.ts";
import { GO_F_ARM64, GO_F_ENTRY_AT_BRANCH, GO_F_READ_AT_COPY } from "../../src/kernel/tls/go-offsets.ts";

const hex = (s: string) => new Uint8Array(s.trim().split(/\s+/).map((b) => parseInt(b, 16)));

describe("instructions the kernel emulates under a uprobe", () => {
  const cases: [string, string, boolean][] = [
    ["push %rbp", "55", true],
    ["push %r13", "41 55", true],
    ["push with REX.W (not the emulated form)", "48 55", false],
    ["nop", "90", true],
    ["call rel32", "e8 00 00 00 00", true],
    ["jmp rel8", "eb 10", true],
    ["jcc rel32", "0f 84 10 00 00 00", true],
    ["sub $0x18,%rsp", "48 83 ec 18", false],
    ["mov %rdi,%rbx", "48 89 fb", false],
    ["endbr64", "f3 0f 1e fa", false],
    ["nothing", "", false],
  ];
  for (const [name, code, want] of cases) test(name, () => expect(x86Emulated(hex(code), 0)).toBe(want));

  test("ENDBR64 then an emulated instruction: the site is past the ENDBR64", () => {
    expect(x86EntrySite(hex("f3 0f 1e fa 55 48 89 e5"))).toEqual({ offset: 4, emulated: true });
    expect(x86EntrySite(hex("f3 0f 1e fa 48 83 ec 18"))).toEqual({ offset: 0, emulated: false });
    expect(x86EntrySite(hex("41 57 41 56"))).toEqual({ offset: 0, emulated: true });
  });

  test("a NULL check (register TEST/CMP) then an emulated instruction: the site is past the check", () => {
    expect(x86EntrySite(hex("48 85 ff  0f 84 97 03 00 00  41 55"))).toEqual({ offset: 3, emulated: true }); // SSL_free
    expect(x86EntrySite(hex("f3 0f 1e fa  48 85 ff  74 10"))).toEqual({ offset: 7, emulated: true });
    expect(x86EntrySite(hex("48 85 ff  48 89 fb"))).toEqual({ offset: 0, emulated: false });
    expect(x86EntrySite(hex("48 85 07  74 10"))).toEqual({ offset: 0, emulated: false }); // test with memory: not skipped
  });
});

describe("thin wrappers and call targets", () => {
  // at 0x1000: sub $8,%rsp; call 0x2000; xor %edx,%edx; test %eax,%eax; cmovs %edx,%eax; add $8,%rsp; ret
  const wrapper = hex("48 83 ec 08  e8 f7 0f 00 00  31 d2  85 c0  0f 48 c2  48 83 c4 08  c3");
  test("a wrapper whose only call follows stack moves: its callee", () => {
    expect(x86ThinWrapperCallee(wrapper, 0x1000)).toBe(0x2000);
    expect(x86CallTargets(wrapper, 0x1000)).toEqual([0x2000]);
  });
  test("an argument register written before the call: not a thin wrapper", () => {
    // mov %rsp,%rcx; call …
    expect(x86ThinWrapperCallee(hex("48 89 e1  e8 f8 0f 00 00  c3"), 0x1000)).toBeUndefined();
  });
  test("two calls: not a thin wrapper; both listed as call targets", () => {
    const two = hex("48 83 ec 08  e8 f7 0f 00 00  e8 f2 1f 00 00  48 83 c4 08  c3");
    expect(x86ThinWrapperCallee(two, 0x1000)).toBeUndefined();
    expect(x86CallTargets(two, 0x1000)).toEqual([0x2000, 0x3000]);
  });
  test("an indirect call or a jump out of the function: no answer", () => {
    expect(x86CallTargets(hex("ff d0 c3"), 0x1000)).toBeUndefined(); // call *%rax
    expect(x86CallTargets(hex("48 83 ec 08  e9 00 10 00 00"), 0x1000)).toBeUndefined(); // tail jmp
    expect(x86ThinWrapperCallee(hex("ff 25 00 10 00 00"), 0x1000)).toBeUndefined(); // jmp *(%rip) (a PLT stub)
  });
  test("undecodable bytes: no answer", () => {
    expect(x86CallTargets(hex("0f 0b 06"), 0x1000)).toBeUndefined();
  });
});

const LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
const skip = process.arch !== "x64" || !existsSync(LIBSSL) || !Bun.which("objdump") ? "needs x86-64, Debian's libssl.so.3 and objdump" : undefined;
if (skip) console.warn(`libssl part of tls-probe-site.test.ts skipped: ${skip}`);

describe.skipIf(!!skip)("Debian's libssl.so.3", () => {
  /** objdump's instructions of `sym`: [address, mnemonic and operands] */
  function disasm(sym: string): [number, string][] {
    const out = Bun.spawnSync(["objdump", "-d", "--no-show-raw-insn", `--disassemble=${sym}`, LIBSSL]).stdout.toString();
    return [...out.matchAll(/^\s+([0-9a-f]+):\s+(.+)$/gm)].map((m) => [parseInt(m[1]!, 16), m[2]!.trim()]);
  }
  const callees = (sym: string) => disasm(sym).filter(([, i]) => i.startsWith("call")).map(([, i]) => parseInt(/call\s+([0-9a-f]+)/.exec(i)![1]!, 16));

  test("reads and writes are probed on the internal function SSL_x and SSL_x_ex both call, with the _ex programs", () => {
    const { stack } = ElfFile.with(LIBSSL, (e) => analyzeElf(e, false));
    const seg = ElfFile.with(LIBSSL, (e) => (v: number) => e.vaddrToOffset(v)!);
    for (const [f, fx, prog] of [["SSL_read", "SSL_read_ex", "ssl_read_ex"], ["SSL_write", "SSL_write_ex", "ssl_write_ex"]] as const) {
      // objdump's view: SSL_x starts with an instruction the kernel single-steps; SSL_x_ex makes
      // exactly one call; SSL_x calls the same function; that function starts with a push.
      expect(disasm(f)[0]![1]).not.toMatch(/^push/);
      const [inner] = callees(fx);
      expect(callees(fx).length).toBe(1);
      expect(callees(f)).toContain(inner!);
      const head = Bun.spawnSync(["objdump", "-d", "--no-show-raw-insn", `--start-address=${inner}`, `--stop-address=${inner! + 2}`, LIBSSL]).stdout.toString();
      expect(head).toMatch(/push/);
      const probes = stack!.probes.filter((p) => p.program.startsWith(`tls_${prog}_`));
      expect(probes.map((p) => p.kind)).toEqual(["entry", "return"]);
      for (const p of probes) {
        expect(p.offset).toBe(seg(inner!));
        expect(p.symbol).toBe(`${f}+${fx}→0x${inner!.toString(16)}`);
      }
    }
    // nothing is left on the exported read/write functions themselves
    expect(stack!.probes.filter((p) => /^SSL_(read|write)(_ex)?$/.test(p.symbol))).toEqual([]);
    expect(stack!.probes.at(-1)).toMatchObject({ symbol: "SSL_free", program: "tls_free_entry" });
  });
});

describe("Go stack checks (vectors)", () => {
  test("the branch and the instruction after it", () => {
    expect(goStackCheck(hex("49 3b 66 10  0f 86 c2 03 00 00  48 83 ec 68"), "x86_64")).toEqual({ branch: 4, past: 10 });
    expect(goStackCheck(hex("48 83 ec 18"), "x86_64")).toBeUndefined();
  });
  test("x86-64: cmp 0x10(%r14),%rsp; jbe rel32 / rel8; with lea for large frames", () => {
    expect(goStackCheck(hex("49 3b 66 10  0f 86 c2 03 00 00  48 83 ec 68"), "x86_64")?.past).toBe(10);
    expect(goStackCheck(hex("49 3b 66 10  76 20  55"), "x86_64")?.past).toBe(6);
    expect(goStackCheck(hex("4c 8d 64 24 98  4d 3b 66 10  0f 86 64 07 00 00  48 81 ec e8 00 00 00"), "x86_64")?.past).toBe(15);
  });
  test("x86-64: no stack check (NOSPLIT) or another first instruction: the function's start", () => {
    expect(goStackCheck(hex("48 83 ec 18  48 89 6c 24 10"), "x86_64")).toBeUndefined();
    expect(goStackCheck(hex("49 3b 66 10  48 83 ec 68"), "x86_64")).toBeUndefined(); // compare without the branch
  });
  test("arm64: ldr x16,[x28,#16]; cmp; b.ls", () => {
    const le = (...w: number[]) => new Uint8Array(new Uint32Array(w).buffer);
    expect(goStackCheck(le(0xf9400b90, 0xeb3063ff, 0x54000a89, 0xf81b0ffe), "aarch64")?.past).toBe(12);
    expect(goStackCheck(le(0xf9400b90, 0xd1040371, 0xeb10023f, 0x54001e29, 0xf81b0ffe), "aarch64")?.past).toBe(16);
    expect(goStackCheck(le(0xf81b0ffe, 0xeb3063ff, 0x54000a89, 0xd503201f), "aarch64")).toBeUndefined();
  });
});

const goSkip = goSkipReason();
describe("Go's Read copy site (vectors)", () => {
  // x86-64 at 0x1000: call +0 (to 0x1005), call *%rax, call rel32 to 0x2000, ret
  const x86 = hex("e8 00 00 00 00  ff d0  e8 f4 0f 00 00  c3");
  test("x86-64: direct calls to one target, indirect calls skipped", () => {
    expect(directCallsTo(x86, 0x1000, 0x2000, "x86_64")).toEqual([7]);
    expect(directCallsTo(x86, 0x1000, 0x1005, "x86_64")).toEqual([0]);
    expect(directCallsTo(x86, 0x1000, 0x3000, "x86_64")).toEqual([]);
    expect(directCallsTo(hex("0f 0b 06"), 0x1000, 0x2000, "x86_64")).toBeUndefined(); // 06: invalid in 64-bit mode
  });
  test("arm64: BL forwards and backwards", () => {
    // at 0x1000: bl +0x100 (0x94000040), nop, bl -0x8 (0x97fffffe) → 0x1000
    const arm = new Uint8Array(new Uint32Array([0x94000040, 0xd503201f, 0x97fffffe]).buffer);
    expect(directCallsTo(arm, 0x1000, 0x1100, "aarch64")).toEqual([0]);
    expect(directCallsTo(arm, 0x1000, 0x1000, "aarch64")).toEqual([8]);
  });
  test("the copy site: exactly one memmove call, and no call of bytes.(*Reader).Read", () => {
    expect(goReadCopySite(x86, 0x1000, 0x2000, undefined, "x86_64")).toBe(7);
    expect(goReadCopySite(x86, 0x1000, 0x2000, 0x1005, "x86_64")).toBeUndefined(); // Reader.Read not inlined
    expect(goReadCopySite(hex("e8 f9 0f 00 00 e8 f4 0f 00 00 c3"), 0x1000, 0x2000, undefined, "x86_64")).toBeUndefined(); // two memmoves
    expect(goReadCopySite(x86, 0x1000, 0x3000, undefined, "x86_64")).toBeUndefined(); // none
    expect(goReadCopySite(x86, 0x1000, undefined, undefined, "x86_64")).toBeUndefined(); // no memmove symbol
  });
});

describe.skipIf(!!goSkip || process.arch !== "x64")("Go 1.19 TLS programs: the entry probe is on the stack check's branch, and the kernel is told so", () => {
  const FNS = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"];
  test("x86-64 build, against GNU objdump", () => {
    const bin = buildGo("httpsecho");
    const { stack } = ElfFile.with(bin, (e) => analyzeElf(e, true));
    for (const fn of FNS) {
      const out = Bun.spawnSync(["objdump", "-d", "--no-show-raw-insn", `--disassemble=${fn}`, bin]).stdout.toString();
      const insns = [...out.matchAll(/^\s+([0-9a-f]+):\s+(\S+)/gm)].map((m) => [parseInt(m[1]!, 16), m[2]!] as const);
      const jbe = insns.findIndex(([, op]) => op === "jbe");
      expect(jbe).toBeGreaterThan(0);
      expect(jbe).toBeLessThan(3);
      const off = ElfFile.with(bin, (e) => e.vaddrToOffset(insns[jbe]![0])!);
      expect(stack!.probes.find((p) => p.symbol === fn && p.kind === "entry")!.offset).toBe(off);
      // and the morestack path jumps back to the first instruction: the probe fires again there
      expect(out).toMatch(new RegExp(`jmp\\s+${insns[0]![0].toString(16)} <`));
    }
    expect(new DataView(stack!.go!.mapValue.buffer).getUint32(28, true)).toBe(GO_F_ENTRY_AT_BRANCH | GO_F_READ_AT_COPY);
    // Read: one probe, on its only `call runtime.memmove`; no RET probes. Write keeps its RETs.
    const read = Bun.spawnSync(["objdump", "-d", "--no-show-raw-insn", `--disassemble=${FNS[0]}`, bin]).stdout.toString();
    const memmoves = [...read.matchAll(/^\s+([0-9a-f]+):\s+call\s+[0-9a-f]+ <runtime\.memmove>/gm)].map((m) => parseInt(m[1]!, 16));
    expect(memmoves.length).toBe(1);
    expect(stack!.probes.filter((p) => p.symbol === FNS[0] && p.kind !== "entry").map((p) => [p.kind, p.program, p.offset]))
      .toEqual([["copy", "go_tls_read_copy", ElfFile.with(bin, (e) => e.vaddrToOffset(memmoves[0]!)!)]]);
    expect(stack!.probes.filter((p) => p.symbol === FNS[1] && p.kind !== "entry").map((p) => p.kind)).toEqual(["ret-offsets"]);
  }, 180_000);

  test("arm64 build, against go tool objdump", () => {
    const bin = buildGo("httpsecho", "", "arm64");
    const objdumpTool = GO.replace(/bin\/go$/, "pkg/tool/linux_amd64/objdump");
    const { stack } = ElfFile.with(bin, (e) => analyzeElf(e, true));
    for (const fn of FNS) {
      const text = Bun.spawnSync([objdumpTool, "-s", `^${fn.replace(/[.*()]/g, "\\$&")}$`, bin]).stdout.toString();
      const insns = [...text.matchAll(/\t0x([0-9a-f]+)\t+[0-9a-f]{8}\t+(\S+)/g)].map((m) => [parseInt(m[1]!, 16), m[2]!] as const);
      const bls = insns.findIndex(([, op]) => op === "BLS");
      expect(bls).toBeGreaterThan(0);
      expect(bls).toBeLessThan(4);
      const off = ElfFile.with(bin, (e) => e.vaddrToOffset(insns[bls]![0])!);
      expect(stack!.probes.find((p) => p.symbol === fn && p.kind === "entry")!.offset).toBe(off);
    }
    expect(new DataView(stack!.go!.mapValue.buffer).getUint32(28, true)).toBe(GO_F_ARM64 | GO_F_ENTRY_AT_BRANCH | GO_F_READ_AT_COPY);
    const read = Bun.spawnSync([objdumpTool, "-s", `^${FNS[0]!.replace(/[.*()]/g, "\\$&")}$`, bin]).stdout.toString();
    const memmoves = [...read.matchAll(/\t0x([0-9a-f]+)\t+[0-9a-f]{8}\t+CALL runtime\.memmove\(SB\)/g)].map((m) => parseInt(m[1]!, 16));
    expect(memmoves.length).toBe(1);
    expect(stack!.probes.filter((p) => p.symbol === FNS[0] && p.kind !== "entry").map((p) => [p.kind, p.offset]))
      .toEqual([["copy", ElfFile.with(bin, (e) => e.vaddrToOffset(memmoves[0]!)!)]]);
  }, 300_000);
});
