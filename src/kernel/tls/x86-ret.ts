/**
 * x86-64 instruction LENGTH decoder, enough for Go compiler and Go assembler output (legacy
 * prefixes, REX, VEX, EVEX, opcode maps 0F/0F38/0F3A, ModRM/SIB/displacement/immediates), and the
 * RET finder built on it.
 *
 * Why: uretprobes corrupt Go programs (goroutine stacks move and the return address trampoline is
 * copied with them), so a Go function's return is probed with plain uprobes on each of its RET
 * instructions. A 0xC3 byte can sit inside another instruction (an immediate, a displacement, a
 * ModRM byte); decoding lengths from the function entry makes every RET found an instruction
 * boundary. The decoder refuses (returns an error) rather than guess: an opcode it does not know
 * stops the walk, and the caller reports the function as not probeable.
 */

export interface RetScan {
  /** Offsets of RET (C3 / C2 iw) instructions from the function start, ascending. */
  rets: number[];
  /** Set when decoding stopped early: where and why. `rets` is then incomplete and must not be used. */
  error?: string;
  /** Number of instructions decoded. */
  count: number;
}

// Operand shapes of one opcode: does it have ModRM, and which immediate follows.
const M = 0x100; // ModRM present
const I8 = 1; // imm8
const I16 = 2; // imm16
const IZ = 3; // imm16 with 0x66, else imm32 (64-bit mode: also with REX.W)
const IV = 4; // imm16/32/64 by operand size (MOV r, imm)
const I16_8 = 5; // ENTER iw, ib
const MOFFS = 6; // 8-byte (or 4 with 0x67) address
const F6 = 7; // F6/F7: imm only when ModRM.reg is 0 or 1 (TEST)
const BAD = 0x200; // invalid in 64-bit mode or a prefix handled elsewhere

/** One-byte opcode map, 64-bit mode. */
const ONE = new Uint16Array(256);
/** 0F map. */
const TWO = new Uint16Array(256);

(function buildTables() {
  for (let op = 0; op < 0x40; op++) {
    const lo = op & 7;
    if (lo < 4) ONE[op] = M;
    else if (lo === 4) ONE[op] = I8;
    else if (lo === 5) ONE[op] = IZ;
    else ONE[op] = BAD; // push/pop seg, DAA…, and the 26/2E/36/3E prefixes
  }
  for (let op = 0x40; op < 0x60; op++) ONE[op] = op < 0x50 ? BAD : 0; // REX handled as prefix
  ONE[0x60] = ONE[0x61] = ONE[0x62] = BAD;
  ONE[0x63] = M;
  ONE[0x64] = ONE[0x65] = ONE[0x66] = ONE[0x67] = BAD;
  ONE[0x68] = IZ;
  ONE[0x69] = M | IZ;
  ONE[0x6a] = I8;
  ONE[0x6b] = M | I8;
  for (let op = 0x70; op < 0x80; op++) ONE[op] = I8;
  ONE[0x80] = M | I8;
  ONE[0x81] = M | IZ;
  ONE[0x82] = BAD;
  ONE[0x83] = M | I8;
  for (let op = 0x84; op < 0x90; op++) ONE[op] = M;
  ONE[0x9a] = BAD;
  ONE[0xa0] = ONE[0xa1] = ONE[0xa2] = ONE[0xa3] = MOFFS;
  ONE[0xa8] = I8;
  ONE[0xa9] = IZ;
  for (let op = 0xb0; op < 0xb8; op++) ONE[op] = I8;
  for (let op = 0xb8; op < 0xc0; op++) ONE[op] = IV;
  ONE[0xc0] = ONE[0xc1] = M | I8;
  ONE[0xc2] = I16;
  ONE[0xc4] = ONE[0xc5] = BAD; // VEX, handled before the table
  ONE[0xc6] = M | I8;
  ONE[0xc7] = M | IZ;
  ONE[0xc8] = I16_8;
  ONE[0xca] = I16;
  ONE[0xcd] = I8;
  ONE[0xce] = BAD;
  for (let op = 0xd0; op < 0xd4; op++) ONE[op] = M;
  ONE[0xd4] = ONE[0xd5] = ONE[0xd6] = BAD;
  for (let op = 0xd8; op < 0xe0; op++) ONE[op] = M;
  for (let op = 0xe0; op < 0xe8; op++) ONE[op] = I8;
  ONE[0xe8] = ONE[0xe9] = IZ; // rel32 (0x66 is ignored for near branches in 64-bit mode; handled below)
  ONE[0xea] = BAD;
  ONE[0xeb] = I8;
  ONE[0xf0] = ONE[0xf2] = ONE[0xf3] = BAD;
  ONE[0xf6] = ONE[0xf7] = M | F6;
  ONE[0xfe] = ONE[0xff] = M;

  // 0F map: ModRM is the rule; list the exceptions.
  for (let op = 0; op < 256; op++) TWO[op] = M;
  for (const op of [0x04, 0x0a, 0x0c, 0x24, 0x25, 0x26, 0x27, 0x36, 0x39, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x7a, 0x7b]) TWO[op] = BAD;
  for (const op of [0x05, 0x06, 0x07, 0x08, 0x09, 0x0b, 0x0e, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x37, 0x77, 0xa0, 0xa1, 0xa2, 0xa8, 0xa9, 0xaa]) TWO[op] = 0;
  for (let op = 0xc8; op < 0xd0; op++) TWO[op] = 0; // BSWAP
  for (let op = 0x80; op < 0x90; op++) TWO[op] = IZ; // Jcc rel32
  for (const op of [0x70, 0x71, 0x72, 0x73, 0xa4, 0xac, 0xba, 0xc2, 0xc4, 0xc5, 0xc6]) TWO[op] = M | I8;
  TWO[0x0f] = M | I8; // 3DNow!: the "immediate" is the opcode suffix
  TWO[0x38] = TWO[0x3a] = BAD; // three-byte escapes, handled before the table
})();

/** VEX/EVEX map 1 (0F) opcodes that take an imm8. */
function vexMap1Imm(op: number): boolean {
  return (op >= 0x70 && op <= 0x73) || op === 0xc2 || op === 0xc4 || op === 0xc5 || op === 0xc6;
}

/**
 * Length of the instruction at `off`, or a negative number when the bytes are truncated (-1) or
 * not an instruction this decoder knows (-2).
 */
export function x86InstructionLength(code: Uint8Array, off: number): number {
  const end = code.length;
  let p = off;
  let opsize16 = false;
  let addr32 = false;
  let rexW = false;
  // Legacy prefixes and REX (at most 15 bytes in all).
  for (;;) {
    if (p >= end) return -1;
    if (p - off >= 14) return -2;
    const b = code[p]!;
    if (b === 0x66) opsize16 = true;
    else if (b === 0x67) addr32 = true;
    else if (b === 0xf0 || b === 0xf2 || b === 0xf3 || b === 0x2e || b === 0x36 || b === 0x3e || b === 0x26 || b === 0x64 || b === 0x65) {
      /* no effect on length */
    } else if (b >= 0x40 && b <= 0x4f) {
      rexW = (b & 8) !== 0; // a REX followed by another prefix is ignored by the CPU; the last one counts
    } else break;
    p++;
  }
  const op = code[p++]!;
  let shape: number;
  if (op === 0xc4 || op === 0xc5 || op === 0x62) {
    // VEX (C4 3-byte, C5 2-byte) and EVEX (62): always these in 64-bit mode.
    let map: number;
    if (op === 0xc5) {
      if (p + 1 > end) return -1;
      map = 1;
      p += 1;
    } else if (op === 0xc4) {
      if (p + 2 > end) return -1;
      map = code[p]! & 0x1f;
      p += 2;
    } else {
      if (p + 3 > end) return -1;
      map = code[p]! & 0x07;
      if ((code[p + 1]! & 0x04) === 0) return -2; // EVEX P1 bit 2 is fixed 1
      p += 3;
    }
    if (p >= end) return -1;
    const vop = code[p++]!;
    if (map === 1) shape = M | (vexMap1Imm(vop) ? I8 : 0);
    else if (map === 2) shape = M;
    else if (map === 3) shape = M | I8;
    else if (op === 0x62 && (map === 5 || map === 6)) shape = M; // AVX512-FP16 maps
    else return -2;
    if (op === 0xc5 || op === 0xc4) {
      // VEX without ModRM: VZEROUPPER/VZEROALL (map 1, 0x77).
      if (map === 1 && vop === 0x77) shape = 0;
    }
  } else if (op === 0x0f) {
    if (p >= end) return -1;
    const op2 = code[p++]!;
    if (op2 === 0x38) {
      if (p >= end) return -1;
      p++;
      shape = M;
    } else if (op2 === 0x3a) {
      if (p >= end) return -1;
      p++;
      shape = M | I8;
    } else shape = TWO[op2]!;
  } else {
    shape = ONE[op]!;
  }
  if (shape & BAD) return -2;

  if (shape & M) {
    if (p >= end) return -1;
    const modrm = code[p++]!;
    const mod = modrm >> 6;
    const rm = modrm & 7;
    if ((shape & 0xff) === F6) shape = (shape & ~0xff) | ((modrm & 0x38) <= 0x08 ? (op === 0xf6 ? I8 : IZ) : 0);
    if (mod !== 3) {
      if (rm === 4) {
        if (p >= end) return -1;
        const sib = code[p++]!;
        if ((sib & 7) === 5 && mod === 0) p += 4;
      } else if (rm === 5 && mod === 0) p += 4; // RIP-relative
      if (mod === 1) p += 1;
      else if (mod === 2) p += 4;
    }
  }
  switch (shape & 0xff) {
    case I8:
      p += 1;
      break;
    case I16:
      p += 2;
      break;
    case IZ:
      // Near branches (E8, E9, 0F 8x) keep rel32 in 64-bit mode whatever 0x66 says (Intel behaviour,
      // and what assemblers emit); other opcodes take imm16 under 0x66 without REX.W.
      p += opsize16 && !rexW && op !== 0xe8 && op !== 0xe9 && op !== 0x0f ? 2 : 4;
      break;
    case IV:
      p += rexW ? 8 : opsize16 ? 2 : 4;
      break;
    case I16_8:
      p += 3;
      break;
    case MOFFS:
      p += addr32 ? 4 : 8;
      break;
  }
  if (p > end) return -1;
  if (p - off > 15) return -2;
  return p - off;
}

/**
 * Decodes `code` (one whole function) from its first byte and lists its RET instructions.
 * Trailing INT3 padding is fine; anything undecodable sets `error`.
 */
export function x86Rets(code: Uint8Array): RetScan {
  const rets: number[] = [];
  let off = 0;
  let count = 0;
  while (off < code.length) {
    const n = x86InstructionLength(code, off);
    if (n < 0) {
      const bytes = Array.from(code.subarray(off, off + 8), (b) => b.toString(16).padStart(2, "0")).join(" ");
      return { rets, count, error: `${n === -1 ? "truncated" : "unknown"} instruction at +0x${off.toString(16)} (${bytes})` };
    }
    // The opcode byte of a RET is the last byte of its prefix run (F3 C3 "rep ret" counts too).
    const last = lastOpcode(code, off, n);
    if (last === 0xc3 || last === 0xc2) rets.push(off);
    off += n;
    count++;
  }
  return { rets, count };
}

/** Where the opcode of the instruction at [off, off + n) starts, after its legacy and REX
 * prefixes (off + n when it is all prefixes). */
export function opcodeIndex(code: Uint8Array, off: number, n: number): number {
  let p = off;
  while (p < off + n) {
    const b = code[p]!;
    if (b === 0x66 || b === 0x67 || b === 0xf0 || b === 0xf2 || b === 0xf3 || (b >= 0x40 && b <= 0x4f) || b === 0x2e || b === 0x36 || b === 0x3e || b === 0x26 || b === 0x64 || b === 0x65) p++;
    else break;
  }
  return p;
}

/** The opcode byte of a one-byte-opcode instruction (after prefixes), or -1. */
function lastOpcode(code: Uint8Array, off: number, n: number): number {
  const p = opcodeIndex(code, off, n);
  if (p >= off + n) return -1;
  const op = code[p]!;
  // Only a bare opcode with nothing after it (C3) or exactly an imm16 (C2 iw) is a RET.
  if (op === 0xc3 && p === off + n - 1) return 0xc3;
  if (op === 0xc2 && p === off + n - 3) return 0xc2;
  return -1;
}

/** aarch64: RET (to x30) is the fixed word 0xd65f03c0; instructions are 4-byte aligned words. */
export const ARM64_RET = 0xd65f03c0;

export function arm64Rets(code: Uint8Array): RetScan {
  const rets: number[] = [];
  const v = new DataView(code.buffer, code.byteOffset, code.byteLength);
  const n = code.length >> 2;
  for (let i = 0; i < n; i++) if (v.getUint32(i * 4, true) === ARM64_RET) rets.push(i * 4);
  return { rets, count: n, error: code.length % 4 ? `function size ${code.length} is not a multiple of 4` : undefined };
}
