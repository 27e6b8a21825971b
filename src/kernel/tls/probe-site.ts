/**
 * Where a C TLS function's uprobes cost least on x86-64.
 *
 * A uprobe replaces one instruction with INT3. When it fires, the kernel either emulates the
 * instruction it displaced (x86-64 kernels emulate PUSH of a register, NOP, CALL/JMP rel and Jcc)
 * or runs a copy of it out of line with the trap flag set: a second exception, a debug trap.
 * Under a hypervisor that intercepts debug traps, that single step is a VM exit. On this project's
 * VM (Firecracker), `bench/uprobe-site.ts`: 10.2 µs per hit of a uprobe on a single-stepped first
 * instruction against 1.15 µs on an emulated PUSH (a uretprobe: 10.8 against 1.6). Debian's
 * libssl.so.3 starts SSL_read and SSL_write with `sub $0x18,%rsp`: nginx paid ~10 µs per TLS call,
 * three calls per keep-alive request.
 *
 * Two ways to a cheaper site, both keeping what the probe sees:
 * - a function that starts with ENDBR64 (CET builds) and/or a register TEST or CMP (a NULL check)
 *   is probed just after them, when what follows is emulated: they change no register and no
 *   stack, so an entry probe reads the same arguments and a return probe finds the return address
 *   where it was;
 * - OpenSSL (1.1.1 and 3.x) implements SSL_read and SSL_read_ex (SSL_write and SSL_write_ex) with
 *   one internal function that takes SSL_read_ex's arguments and returns 1 on success with the
 *   byte count stored through its fourth argument. When SSL_read_ex is a thin wrapper around one
 *   call (nothing before it but stack moves: the callee gets the same argument registers), SSL_read
 *   calls the same function, and that function's first instruction is emulated, the probes go on
 *   it with SSL_read_ex's programs, instead of on both exported functions.
 * Anything else keeps the exported functions (correct, only dearer). Go functions get their entry
 * on the stack check's branch (goStackCheck). Pure functions over bytes.
 */
import { opcodeIndex, x86InstructionLength } from "./x86-ret.ts";

/** Whether x86-64 kernels emulate the instruction at `off` when a uprobe sits on it. */
export function x86Emulated(code: Uint8Array, off: number): boolean {
  const b0 = code[off];
  const b1 = code[off + 1] ?? -1;
  if (b0 === undefined) return false;
  if (b0 >= 0x50 && b0 <= 0x57) return true; // push %rax..%rdi
  if (b0 === 0x41 && b1 >= 0x50 && b1 <= 0x57) return true; // push %r8..%r15 (the one REX form emulated)
  if (b0 === 0x90) return true; // nop
  if (b0 === 0xe8 || b0 === 0xe9 || b0 === 0xeb) return true; // call/jmp rel
  if (b0 >= 0x70 && b0 <= 0x7f) return true; // jcc rel8
  return b0 === 0x0f && b1 >= 0x80 && b1 <= 0x8f; // jcc rel32
}

function isEndbr64(code: Uint8Array, off: number): boolean {
  return code[off] === 0xf3 && code[off + 1] === 0x0f && code[off + 2] === 0x1e && code[off + 3] === 0xfa;
}

/** Length of a TEST or CMP of two registers at `off` (they only set flags), else 0. */
function flagsOnly(code: Uint8Array, off: number): number {
  const rex = code[off]! >= 0x40 && code[off]! <= 0x4f ? 1 : 0;
  const op = code[off + rex];
  const modrm = code[off + rex + 1];
  if (modrm === undefined || modrm >> 6 !== 3) return 0;
  return op === 0x85 || op === 0x84 || op === 0x39 || op === 0x3b || op === 0x38 || op === 0x3a ? rex + 2 : 0;
}

/**
 * Where on a function (its first bytes in `code`) the entry uprobe goes, and whether the
 * instruction there is emulated: past a leading ENDBR64 and then past one TEST/CMP of two
 * registers (`test %rdi,%rdi; je …`, a NULL check: SSL_free, gnutls_deinit) when what follows is
 * emulated, else the first byte. Skipped instructions change no argument register and no stack,
 * and nothing jumps back to them from inside a C function.
 */
export function x86EntrySite(code: Uint8Array): { offset: number; emulated: boolean } {
  const start = isEndbr64(code, 0) ? 4 : 0;
  if (x86Emulated(code, start)) return { offset: start, emulated: true };
  const n = flagsOnly(code, start);
  if (n > 0 && x86Emulated(code, start + n)) return { offset: start + n, emulated: true };
  return { offset: 0, emulated: x86Emulated(code, 0) };
}

function rel32(code: Uint8Array, at: number): number {
  return (code[at]! | (code[at + 1]! << 8) | (code[at + 2]! << 16) | (code[at + 3]! << 24)) >> 0;
}

/** What one instruction does to control flow, as far as these checks need. */
type Flow =
  | { kind: "call"; target: number } // CALL rel32: target relative to the function start
  | { kind: "jump"; target: number } // JMP/Jcc rel: target relative to the function start
  | { kind: "indirect" } // CALL/JMP through a register or memory
  | { kind: "other" };

function flowOf(code: Uint8Array, off: number, n: number): Flow {
  const i = opcodeIndex(code, off, n);
  if (i >= off + n) return { kind: "other" };
  const op = code[i]!;
  const next = off + n;
  if (op === 0xe8) return { kind: "call", target: next + rel32(code, next - 4) };
  if (op === 0xe9) return { kind: "jump", target: next + rel32(code, next - 4) };
  if (op === 0xeb || (op >= 0x70 && op <= 0x7f)) return { kind: "jump", target: next + ((code[next - 1]! << 24) >> 24) };
  if (op === 0x0f && code[i + 1]! >= 0x80 && code[i + 1]! <= 0x8f) return { kind: "jump", target: next + rel32(code, next - 4) };
  if (op === 0xff) {
    const reg = (code[i + 1]! >> 3) & 7;
    if (reg >= 2 && reg <= 5) return { kind: "indirect" };
  }
  return { kind: "other" };
}

/** ENDBR64, PUSH reg, SUB $imm,%rsp: instructions that move only the stack pointer. */
function stackOnly(code: Uint8Array, off: number, n: number): boolean {
  if (n === 4 && isEndbr64(code, off)) return true;
  const b0 = code[off]!;
  if (n === 1 && b0 >= 0x50 && b0 <= 0x57) return true;
  if (n === 2 && b0 === 0x41 && code[off + 1]! >= 0x50 && code[off + 1]! <= 0x57) return true;
  // 48 83 ec ib / 48 81 ec id: sub $imm, %rsp
  return b0 === 0x48 && (code[off + 1] === 0x83 || code[off + 1] === 0x81) && code[off + 2] === 0xec && (n === 4 || n === 7);
}

/** Every instruction of one whole function (`code`) with its control flow, in one decoding walk;
 * undefined when the code does not decode. */
function x86Flows(code: Uint8Array): { at: number; n: number; flow: Flow }[] | undefined {
  const out: { at: number; n: number; flow: Flow }[] = [];
  for (let off = 0; off < code.length; ) {
    const n = x86InstructionLength(code, off);
    if (n < 0) return undefined;
    out.push({ at: off, n, flow: flowOf(code, off, n) });
    off += n;
  }
  return out;
}

/** The CALL rel32 targets of `flows` (a function at `vaddr`), or undefined when it calls through a
 * pointer or jumps outside itself (a tail call: its work would not be all in the calls listed). */
function callTargetsOf(flows: { flow: Flow }[], vaddr: number, size: number): number[] | undefined {
  const out: number[] = [];
  for (const { flow: f } of flows) {
    if (f.kind === "indirect") return undefined;
    if (f.kind === "jump" && (f.target < 0 || f.target >= size)) return undefined;
    if (f.kind === "call") out.push(vaddr + f.target);
  }
  return out;
}

/**
 * Every CALL rel32 target of one whole function (`code`, at virtual address `vaddr`), or
 * undefined when the code does not decode, calls through a pointer, or jumps outside itself (a
 * tail call: its work would not be all in the calls listed).
 */
export function x86CallTargets(code: Uint8Array, vaddr: number): number[] | undefined {
  const flows = x86Flows(code);
  return flows && callTargetsOf(flows, vaddr, code.length);
}

/**
 * The callee of a thin wrapper (`code`: the whole function, at `vaddr`): exactly one CALL, nothing
 * before it but instructions that move only the stack pointer, so the callee receives the
 * wrapper's argument registers unchanged. Undefined for anything else.
 */
export function x86ThinWrapperCallee(code: Uint8Array, vaddr: number): number | undefined {
  const flows = x86Flows(code);
  const calls = flows && callTargetsOf(flows, vaddr, code.length);
  if (calls === undefined || calls.length !== 1) return undefined;
  for (const { at, n, flow } of flows!) {
    if (flow.kind === "call") return calls[0];
    if (!stackOnly(code, at, n)) return undefined;
  }
  return undefined;
}

/**
 * A Go function's stack check: the offset of its conditional branch to morestack in `code` (the
 * function's bytes) and of the instruction after it; undefined when the function does not start
 * with one (NOSPLIT). A function whose stack is too small calls runtime.morestack and then jumps
 * back to its first instruction, so a probe before the branch fires twice for that call (once
 * with the branch taken), and one after it once. The check only compares: the argument registers
 * are as they were at entry at both places.
 *   x86-64: [lea -N(%rsp),%r12]  cmp 0x10(%r14),%rsp|%r12  jbe morestack (taken: CF or ZF)
 *   arm64:  ldr x16,[x28,#16]  [sub x17,sp,#N]  cmp sp|x17,x16  b.ls morestack (taken: C clear or Z)
 * The branch is an instruction the kernel emulates (x86-64 Jcc) or simulates (arm64 B.cond); the
 * one after it is usually not (`sub $N,%rsp`, `str x30,…`).
 */
export function goStackCheck(code: Uint8Array, arch: "x86_64" | "aarch64"): { branch: number; past: number } | undefined {
  if (arch === "aarch64") {
    if (code.length < 16) return undefined;
    const word = (i: number) => (code[i]! | (code[i + 1]! << 8) | (code[i + 2]! << 16) | (code[i + 3]! << 24)) >>> 0;
    if (word(0) !== 0xf9400b90) return undefined; // ldr x16, [x28, #16]: g.stackguard0
    for (let i = 4; i <= 12 && i + 4 <= code.length; i += 4) {
      if ((word(i) & 0xff00001f) === 0x54000009) return { branch: i, past: i + 4 }; // b.ls
    }
    return undefined;
  }
  let off = 0;
  const n0 = x86InstructionLength(code, 0);
  if (n0 < 0) return undefined;
  // lea -N(%rsp),%r12 (4c 8d 64 24 d8 / 4c 8d a4 24 d32): frames larger than the guard's slack
  if (code[0] === 0x4c && code[1] === 0x8d && (code[2] === 0x64 || code[2] === 0xa4) && code[3] === 0x24) off = n0;
  // cmp 0x10(%r14),%rsp (49 3b 66 10) or ,%r12 (4d 3b 66 10)
  if (!((code[off] === 0x49 || code[off] === 0x4d) && code[off + 1] === 0x3b && code[off + 2] === 0x66 && code[off + 3] === 0x10)) return undefined;
  off += 4;
  if (code[off] === 0x76) return { branch: off, past: off + 2 }; // jbe rel8
  if (code[off] === 0x0f && code[off + 1] === 0x86) return { branch: off, past: off + 6 }; // jbe rel32
  return undefined;
}

/**
 * Offsets (from the function's first byte) of the direct calls to `target` in one whole function
 * (`code`, at virtual address `vaddr`); undefined when the code does not decode. Calls through a
 * pointer call nothing known and are not listed. x86-64: CALL rel32; arm64: BL.
 */
export function directCallsTo(code: Uint8Array, vaddr: number, target: number, arch: "x86_64" | "aarch64"): number[] | undefined {
  return directCalls(code, vaddr, arch)?.filter((c) => c.target === target).map((c) => c.at);
}

/** Every direct call of one whole function: its offset and its target's virtual address. */
function directCalls(code: Uint8Array, vaddr: number, arch: "x86_64" | "aarch64"): { at: number; target: number }[] | undefined {
  if (arch === "aarch64") {
    if (code.length % 4) return undefined;
    const out: { at: number; target: number }[] = [];
    const v = new DataView(code.buffer, code.byteOffset, code.byteLength);
    for (let at = 0; at < code.length; at += 4) {
      const w = v.getUint32(at, true);
      if ((w & 0xfc000000) >>> 0 !== 0x94000000) continue; // BL imm26
      const imm = ((w & 0x03ffffff) << 6) >> 6; // sign-extended words
      out.push({ at, target: vaddr + at + imm * 4 });
    }
    return out;
  }
  const flows = x86Flows(code);
  return flows?.flatMap(({ at, flow }) => (flow.kind === "call" ? [{ at, target: vaddr + flow.target }] : []));
}

/**
 * Where Go's (*Conn).Read copies its plaintext out: the one CALL of runtime.memmove in `code`
 * (the function's bytes, at `vaddr`), which is `copy(b, c.input...)` — bytes.(*Reader).Read
 * inlined — with to = b's first byte, from = the decrypted record, n = the count Read returns, in
 * the first three argument registers (AX, BX, CX / x0, x1, x2). A CALL is an instruction the
 * kernel emulates (x86-64) or simulates (arm64 BL): one probe there costs ~1 µs where one on each
 * RET is single-stepped (~10 µs a hit, bench/uprobe-site.ts). Undefined unless the shape is
 * exactly that: the code decodes, memmove is called once, and bytes.(*Reader).Read is not called
 * (not inlined: then the copy is in there, and the memmove here would be something else). The
 * kernel checks each hit too: `to` must be the b its entry recorded.
 */
export function goReadCopySite(code: Uint8Array, vaddr: number, memmove: number | undefined, readerRead: number | undefined, arch: "x86_64" | "aarch64"): number | undefined {
  if (memmove === undefined) return undefined;
  const calls = directCalls(code, vaddr, arch);
  const copies = calls?.filter((c) => c.target === memmove);
  if (copies === undefined || copies.length !== 1 || calls!.some((c) => c.target === readerRead)) return undefined;
  return copies[0]!.at;
}
