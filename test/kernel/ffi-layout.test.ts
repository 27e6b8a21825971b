/**
 * The structs libbpf-ffi.ts packs by hand (STRUCT_LAYOUT) against the headers of the libbpf
 * source the build compiles (the tarball scripts/build-libbpf.sh verified and kept in .output/src): a C
 * program generated from STRUCT_LAYOUT and C_CONSTANTS prints each sizeof/offsetof and constant,
 * and every number must match.
 * libbpf's include/uapi comes first on the include path, so perf_event_attr is its copy too.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { C_CONSTANTS, STRUCT_LAYOUT } from "../../src/kernel/libbpf-ffi.ts";

const ROOT = resolve(import.meta.dir, "../..");
// LIBBPF=(libbpf VERSION SHA256 URL-PATH) in the build script; it keeps the verified tarball in .output/src.
const LIBBPF = /^LIBBPF=\(libbpf (\S+) \S+ (\S+)\)/m.exec(readFileSync(join(ROOT, "scripts/build-libbpf.sh"), "utf8"));
const TARBALL = LIBBPF ? join(ROOT, ".output/src", LIBBPF[2]!.slice(LIBBPF[2]!.lastIndexOf("/") + 1)) : "";
const cc = Bun.which("cc");
const skip = !LIBBPF ? "cannot read the libbpf version from scripts/build-libbpf.sh"
  : !existsSync(TARBALL) ? `libbpf ${LIBBPF[1]} source ${TARBALL} missing: run bun run build first`
  : !cc ? "no C compiler (cc)" : undefined;
if (skip) console.warn(`skipping the FFI struct layout check: ${skip}`);

/** The headers of the libbpf source tarball, unpacked into a fresh directory. */
function libbpfHeaders(dir: string): string {
  const src = join(dir, "libbpf");
  mkdirSync(src);
  const r = Bun.spawnSync(["tar", "-xzf", TARBALL, "-C", src, "--strip-components=1", "--wildcards", "*/src/*.h", "*/include/*"], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`tar ${TARBALL}: ${r.stderr.toString()}`);
  return src;
}

function cProgram(): string {
  const lines = [
    "#define _GNU_SOURCE", "#include <stddef.h>", "#include <stdio.h>", "#include <unistd.h>", "#include <sys/mman.h>", "#include <sys/syscall.h>",
    "#include <linux/perf_event.h>", '#include "libbpf.h"', "int main(void) {",
  ];
  for (const [struct, fields] of Object.entries(STRUCT_LAYOUT)) {
    for (const field of Object.keys(fields)) {
      const expr = field === "$size" ? `sizeof(struct ${struct})` : `offsetof(struct ${struct}, ${field})`;
      lines.push(`  printf("${struct}.${field} %zu\\n", ${expr});`);
    }
  }
  for (const name of Object.keys(C_CONSTANTS)) lines.push(`  printf("${name} %ld\\n", (long)(${name}));`);
  lines.push("  return 0;", "}");
  return lines.join("\n");
}

describe.skipIf(!!skip)("FFI struct layouts match the libbpf headers we build from", () => {
  test("sizeof and offsetof of every hand-packed field, and the constants passed by value", () => {
    const dir = mkdtempSync(join(tmpdir(), "et-layout-"));
    const SRC = libbpfHeaders(dir);
    writeFileSync(join(dir, "layout.c"), cProgram());
    const exe = join(dir, "layout");
    const build = Bun.spawnSync([cc!, "-I", join(SRC, "include/uapi"), "-I", join(SRC, "src"), "-o", exe, join(dir, "layout.c")], { stderr: "pipe" });
    expect(build.stderr.toString()).toBe("");
    expect(build.exitCode).toBe(0);
    const out = Bun.spawnSync([exe], { stdout: "pipe" }).stdout.toString();
    const fromC: Record<string, number> = {};
    for (const line of out.trim().split("\n")) {
      const [k, v] = line.split(" ");
      fromC[k!] = Number(v);
    }
    const fromTs: Record<string, number> = {};
    for (const [struct, fields] of Object.entries(STRUCT_LAYOUT)) {
      for (const [field, v] of Object.entries(fields)) fromTs[`${struct}.${field}`] = v;
    }
    Object.assign(fromTs, C_CONSTANTS);
    rmSync(dir, { recursive: true, force: true });
    expect(fromC).toEqual(fromTs);
  });
});
