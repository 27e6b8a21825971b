/**
 * src/kernel/event-layout.ts must describe the structs the BPF program was compiled with: every member
 * offset and struct size in LAYOUT (and CONN_INFO) is compared with the BTF of
 * .output/tracer.bpf.o (bpftool -j btf dump file ...). The enums and #defines of bpf/include/events.h
 * (EV_*, SYS_*, CNT_*, DIR_*, ROLE_*, MODE_*, LAYER_*, CONN_F_*, sizes) are compared with the
 * TypeScript constants: from BTF when the compiler emitted them there, else from the header text,
 * with the syscall X-macro expanded from bpf/include/syscalls.def (whose order is SYSCALLS').
 * Skips, saying why, when the object or bpftool is missing.
 *
 * clang only emits BTF for types the program uses in maps, globals, function signatures or CO-RE
 * relocations; a struct used only as a stack variable (conn_event) is not in the object's BTF.
 * Such structs are checked against the BTF of bpf/include/events.h compiled on the spot with the same
 * `clang -target bpf` (the test says so), and fail only when that is impossible too.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as L from "../../src/kernel/event-layout.ts";

const ROOT = resolve(import.meta.dir, "../..");
const OBJ = resolve(ROOT, ".output/tracer.bpf.o");
const HEADER = resolve(ROOT, "bpf/include/events.h");
const SYSCALLS_DEF = resolve(ROOT, "bpf/include/syscalls.def");

function findBpftool(): string | undefined {
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"]) {
    if (dir && existsSync(`${dir}/bpftool`)) return `${dir}/bpftool`;
  }
  return undefined;
}

interface BtfMember { name: string; type_id: number; bits_offset: number; bitfield_size?: number }
interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  members?: BtfMember[];
  values?: { name: string; val: number }[];
}

const BPFTOOL = findBpftool();
const SKIP = !existsSync(OBJ)
  ? `${OBJ} is missing (bun run build)`
  : !BPFTOOL
    ? "bpftool is not installed (apt-get install bpftool)"
    : undefined;
if (SKIP) console.warn(`test/kernel/layout.test.ts: BTF checks skipped: ${SKIP}`);

function loadBtf(file: string): BtfType[] {
  const r = Bun.spawnSync([BPFTOOL!, "-j", "btf", "dump", "file", file], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`bpftool btf dump ${file} failed (${r.exitCode}): ${r.stderr.toString()}`);
  return (JSON.parse(r.stdout.toString()) as { types: BtfType[] }).types;
}

const btf: BtfType[] = SKIP ? [] : loadBtf(OBJ);

/**
 * BTF of bpf/include/events.h alone, compiled for the BPF target with a global pointer to each struct in
 * `names` so that clang emits them; undefined (with the reason) when clang is unavailable.
 */
function headerBtf(names: string[]): { types?: BtfType[]; why?: string } {
  const dir = mkdtempSync(join(tmpdir(), "et-layout-"));
  try {
    const src = join(dir, "probe.c");
    writeFileSync(src, `#include "events.h"\n${names.map((n) => `struct ${n} *btf_anchor_${n};`).join("\n")}\n`);
    const r = Bun.spawnSync(
      ["clang", "-g", "-O2", "-target", "bpf", "-I", resolve(ROOT, "bpf/include"), "-I", "/usr/include/x86_64-linux-gnu", "-c", src, "-o", join(dir, "probe.o")],
      { stdout: "pipe", stderr: "pipe" },
    );
    if (r.exitCode !== 0) return { why: `clang -target bpf failed: ${r.stderr.toString().slice(0, 500)}` };
    return { types: loadBtf(join(dir, "probe.o")) };
  } catch (e) {
    return { why: `cannot compile bpf/include/events.h: ${(e as Error).message}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const notInObject = SKIP ? [] : Object.keys(L.LAYOUT).filter((n) => !btf.some((t) => t.kind === "STRUCT" && t.name === n));
const fallback = notInObject.length ? headerBtf(notInObject) : {};
if (notInObject.length) {
  console.warn(`test/kernel/layout.test.ts: not in the BTF of .output/tracer.bpf.o (used only on the stack): ${notInObject.join(", ")}; ` +
    (fallback.types ? "checked against bpf/include/events.h compiled with clang -target bpf instead" : `and no fallback: ${fallback.why}`));
}

/** A note for mismatch messages when the object predates the header (stale build). */
function staleNote(): string {
  try {
    return statSync(OBJ).mtimeMs < statSync(HEADER).mtimeMs ? " (note: .output/tracer.bpf.o is older than bpf/include/events.h; rebuild with bun run build)" : "";
  } catch {
    return "";
  }
}

/**
 * Every difference between a LAYOUT entry and the BTF struct of the same name, one message per
 * struct field: "conn_event.fd: offset 48 in BTF, 50 in LAYOUT".
 */
export function compareStruct(name: string, layout: Record<string, number>, types: BtfType[]): string[] {
  const structs = types.filter((t) => t.kind === "STRUCT" && t.name === name);
  if (structs.length === 0) return [`${name}: no STRUCT ${name} in the BTF of the object`];
  const s = structs[0]!;
  const out: string[] = [];
  if (s.size !== layout.$size) out.push(`${name}: size ${s.size} in BTF, $size ${layout.$size} in LAYOUT`);
  const seen = new Set<string>();
  for (const m of s.members ?? []) {
    seen.add(m.name);
    if (m.bitfield_size || m.bits_offset % 8 !== 0) {
      out.push(`${name}.${m.name}: bit field at bit ${m.bits_offset} in BTF; LAYOUT can only describe whole bytes`);
      continue;
    }
    const off = m.bits_offset / 8;
    if (!(m.name in layout)) out.push(`${name}.${m.name}: at offset ${off} in BTF, missing from LAYOUT`);
    else if (layout[m.name] !== off) out.push(`${name}.${m.name}: offset ${off} in BTF, ${layout[m.name]} in LAYOUT`);
  }
  for (const k of Object.keys(layout)) {
    if (k !== "$size" && !seen.has(k)) out.push(`${name}.${k}: in LAYOUT (offset ${layout[k]}) but not a member in BTF`);
  }
  return out;
}

/**
 * The constants of every `enum { ... }` block and every numeric #define in a C header.
 * Enumerators without a value count up from the previous one; values may refer to earlier names
 * and use + - * and parentheses.
 */
export function parseHeaderConstants(text: string): Map<string, number> {
  const noComments = text.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
  const values = new Map<string, number>();
  const evaluate = (expr: string, where: string): number => {
    const js = expr.replace(/\b[A-Za-z_]\w*\b/g, (id) => {
      const v = values.get(id);
      if (v === undefined) throw new Error(`${where}: unknown name ${id} in "${expr}"`);
      return String(v);
    }).replace(/\b(0x[0-9a-fA-F]+|\d+)[uUlL]*\b/g, "$1");
    if (!/^[\d\sxa-fA-F+\-*()<|&>]*$/.test(js)) throw new Error(`${where}: cannot evaluate "${expr}"`);
    return Number(new Function(`return (${js});`)());
  };
  for (const m of noComments.matchAll(/^\s*#define\s+([A-Za-z_]\w*)\s+([^\n]+)$/gm)) {
    const body = m[2]!.trim();
    if (/^[\w\s+\-*()]+$/.test(body) && !/^[A-Za-z_]\w*$/.test(body)) {
      try {
        values.set(m[1]!, evaluate(body, `#define ${m[1]}`));
      } catch {
        /* not a numeric constant */
      }
    }
  }
  for (const block of noComments.matchAll(/\benum\s*(?:[A-Za-z_]\w*\s*)?\{([^}]*)\}/g)) {
    let next = 0;
    for (const item of block[1]!.split(",")) {
      const t = item.trim();
      if (!t) continue;
      const eq = /^([A-Za-z_]\w*)\s*(?:=\s*(.+))?$/s.exec(t);
      if (!eq) throw new Error(`enum item not understood: "${t}"`);
      const v = eq[2] !== undefined ? evaluate(eq[2].trim(), eq[1]!) : next;
      values.set(eq[1]!, v);
      next = v + 1;
    }
  }
  return values;
}

/** Enumerator values found in the object's BTF (named or anonymous enums). */
function btfEnumValues(types: BtfType[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of types) {
    if (t.kind !== "ENUM" && t.kind !== "ENUM64") continue;
    for (const v of t.values ?? []) out.set(v.name, Number(v.val));
  }
  return out;
}

/** Differences between a TS constant table and C constants named PREFIX + key. */
export function compareConstants(what: string, prefix: string, ts: Record<string, number>, c: Map<string, number>): string[] {
  const out: string[] = [];
  const cNames = [...c.keys()].filter((k) => k.startsWith(prefix));
  for (const [k, v] of Object.entries(ts)) {
    const cv = c.get(prefix + k);
    if (cv === undefined) out.push(`${what}: ${prefix}${k} (= ${v} in src/kernel/event-layout.ts) is not defined in C`);
    else if (cv !== v) out.push(`${what}: ${prefix}${k} is ${cv} in C, ${v} in src/kernel/event-layout.ts`);
  }
  for (const n of cNames) {
    if (!(n.slice(prefix.length) in ts)) out.push(`${what}: ${n} (= ${c.get(n)}) is missing from src/kernel/event-layout.ts`);
  }
  return out;
}

/** The ID column of every X(...) line of syscalls.def, in order. */
export function syscallIds(def: string): string[] {
  const noComments = def.replace(/\/\*[\s\S]*?\*\//g, " ");
  return [...noComments.matchAll(/^\s*X\(\s*([A-Z0-9_]+)\s*,/gm)].map((m) => m[1]!);
}

/** events.h with its `#define X(id, ...) SYS_##id, #include "syscalls.def" #undef X` block
 * replaced by the enumerators it expands to; throws when the block is not there. */
export function expandSyscallEnum(header: string, ids: string[]): string {
  const re = /#define X\(id, \.\.\.\) SYS_##id,\s*#include "syscalls\.def"\s*#undef X/;
  if (!re.test(header)) throw new Error("events.h: the SYS_* X-macro block was not found");
  return header.replace(re, ids.map((id) => `SYS_${id},`).join("\n"));
}

const sysIds = syscallIds(readFileSync(SYSCALLS_DEF, "utf8"));
const header = parseHeaderConstants(expandSyscallEnum(readFileSync(HEADER, "utf8"), sysIds));

describe("event-layout helpers", () => {
  test("compareStruct names the struct and the field of every mismatch", () => {
    const types: BtfType[] = [{
      id: 1, kind: "STRUCT", name: "s", size: 12,
      members: [{ name: "a", type_id: 2, bits_offset: 0 }, { name: "b", type_id: 2, bits_offset: 32 }, { name: "c", type_id: 2, bits_offset: 64 }],
    }];
    expect(compareStruct("s", { a: 0, b: 4, c: 8, $size: 12 }, types)).toEqual([]);
    expect(compareStruct("s", { a: 0, b: 5, d: 8, $size: 16 }, types)).toEqual([
      "s: size 12 in BTF, $size 16 in LAYOUT",
      "s.b: offset 4 in BTF, 5 in LAYOUT",
      "s.c: at offset 8 in BTF, missing from LAYOUT",
      "s.d: in LAYOUT (offset 8) but not a member in BTF",
    ]);
    expect(compareStruct("t", { $size: 1 }, types)).toEqual(["t: no STRUCT t in the BTF of the object"]);
  });

  test("syscallIds reads the X lines in order, not the comments", () => {
    expect(syscallIds("/* X(NOT, x) */\nX(READ, read, IO_BUF, DIR_RECV, -1, exit)\n  X(CLOSE, close, IO_CLOSE, DIR_RECV, -1, entry)\n")).toEqual(["READ", "CLOSE"]);
    expect(() => expandSyscallEnum("enum { SYS_A, };", ["A"])).toThrow(/X-macro/);
  });

  test("parseHeaderConstants follows implicit values and expressions", () => {
    const c = parseHeaderConstants(`#define N 4 /* four */\nenum { A = 0, B, C, D = C + N, E, /* x */ };\nenum named { X = 1 << 3 };`);
    expect(Object.fromEntries(c)).toEqual({ N: 4, A: 0, B: 1, C: 2, D: 6, E: 7, X: 8 });
  });
});

describe("bpf/include/events.h constants = src/kernel/event-layout.ts", () => {
  test("EV_* record types", () => {
    expect(compareConstants("EV", "EV_", L.EV, header)).toEqual([]);
  });

  test("syscalls.def lists the SYSCALLS ids in order; SYS_* ids are dense from 0, SYS_COUNT its length", () => {
    expect(sysIds.map((id) => id.toLowerCase())).toEqual([...L.SYSCALLS]);
    const sys = [...header.entries()].filter(([k]) => k.startsWith("SYS_") && k !== "SYS_COUNT").sort((a, b) => a[1] - b[1]);
    expect(sys.map(([, v]) => v)).toEqual(sys.map((_, i) => i)); // dense from 0
    expect(sys.map(([k]) => k.slice(4).toLowerCase())).toEqual([...L.SYSCALLS]);
    expect(header.get("SYS_COUNT")).toBe(L.SYS_COUNT);
  });

  test("every syscalls.def line has a tracepoint (and, unless entry-only, an exit) program in the object", () => {
    if (SKIP) return;
    const r = Bun.spawnSync(["llvm-objdump", "-h", OBJ], { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`llvm-objdump -h failed: ${r.stderr.toString()}`);
    const sections = r.stdout.toString();
    const def = readFileSync(SYSCALLS_DEF, "utf8").replace(/\/\*[\s\S]*?\*\//g, " ");
    const missing: string[] = [];
    for (const m of def.matchAll(/^\s*X\(\s*\w+\s*,\s*(\w+)\s*,[^)]*,\s*(exit|entry)\s*\)/gm)) {
      const want = [`tracepoint/syscalls/sys_enter_${m[1]}`, `ksyscall/${m[1]}`];
      if (m[2] === "exit") want.push(`tracepoint/syscalls/sys_exit_${m[1]}`, `kretsyscall/${m[1]}`);
      for (const w of want) if (!sections.includes(` ${w} `) && !sections.includes(` ${w}\n`)) missing.push(w);
    }
    expect(missing).toEqual([]);
  });

  test("CNT_* counter indexes", () => {
    expect(compareConstants("CNT", "CNT_", L.CNT, header)).toEqual([]);
  });

  test("DIR_*, ROLE_*, MODE_* and the size #defines", () => {
    const ts: Record<string, number> = {
      DIR_RECV: L.DIR_RECV, DIR_SEND: L.DIR_SEND, ROLE_UNKNOWN: L.ROLE_UNKNOWN, ROLE_SERVER: L.ROLE_SERVER,
      ROLE_CLIENT: L.ROLE_CLIENT, MODE_INGRESS: L.MODE_INGRESS, MODE_EGRESS: L.MODE_EGRESS, MODE_BOTH: L.MODE_BOTH,
      DATA_CHUNK: L.DATA_CHUNK, DATA_FLAG_LAST: L.DATA_FLAG_LAST, DATA_FLAG_TLS: L.DATA_FLAG_TLS, DATA_FLAG_TLS_INFERRED: L.DATA_FLAG_TLS_INFERRED, COMM_LEN: L.COMM_LEN, PATH_LEN: L.PATH_LEN, ARGS_LEN: L.ARGS_LEN,
      LAYER_SOCKET: L.LAYER_SOCKET, LAYER_TLS: L.LAYER_TLS, LAYER_COUNT: L.LAYER_COUNT, CONN_F_NOCOPY: L.CONN_F_NOCOPY, CONN_F_TLS: L.CONN_F_TLS,
    };
    expect(compareConstants("events.h", "", ts, new Map([...header].filter(([k]) => k in ts)))).toEqual([]);
    expect(header.get("DATA_EVENT_HEADER")).toBe(L.LAYOUT.data_event.data);
  });
});

describe.skipIf(!!SKIP)("LAYOUT = BTF of .output/tracer.bpf.o", () => {
  const structs = Object.entries(L.LAYOUT) as [string, Record<string, number>][];
  test.each(structs)("struct %s: member offsets and size", (name, layout) => {
    const inObject = !notInObject.includes(name);
    const types = inObject ? btf : fallback.types;
    if (!types) throw new Error(`${name}: not in the BTF of .output/tracer.bpf.o, and bpf/include/events.h could not be compiled to BTF: ${fallback.why}`);
    const diff = compareStruct(name, layout, types);
    if (diff.length) diff[0] += inObject ? staleNote() : " (BTF of bpf/include/events.h compiled with clang -target bpf)";
    expect(diff).toEqual([]);
  });

  test("struct conn_info (the conns map value user space updates): CONN_INFO", () => {
    const diff = compareStruct("conn_info", L.CONN_INFO as unknown as Record<string, number>, btf)
      .filter((d) => !d.startsWith("conn_info._pad:")); // explicit tail padding, not mirrored
    expect(diff).toEqual([]);
  });

  test("enums the compiler put into BTF agree with src/kernel/event-layout.ts", () => {
    const inBtf = btfEnumValues(btf);
    const ours = [...inBtf.keys()].filter((k) => /^(EV|SYS|CNT)_/.test(k));
    // Anonymous enums used only as constants are usually not emitted; then the header text
    // (checked above) is the source. Whatever is in BTF must match it too.
    const diff = ours.filter((k) => header.get(k) !== inBtf.get(k)).map((k) => `${k}: ${inBtf.get(k)} in BTF, ${header.get(k)} in bpf/include/events.h`);
    expect(diff).toEqual([]);
    if (ours.some((k) => k.startsWith("EV_"))) expect(compareConstants("EV (BTF)", "EV_", L.EV, inBtf)).toEqual([]);
    if (ours.some((k) => k.startsWith("CNT_"))) expect(compareConstants("CNT (BTF)", "CNT_", L.CNT, inBtf)).toEqual([]);
  });
});
