/**
 * Replays the control-flow check of older kernels' BPF verifier over `llvm-objdump -d` output, so
 * a layout that Linux 5.10 would reject is found without booting it (test/kernel/bpf-cfg.test.ts).
 */
/** `reloc`: a relocation follows the instruction (a call with one goes to another section). */
export interface Insn { code: number; src: number; off: number; imm: number; reloc?: boolean }

/** Sections of `llvm-objdump -d` (or `-dr`) output: name → instructions by slot (ld_imm64 takes
 * two), and the slots where a function symbol starts. */
export function parseObjdump(text: string): Map<string, { insns: Insn[]; functions: Map<string, number> }> {
  const out = new Map<string, { insns: Insn[]; functions: Map<string, number> }>();
  let cur: { insns: Insn[]; functions: Map<string, number> } | undefined;
  let lastInsn: Insn | undefined;
  for (const line of text.split("\n")) {
    const sec = /^Disassembly of section (.+):$/.exec(line);
    if (sec) {
      cur = { insns: [], functions: new Map() };
      out.set(sec[1]!, cur);
      continue;
    }
    const fn = /^[0-9a-f]+ <([^>]+)>:$/.exec(line);
    if (fn && cur) {
      cur.functions.set(fn[1]!, cur.insns.length);
      continue;
    }
    if (lastInsn && /^\s+[0-9a-f]+:\s+R_BPF_/.test(line)) {
      lastInsn.reloc = true;
      continue;
    }
    const ins = /^\s*(\d+):\s+((?:[0-9a-f]{2} ){7}[0-9a-f]{2}(?: (?:[0-9a-f]{2} ){7}[0-9a-f]{2})?)/.exec(line);
    if (!ins || !cur) continue;
    const b = ins[2]!.split(" ").map((h) => parseInt(h, 16));
    const at = Number(ins[1]);
    const dv = new DataView(Uint8Array.from(b.slice(0, 8)).buffer);
    cur.insns[at] = lastInsn = { code: b[0]!, src: b[1]! >> 4, off: dv.getInt16(2, true), imm: dv.getInt32(4, true) };
    if (b.length === 16) cur.insns[at + 1] = { code: 0, src: 0, off: 0, imm: 0 };
  }
  return out;
}

/**
 * check_cfg() of Linux 5.10 from `entry`, privileged: undefined when it accepts, else its
 * message. Pseudo calls into other sections (those with a relocation, parsed from `-dr`, or with
 * imm -1) are not followed: their imm counts in the target section, not this one.
 */
export function checkCfg510(insns: Insn[], entry = 0): string | undefined {
  const DISCOVERED = 0x10, EXPLORED = 0x20, FALL = 1, BRANCH = 2;
  const state = new Map<number, number>();
  const stack = [entry];
  state.set(entry, DISCOVERED);
  const st = (i: number) => state.get(i) ?? 0;
  const push = (t: number, w: number, e: number, loopOk: boolean): number | string => {
    if (e === FALL && st(t) >= (DISCOVERED | FALL)) return 0;
    if (e === BRANCH && st(t) >= (DISCOVERED | BRANCH)) return 0;
    if (w < 0 || !insns[w]) return `jump out of range from insn ${t} to ${w}`;
    if (st(w) === 0) {
      state.set(t, DISCOVERED | e);
      state.set(w, DISCOVERED);
      stack.push(w);
      return 1;
    }
    if ((st(w) & 0xf0) === DISCOVERED) return loopOk ? 0 : `back-edge from insn ${t} to ${w}`;
    state.set(t, DISCOVERED | e);
    return 0;
  };
  while (stack.length) {
    const t = stack[stack.length - 1]!;
    const i = insns[t];
    if (!i) return `no instruction at ${t}`;
    const cls = i.code & 7, op = i.code & 0xf0;
    let r: number | string = 0;
    if (cls === 5 || cls === 6) {
      if (op === 0x90) r = 0; // exit
      else if (op === 0x80) { // call
        r = push(t, t + 1, FALL, false);
        if (r === 0 && i.src === 1 && !i.reloc && insns[t + i.imm + 1] && i.imm !== -1) r = push(t, t + i.imm + 1, BRANCH, false);
      } else if (op === 0x00) r = push(t, t + i.off + 1, FALL, true); // ja
      else {
        r = push(t, t + 1, FALL, true);
        if (r === 0) r = push(t, t + i.off + 1, BRANCH, true);
      }
    } else {
      r = push(t, t + 1, FALL, false);
    }
    if (typeof r === "string") return r;
    if (r === 1) continue;
    state.set(t, EXPLORED);
    stack.pop();
  }
  return undefined;
}

/**
 * The stack each program needs as the verifier of 5.10 counts it (check_max_stack_depth): its
 * own frame plus the frames of the deepest chain of BPF-to-BPF calls it makes, each frame (the
 * deepest offset below r10 its instructions use) rounded up to 32 bytes. Input: `llvm-objdump
 * -dr` of the object (a call into .text carries a relocation against .text: its target is
 * instruction imm + 1 there; a call without one is relative to the next instruction). Keys:
 * "<section> <function>": the programs, and ".text <function>" for the subprograms.
 */
export function stackChains(objdumpText: string): Map<string, { frame: number; total: number; chain: string[] }> {
  interface Fn { name: string; start: number; frame: number; calls: { at: number; imm: number; reloc: boolean }[] }
  const fns: Fn[] = [];
  let section = "";
  let cur: Fn | undefined;
  let pendingCall: { at: number; imm: number; reloc: boolean } | undefined;
  for (const line of objdumpText.split("\n")) {
    const sec = /^Disassembly of section (.+):$/.exec(line);
    if (sec) {
      section = sec[1]!;
      cur = undefined;
      continue;
    }
    const fn = /^([0-9a-f]+) <([^>]+)>:$/.exec(line);
    if (fn) {
      // clang's basic-block labels (LBB…) are not functions; a section may hold several programs
      if (!fn[2]!.startsWith("LBB")) {
        cur = { name: `${section} ${fn[2]}`, start: parseInt(fn[1]!, 16) / 8, frame: 0, calls: [] };
        fns.push(cur);
      }
      continue;
    }
    if (!cur) continue;
    if (pendingCall && /R_BPF_64_32\s+\.text/.test(line)) pendingCall.reloc = true;
    // a BPF-to-BPF call: opcode 0x85 with src_reg 1 (BPF_PSEUDO_CALL); helpers have src_reg 0
    const call = /^\s*(\d+):\s+85 1[0-9a-f] .*\bcall (-?\d+)$/.exec(line);
    if (call) {
      pendingCall = { at: Number(call[1]), imm: Number(call[2]), reloc: false };
      cur.calls.push(pendingCall);
    } else if (/^\s*\d+:/.test(line)) {
      pendingCall = undefined;
    }
    for (const m of line.matchAll(/r10 - (\d+)/g)) cur.frame = Math.max(cur.frame, Number(m[1]));
  }
  const text = fns.filter((f) => f.name.startsWith(".text ")).sort((x, y) => x.start - y.start);
  const textFnAt = (insn: number): Fn | undefined => {
    let found: Fn | undefined;
    for (const f of text) if (f.start <= insn) found = f;
    return found;
  };
  const round = (n: number) => Math.ceil(Math.max(n, 1) / 32) * 32;
  const memo = new Map<Fn, { total: number; chain: string[] }>();
  const depth = (f: Fn, seen: Set<Fn>): { total: number; chain: string[] } => {
    const m = memo.get(f);
    if (m) return m;
    let best = { total: 0, chain: [] as string[] };
    for (const c of f.calls) {
      const callee = c.reloc ? textFnAt(c.imm + 1) : f.name.startsWith(".text ") ? textFnAt(c.at + c.imm + 1) : undefined;
      if (!callee || seen.has(callee)) continue;
      const d = depth(callee, new Set([...seen, callee]));
      if (d.total > best.total) best = d;
    }
    const r = { total: round(f.frame) + best.total, chain: [f.name, ...best.chain] };
    memo.set(f, r);
    return r;
  };
  return new Map(fns.map((f) => {
    const d = depth(f, new Set([f]));
    return [f.name, { frame: f.frame, total: d.total, chain: d.chain }];
  }));
}
