/**
 * The x86-64 length decoder and RET finder against objdump on a Go 1.19 net/http TLS program built
 * here: RET offsets of crypto/tls.(*Conn).Read/Write must equal objdump's exactly, and every
 * instruction boundary of every function must be one objdump also decodes. Hand-made vectors pin
 * the cases where a C3 byte is not a RET, and the aarch64 word scan.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { analyzeElf } from "../../src/kernel/tls/discover.ts";
import { ElfFile } from "../../src/kernel/tls/elf.ts";
import { ARM64_RET, arm64Rets, x86InstructionLength, x86Rets } from "../../src/kernel/tls/x86-ret.ts";
import { buildGo, GO, goSkipReason } from "../fixtures/go/build.ts";

const hex = (s: string) => new Uint8Array(s.trim().split(/\s+/).map((b) => parseInt(b, 16)));

describe("x86-64 instruction lengths (vectors)", () => {
  const cases: [string, string, number][] = [
    ["ret", "c3", 1],
    ["ret imm16", "c2 08 00", 3],
    ["mov eax, 0xc3", "b8 c3 00 00 00", 5],
    ["movabs rax, imm64", "48 b8 c3 c3 c3 c3 c3 c3 c3 c3", 10],
    ["mov ax, imm16", "66 b8 c3 00", 4],
    ["mov [rip+disp32], imm32", "c7 05 c3 00 00 00 01 00 00 00", 10],
    ["mov word [rip+d], imm16", "66 c7 05 c3 00 00 00 01 00", 9],
    ["lea rax, [rsp+rbx*8+0xc3]", "48 8d 84 dc c3 00 00 00", 8],
    ["mov rax, [rbp+disp8]", "48 8b 45 c3", 4],
    ["SIB base=5 mod=0: disp32", "8b 04 25 c3 00 00 00", 7],
    ["test byte [rax], imm8 (F6 /0)", "f6 00 c3", 3],
    ["neg dword [rax] (F7 /3, no imm)", "f7 18", 2],
    ["test eax, imm32 (F7 /0)", "f7 c0 c3 00 00 00", 6],
    ["jcc rel32", "0f 84 c3 00 00 00", 6],
    ["call rel32 with 0x66 stays rel32", "66 e8 c3 00 00 00", 6],
    ["jmp rel8", "eb c3", 2],
    ["pshufd xmm0, xmm1, imm8", "66 0f 70 c1 c3", 5],
    ["pshufb (0F 38)", "66 0f 38 00 c3", 5],
    ["palignr (0F 3A) imm8", "66 0f 3a 0f c3 08", 6],
    ["VEX2 vmovdqu ymm0, [rsi]", "c5 fe 6f 06", 4],
    ["VEX3 vpshufb ymm0, ymm1, [rip+d]", "c4 e2 75 00 05 c3 00 00 00", 9],
    ["VEX3 vpalignr imm8 (map 3)", "c4 e3 75 0f c3 08", 6],
    ["VEX vzeroupper", "c5 f8 77", 3],
    ["EVEX vmovdqu64 zmm0, [rsi+disp8]", "62 f1 fe 48 6f 46 c3", 7],
    ["EVEX vpternlogd imm8 (map 3)", "62 f3 75 48 25 c3 96", 7],
    ["lock cmpxchg [rdi], rcx", "f0 48 0f b1 0f", 5],
    ["fs mov rax, [abs]", "64 48 8b 04 25 f8 ff ff ff", 9],
    ["movabs al, moffs64", "a0 c3 c3 c3 c3 c3 c3 c3 c3", 9],
    ["enter", "c8 c3 00 c3", 4],
    ["int3", "cc", 1],
    ["nopw 0(rax,rax,1)", "66 0f 1f 44 00 00", 6],
  ];
  for (const [name, bytes, len] of cases) {
    test(name, () => expect(x86InstructionLength(hex(bytes), 0)).toBe(len));
  }

  test("C3 bytes inside instructions are not RETs; the real ones are", () => {
    const code = hex("b8 c3 00 00 00  48 8b 45 c3  f3 c3  c2 10 00  c3 cc cc");
    expect(x86Rets(code)).toEqual({ rets: [9, 11, 14], count: 7 });
  });

  test("truncated and unknown instructions stop the walk with an error", () => {
    expect(x86InstructionLength(hex("48 b8 01 02"), 0)).toBe(-1);
    expect(x86InstructionLength(hex("06"), 0)).toBe(-2); // push es: invalid in 64-bit mode
    expect(x86Rets(hex("c3 0f 84 01")).error).toMatch(/truncated instruction at \+0x1/);
    expect(x86InstructionLength(hex("66 66 66 66 66 66 66 66 66 66 66 66 66 66 66 90"), 0)).toBe(-2);
  });
});

describe("aarch64 RET words", () => {
  test("only aligned 0xd65f03c0 words count", () => {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setUint32(4, ARM64_RET, true);
    v.setUint32(12, ARM64_RET, true);
    expect(arm64Rets(b).rets).toEqual([4, 12]);
    const shifted = new Uint8Array(10);
    new DataView(shifted.buffer).setUint32(2, ARM64_RET, true);
    expect(arm64Rets(shifted).rets).toEqual([]);
    expect(arm64Rets(shifted).error).toMatch(/not a multiple of 4/);
  });
});

const skip = goSkipReason();
if (skip) console.warn(`tls-x86.test.ts Go comparisons skipped: ${skip}`);

/** objdump's instruction start addresses of the whole binary, and the RET addresses per function. */
function objdump(bin: string): { starts: Set<number>; rets: Map<string, number[]> } {
  const text = Bun.spawnSync(["objdump", "-d", "-w", "--no-show-raw-insn", bin]).stdout.toString();
  const starts = new Set<number>();
  const rets = new Map<string, number[]>();
  let fn = "";
  for (const line of text.split("\n")) {
    const f = /^[0-9a-f]+ <(.+)>:$/.exec(line);
    if (f) {
      fn = f[1]!;
      continue;
    }
    const m = /^\s+([0-9a-f]+):\t(\S+)/.exec(line);
    if (!m) continue;
    const addr = parseInt(m[1]!, 16);
    starts.add(addr);
    if (m[2] === "ret" || m[2] === "retq") rets.set(fn, [...(rets.get(fn) ?? []), addr]);
  }
  return { starts, rets };
}

describe.skipIf(!!skip)("RET offsets on a Go 1.19 net/http TLS program", () => {
  let bin = "";
  let dump: ReturnType<typeof objdump>;
  beforeAll(() => {
    bin = buildGo("httpsecho");
    dump = objdump(bin);
  }, 180_000);

  for (const fn of ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"]) {
    test(`${fn}: exactly objdump's RETs`, () => {
      ElfFile.with(bin, (elf) => {
        const s = elf.findSymbols([fn]).get(fn)!;
        const scan = x86Rets(elf.functionBytes(s));
        expect(scan.error).toBeUndefined();
        const want = dump.rets.get(fn)!.map((a) => a - s.value);
        expect(want.length).toBeGreaterThan(2);
        expect(scan.rets).toEqual(want);
      });
    });
  }

  test("every function decodes, on objdump's instruction boundaries", () => {
    ElfFile.with(bin, (elf) => {
      let funcs = 0;
      let insns = 0;
      const off: string[] = [];
      for (const s of elf.symbols(".symtab")) {
        // sig.* are marker functions: a JMP over data bytes, not code.
        if (s.type !== 2 || s.size === 0 || s.name.startsWith("crypto/internal/boring/sig.")) continue;
        const code = elf.functionBytes(s);
        funcs++;
        let p = 0;
        while (p < code.length) {
          const n = x86InstructionLength(code, p);
          if (n < 0 || !dump.starts.has(s.value + p)) {
            off.push(`${s.name}+0x${p.toString(16)}`);
            break;
          }
          p += n;
          insns++;
        }
      }
      expect(off).toEqual([]);
      expect(funcs).toBeGreaterThan(3000);
      expect(insns).toBeGreaterThan(300_000);
    });
  }, 60_000);
});

describe.skipIf(!!skip)("aarch64: a cross-built Go 1.19 TLS program", () => {
  test("RET words of (*Conn).Read/Write equal `go tool objdump`; discovery gives arm64 Go probes", () => {
    const bin = buildGo("httpsecho", "", "arm64");
    const objdumpTool = GO.replace(/bin\/go$/, "pkg/tool/linux_amd64/objdump");
    ElfFile.with(bin, (elf) => {
      expect(elf.arch).toBe("aarch64");
      for (const fn of ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"]) {
        const s = elf.findSymbols([fn]).get(fn)!;
        const text = Bun.spawnSync([objdumpTool, "-s", `^${fn.replace(/[.*()]/g, "\\$&")}$`, bin]).stdout.toString();
        const want = [...text.matchAll(/\t0x([0-9a-f]+)\t+[0-9a-f]{8}\t+RET\b/g)].map((m) => parseInt(m[1]!, 16) - s.value);
        expect(want.length).toBeGreaterThan(2);
        expect(arm64Rets(elf.functionBytes(s)).rets).toEqual(want);
      }
      const { stack } = analyzeElf(elf, true);
      expect(stack).toMatchObject({ kind: "go", arch: "aarch64", decryptable: true });
      expect(stack!.go!.offsets).toMatchObject({ source: "dwarf", gGoid: 152, pollFDSysfd: 16 });
      expect(new DataView(stack!.go!.mapValue.buffer).getUint32(28, true)).toBe(7); // arm64, entries on the stack-check branch, Read at its copy
    });
  }, 300_000);
});
