/**
 * What one uprobe hit costs the traced program, by the instruction it sits on: a loop calling a
 * function whose first instruction the kernel single-steps (`sub $0x18,%rsp`, as Debian's
 * SSL_read starts) and one whose first instruction it emulates (`push`), each without a probe,
 * with an entry uprobe and with a uretprobe (tracefs `uprobe_events`, no BPF: the mechanism's own
 * cost). Why the agent moves OpenSSL's probes to a function that starts with a push
 * (src/kernel/tls/probe-site.ts).
 *
 *   sudo bun bench/uprobe-site.ts [--calls 200000] [--rounds 3]
 */
import { appendFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { arg, median } from "./common.ts";

const CALLS = Number(arg("--calls", "200000"));
const ROUNDS = Number(arg("--rounds", "3"));
if (process.getuid?.() !== 0) {
  console.error("bench/uprobe-site.ts needs root (tracefs uprobe_events)");
  process.exit(1);
}
if (process.arch !== "x64") {
  console.error("bench/uprobe-site.ts is about x86-64's uprobe emulation");
  process.exit(1);
}
const tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].find((d) => existsSync(join(d, "uprobe_events")));
if (!tracefs) {
  console.error("no tracefs with uprobe_events");
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), "et-uprobe-site-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
// Two functions with the same work; only their first instruction differs. Hand-written so the
// compiler cannot change which one comes first.
writeFileSync(join(dir, "t.c"), `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
__asm__(".text\\n.globl f_step\\n.type f_step,@function\\nf_step:\\n sub $0x18,%rsp\\n lea 1(%rdi),%eax\\n add $0x18,%rsp\\n ret\\n.size f_step,.-f_step\\n"
        ".globl f_emul\\n.type f_emul,@function\\nf_emul:\\n push %rbx\\n lea 1(%rdi),%eax\\n pop %rbx\\n ret\\n.size f_emul,.-f_emul\\n");
int f_step(int), f_emul(int);
int main(int argc, char **argv) {
  int (*f)(int) = strcmp(argv[1], "step") == 0 ? f_step : f_emul;
  long n = atol(argv[2]);
  struct timespec a, b;
  volatile int s = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) s += f((int)i);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.1f\\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
  return 0;
}
`);
const bin = join(dir, "t");
const cc = Bun.spawnSync(["gcc", "-O2", "-o", bin, join(dir, "t.c")]);
if (cc.exitCode !== 0) {
  console.error(cc.stderr.toString());
  process.exit(1);
}

function offsetOf(sym: string): number {
  const out = Bun.spawnSync(["nm", bin]).stdout.toString();
  const m = new RegExp(`^([0-9a-f]+) T ${sym}$`, "m").exec(out);
  if (!m) throw new Error(`nm: no ${sym}`);
  return parseInt(m[1]!, 16); // a PIE's text: address = file offset
}

function nsPerCall(fn: "step" | "emul"): number {
  const r = Bun.spawnSync([bin, fn, String(CALLS)], { stdout: "pipe" });
  return Number(r.stdout.toString().trim());
}

/** Runs `fn` with a probe of `kind` (p: entry, r: return) on it, or none. */
function measure(fn: "step" | "emul", kind: "" | "p" | "r"): number {
  if (!kind) return nsPerCall(fn);
  const name = `et_bench_${fn}_${kind}`;
  appendFileSync(join(tracefs!, "uprobe_events"), `${kind}:${name} ${bin}:0x${offsetOf(`f_${fn}`).toString(16)}\n`);
  const enable = join(tracefs!, "events", "uprobes", name, "enable");
  try {
    writeFileSync(enable, "1");
    return nsPerCall(fn);
  } finally {
    writeFileSync(enable, "0");
    appendFileSync(join(tracefs!, "uprobe_events"), `-:${name}\n`);
  }
}

const rows: [string, "step" | "emul", "" | "p" | "r"][] = [
  ["sub $0x18,%rsp first (single-stepped)", "step", ""],
  ["  with an entry uprobe", "step", "p"],
  ["  with a uretprobe", "step", "r"],
  ["push %rbx first (emulated)", "emul", ""],
  ["  with an entry uprobe", "emul", "p"],
  ["  with a uretprobe", "emul", "r"],
];
const results = rows.map(() => [] as number[]);
for (let r = 0; r < ROUNDS; r++) rows.forEach(([, fn, kind], i) => results[i]!.push(measure(fn, kind)));
writeFileSync(join(tracefs, "trace"), ""); // the events the probes wrote
console.log(`${CALLS} calls per run, ${ROUNDS} rounds interleaved; median ns per call (all rounds)`);
rows.forEach(([label], i) => console.log(`${label.padEnd(40)} ${median(results[i]!).toFixed(1).padStart(9)} ns   (${results[i]!.map((x) => x.toFixed(0)).join(", ")})`));
