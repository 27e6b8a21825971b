/**
 * BTF files bundled inside the binary (step 2 of the BTF chain).
 *
 * At build time `scripts/gen-btf-bundle.ts` turns every `btf/<id>/<version>/<arch>/<release>.btf`
 * into a `with { type: "file" }` import in `btf-bundle.generated.ts`; `bun build --compile`
 * embeds such files and the import's value is the embedded path (under /$bunfs/). libbpf cannot
 * read /$bunfs/, so a chosen file is copied ("materialized") to a real private file first, after
 * validation, and only rewritten when its content changed.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUNDLED_BTF } from "./bundle.generated.ts";
import { BtfError, parseBtf } from "./validate.ts";
import { writeAtomic } from "./download.ts";

/** Where bundled files come from; the embedded map in production, a fake in tests. */
export interface BundleSource {
  /** relative keys in BTFHub layout, e.g. "ubuntu/20.04/x86_64/5.4.0-26-generic.btf" */
  keys(): string[];
  read(key: string): Promise<Uint8Array>;
}

/** A bundle backed by a key → file path map (what the generated module exports). */
export function bundleFromMap(map: Readonly<Record<string, string>>): BundleSource {
  return {
    keys: () => Object.keys(map).sort(),
    read: async (key) => {
      const path = map[key];
      if (path === undefined) throw new Error(`${key} is not bundled`);
      return Bun.file(path).bytes();
    },
  };
}

export const embeddedBundle: BundleSource = bundleFromMap(BUNDLED_BTF);

export class BundleError extends Error {
  override name = "BundleError";
}

export interface Materialized {
  path: string;
  bytes: number;
  typeCount: number;
  /** false when an identical file was already there */
  written: boolean;
}

/**
 * Validates bundled `key` and copies it to `<dir>/bundled/<key>` in the first directory of
 * `dirs` that accepts the write; a private mkdtemp directory is the last resort. Throws
 * BundleError when the bundled bytes are not valid BTF or nothing is writable.
 */
export async function materializeBundled(bundle: BundleSource, key: string, dirs: readonly string[]): Promise<Materialized> {
  const data = await bundle.read(key);
  let typeCount: number;
  try {
    typeCount = parseBtf(data).typeCount;
  } catch (e) {
    if (e instanceof BtfError) throw new BundleError(`bundled ${key} is not valid BTF: ${e.message}`);
    throw e;
  }
  const failures: string[] = [];
  for (const dir of [...dirs, ""]) {
    const base = dir || privateTmp(failures);
    if (!base) continue;
    const path = join(base, "bundled", key);
    if (sameContent(path, data)) return { path, bytes: data.byteLength, typeCount, written: false };
    try {
      writeAtomic(path, data);
      return { path, bytes: data.byteLength, typeCount, written: true };
    } catch (e) {
      failures.push((e as Error).message);
    }
  }
  throw new BundleError(`cannot write bundled ${key} anywhere: ${failures.join("; ")}`);
}

function sameContent(path: string, data: Uint8Array): boolean {
  try {
    const cur = readFileSync(path);
    return cur.byteLength === data.byteLength && Buffer.compare(cur, data) === 0;
  } catch {
    return false;
  }
}

/** A fresh 0700 directory: a predictable /tmp path would invite symlink games against root. */
function privateTmp(failures: string[]): string | undefined {
  try {
    return mkdtempSync(join(tmpdir(), "ebpf-tracer-btf-"));
  } catch (e) {
    failures.push(`mkdtemp: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    return undefined;
  }
}
