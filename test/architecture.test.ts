/**
 * The folders of src/ are the data path (kernel → stream → protocols → spans → export) with
 * selection, config, log and cli beside it. This test keeps the dependency directions true:
 * each rule names a folder and the folders it must not import. It reads import specifiers from
 * the source text, so it also catches type-only imports.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "../src");

function sourceFiles(): string[] {
  return [...new Bun.Glob("**/*.ts").scanSync({ cwd: SRC })].sort();
}

/** Import targets of one file: paths relative to src/ for relative imports, bare names otherwise. */
export function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^"'`;]*?\bfrom\s*["']([^"']+)["']|\bimport\s*\(\s*["']([^"']+)["']\s*\)|(?:^|\n)\s*import\s*["']([^"']+)["']/g)) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    out.push(spec.startsWith(".") ? relative(SRC, resolve(dirname(join(SRC, file)), spec)) : spec);
  }
  return out;
}

/** folder (prefix of a path under src/) → prefixes it must not import. */
const FORBIDDEN: Record<string, string[]> = {
  "protocols/": ["kernel/", "stream/", "spans/builder", "export/", "agent/", "cli/", "selection/", "config/"],
  "stream/": ["export/", "agent/", "cli/", "spans/", "selection/", "config/", "kernel/libbpf-ffi", "kernel/tracer"],
  "spans/": ["export/", "agent/", "cli/", "kernel/libbpf-ffi", "kernel/tracer", "stream/connections"],
  "export/": ["kernel/", "stream/", "protocols/", "agent/", "cli/", "selection/"],
  "kernel/": ["stream/", "protocols/", "spans/", "export/", "agent/", "cli/", "selection/"],
  "selection/": ["stream/", "protocols/", "spans/", "export/", "agent/", "cli/"],
  "config/": ["kernel/", "stream/", "protocols/", "spans/", "export/", "agent/", "cli/", "selection/"],
  "log/": ["kernel/", "stream/", "protocols/", "spans/", "export/", "agent/", "cli/", "selection/"],
  "metrics/": ["kernel/", "stream/", "protocols/", "export/", "agent/", "cli/", "selection/"],
  "agent/": ["cli/"],
};

describe("import boundaries", () => {
  const files = sourceFiles();

  test("the rules cover every folder of src/", () => {
    const folders = new Set(files.filter((f) => f.includes("/")).map((f) => f.slice(0, f.indexOf("/") + 1)));
    expect([...folders].filter((d) => !(d in FORBIDDEN)).sort()).toEqual(["cli/"]);
  });

  test("no folder imports one it must not", () => {
    const bad: string[] = [];
    for (const f of files) {
      for (const [dir, banned] of Object.entries(FORBIDDEN)) {
        if (!f.startsWith(dir)) continue;
        for (const imp of importsOf(f)) if (banned.some((b) => imp.startsWith(b))) bad.push(`${f} imports ${imp}`);
      }
    }
    expect(bad).toEqual([]);
  });

  test("only kernel/libbpf-ffi.ts imports bun:ffi", () => {
    const users = files.filter((f) => importsOf(f).includes("bun:ffi"));
    expect(users).toEqual(["kernel/libbpf-ffi.ts"]);
  });

  test("the checker sees imports (it cannot pass on an empty reading)", () => {
    expect(importsOf("agent/pipeline.ts").some((i) => i.startsWith("stream/"))).toBe(true);
    expect(importsOf("kernel/libbpf-ffi.ts")).toContain("bun:ffi");
  });
});
