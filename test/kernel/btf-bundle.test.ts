/**
 * The bundled-BTF pipeline: gen-btf-bundle.ts (index module + embedding in a compiled binary),
 * materialization for libbpf, and gen-min-btf.sh (min_core_btf + staleness check) run in a
 * scratch copy of the repository layout.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { renderBundle, scanBundle } from "../../scripts/gen-btf-bundle.ts";
import { BundleError, bundleFromMap, embeddedBundle, materializeBundled } from "../../src/kernel/btf/bundle.ts";
import { btfhubArch } from "../../src/kernel/btf/locate.ts";

const REPO = join(import.meta.dir, "../..");
const KY = join(import.meta.dir, "../fixtures/btf/kyanos/custom-archive");
const U2004 = join(KY, "ubuntu/20.04/x86_64/5.4.0-26-generic.btf");
const C7 = join(KY, "centos/7/x86_64/3.10.0-957.el7.x86_64.btf");
const tmp = mkdtempSync(join(tmpdir(), "btf-bundle-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A scratch root with btf/<key> copies of the given fixture files. */
function scratch(files: Record<string, string | Uint8Array>): string {
  const root = join(tmp, `root${n++}`);
  for (const [key, src] of Object.entries(files)) {
    mkdirSync(join(root, "btf", key, ".."), { recursive: true });
    writeFileSync(join(root, "btf", key), typeof src === "string" ? readFileSync(src) : src);
  }
  mkdirSync(join(root, "src"), { recursive: true });
  return root;
}

function run(cmd: string[], env: Record<string, string> = {}, cwd = REPO) {
  const r = Bun.spawnSync(cmd, { cwd, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("gen-btf-bundle.ts", () => {
  test("scans valid files in BTFHub layout, sorted", () => {
    const root = scratch({ "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": U2004, "centos/7/x86_64/3.10.0-957.el7.x86_64.btf": C7 });
    expect(scanBundle(root)).toEqual(["centos/7/x86_64/3.10.0-957.el7.x86_64.btf", "ubuntu/20.04/x86_64/5.4.0-26-generic.btf"]);
    expect(scanBundle(join(tmp, "no-such-root"))).toEqual([]);
  });

  test("refuses misplaced and invalid files, naming each", () => {
    const root = scratch({ "ubuntu/x86_64/a.btf": U2004, "ubuntu/20.04/s390x/b.btf": U2004, "debian/12/x86_64/c.btf": new Uint8Array(40) });
    let msg = "";
    try { scanBundle(root); } catch (e) { msg = (e as Error).message; }
    expect(msg.split("\n").sort()).toEqual([
      "btf/debian/12/x86_64/c.btf: invalid BTF: bad magic 0x0000 (want 0xeb9f)",
      "btf/ubuntu/20.04/s390x/b.btf: not at <id>/<version>/<x86_64|arm64>/<release>.btf",
      "btf/ubuntu/x86_64/a.btf: not at <id>/<version>/<x86_64|arm64>/<release>.btf",
    ]);
  });

  test("renders one file import per key plus the map; empty bundle renders an empty map", () => {
    const text = renderBundle(["a/1/x86_64/r.btf"], "/r", "/r/src/btf-bundle.generated.ts");
    expect(text).toContain('import f0 from "../btf/a/1/x86_64/r.btf" with { type: "file" };');
    expect(text).toContain('"a/1/x86_64/r.btf": f0 as string,');
    expect(renderBundle([], "/r", "/r/src/x.ts")).toContain("export const BUNDLED_BTF: Readonly<Record<string, string>> = {};");
  });

  test("--check fails on a stale module and passes once regenerated", () => {
    const root = scratch({ "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": U2004 });
    const out = join(root, "src/gen.ts");
    const script = join(REPO, "scripts/gen-btf-bundle.ts");
    expect(run(["bun", script, "--root", root, "--out", out, "--check"]).code).toBe(1);
    expect(run(["bun", script, "--root", root, "--out", out]).code).toBe(0);
    expect(run(["bun", script, "--root", root, "--out", out, "--check"]).code).toBe(0);
  });

  test("the committed src/kernel/btf/bundle.generated.ts matches btf/", () => {
    const r = run(["bun", "scripts/gen-btf-bundle.ts", "--check"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(embeddedBundle.keys()).toEqual(scanBundle(REPO));
  });

  test("bundled files are embedded in a `bun build --compile` binary", async () => {
    const root = scratch({ "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": U2004, "centos/7/x86_64/3.10.0-957.el7.x86_64.btf": C7 });
    const gen = join(root, "src/btf-bundle.generated.ts");
    writeFileSync(gen, renderBundle(scanBundle(root), root, gen));
    writeFileSync(join(root, "src/main.ts"), [
      'import { BUNDLED_BTF } from "./btf-bundle.generated.ts";',
      "const out: Record<string, string> = {};",
      "for (const [k, p] of Object.entries(BUNDLED_BTF)) out[k] = `${p.startsWith(\"/$bunfs/\")} ${new Bun.CryptoHasher(\"sha256\").update(await Bun.file(p).bytes()).digest(\"hex\")}`;",
      "console.log(JSON.stringify(out));",
    ].join("\n"));
    const bin = join(root, "probe");
    const b = run(["bun", "build", "--compile", join(root, "src/main.ts"), "--outfile", bin]);
    expect(b.code).toBe(0);
    rmSync(join(root, "btf"), { recursive: true }); // the binary must not need the sources
    const r = run([bin], {}, tmp);
    expect(r.code).toBe(0);
    const sha = (p: string) => new Bun.CryptoHasher("sha256").update(readFileSync(p)).digest("hex");
    expect(JSON.parse(r.out)).toEqual({
      "centos/7/x86_64/3.10.0-957.el7.x86_64.btf": `true ${sha(C7)}`,
      "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": `true ${sha(U2004)}`,
    });
  }, 60_000);
});

describe.skipIf(Bun.which("xz") === null)("inside a compiled binary", () => {
  test("the chain resolves from the embedded bundle and decodes xz without host tools", async () => {
    const keys = embeddedBundle.keys();
    if (keys.length === 0) return; // nothing bundled yet
    const [id, ver, a, file] = keys[0]!.split("/") as [string, string, string, string];
    const dir = join(tmp, "compiled");
    mkdirSync(dir, { recursive: true });
    const entry = join(dir, "main.ts");
    writeFileSync(entry, [
      `import { resolveBtf } from ${JSON.stringify(join(REPO, "src/kernel/btf/resolve.ts"))};`,
      `import { xzDecompress } from ${JSON.stringify(join(REPO, "src/kernel/btf/tar-xz.ts"))};`,
      `import { Logger } from ${JSON.stringify(join(REPO, "src/log/log.ts"))};`,
      "const quiet = new Logger(\"error\", { write() {} });",
      "const r = await resolveBtf({ path: \"\", download_url: \"\", download_storage_path: process.argv[2]!, download_timeout: 1000 }, {",
      `  release: ${JSON.stringify(file.replace(/\.btf$/, ""))}, arch: ${JSON.stringify(a)},`,
      `  osRelease: { id: ${JSON.stringify(id)}, versionId: ${JSON.stringify(ver)}, prettyName: "t", versionCodename: "", ubuntuCodename: "", idLike: [] },`,
      "  exists: () => false, logger: quiet, logSystemInfo: async () => {}, runtimeDirs: [],",
      "});",
      "const xz = await xzDecompress(new Uint8Array(await Bun.file(process.argv[3]!).arrayBuffer()));",
      "console.log(JSON.stringify({ source: r.source, path: r.path, xz: new TextDecoder().decode(xz) }));",
    ].join("\n"));
    const xzFile = join(dir, "hello.xz");
    writeFileSync(xzFile, Bun.spawnSync(["xz", "-c"], { stdin: new TextEncoder().encode("hello from xz") }).stdout);
    const bin = join(dir, "agent-probe");
    expect(run(["bun", "build", "--compile", entry, "--outfile", bin]).code).toBe(0);
    const store = join(dir, "store");
    const r = run([bin, store, xzFile], { PATH: "/nonexistent" }, dir); // no host xz/tar reachable
    expect(r.err).toBe("");
    const out = JSON.parse(r.out);
    expect(out).toEqual({ source: "bundled", path: join(store, "bundled", keys[0]!), xz: "hello from xz" });
    expect(readFileSync(out.path)).toEqual(readFileSync(join(REPO, "btf", keys[0]!)));
  }, 60_000);
});

describe("materializeBundled", () => {
  const key = "ubuntu/20.04/x86_64/5.4.0-26-generic.btf";

  test("validates, writes <dir>/bundled/<key>, and leaves an identical file alone", async () => {
    const dir = join(tmp, "mat1");
    const b = bundleFromMap({ [key]: U2004 });
    const m = await materializeBundled(b, key, [dir]);
    expect(m).toEqual({ path: join(dir, "bundled", key), bytes: 3462, typeCount: 86, written: true });
    expect(readFileSync(m.path)).toEqual(readFileSync(U2004));
    expect((await materializeBundled(b, key, [dir])).written).toBe(false);
    writeFileSync(m.path, "stale");
    expect((await materializeBundled(b, key, [dir])).written).toBe(true);
  });

  test("skips unwritable directories", async () => {
    const file = join(tmp, "plain-file");
    writeFileSync(file, "x");
    const dir = join(tmp, "mat2");
    const m = await materializeBundled(bundleFromMap({ [key]: U2004 }), key, [join(file, "sub"), dir]);
    expect(m.path).toBe(join(dir, "bundled", key));
  });

  test("refuses invalid bundled bytes", async () => {
    const junk = join(tmp, "junk.btf");
    writeFileSync(junk, new Uint8Array(100));
    await expect(materializeBundled(bundleFromMap({ [key]: junk }), key, [join(tmp, "mat3")])).rejects.toThrow(BundleError);
    expect(existsSync(join(tmp, "mat3", "bundled", key))).toBe(false);
  });

  test("the real embedded bundle materializes", async () => {
    for (const k of embeddedBundle.keys()) {
      const m = await materializeBundled(embeddedBundle, k, [join(tmp, "mat4")]);
      expect(m.typeCount).toBeGreaterThan(0);
    }
  });
});

const arch = btfhubArch(process.arch);
const canBuildBpf = Bun.which("clang") !== null && Bun.which("bpftool") !== null && existsSync("/sys/kernel/btf/vmlinux") && arch !== undefined;

describe.skipIf(!canBuildBpf)("gen-min-btf.sh in a scratch repository", () => {
  /** A tiny CO-RE object: reads task_struct fields through preserve_access_index. */
  function bpfObject(name: string, fields: string[]): string {
    const c = join(tmp, `${name}.bpf.c`);
    writeFileSync(c, [
      '#define SEC(n) __attribute__((section(n), used))',
      "struct task_struct { int pid; int tgid; } __attribute__((preserve_access_index));",
      "static long (*get_task)(void) = (void *)35;",
      "static long (*read_kernel)(void *dst, unsigned int size, const void *src) = (void *)113;",
      'SEC("tp/sched/sched_switch") int probe(void *ctx) {',
      "  struct task_struct *t = (void *)get_task(); int v = 0, s = 0;",
      ...fields.map((f) => `  read_kernel(&v, sizeof(v), &t->${f}); s += v;`),
      "  return s;",
      "}",
      'char LICENSE[] SEC("license") = "GPL";',
    ].join("\n"));
    const o = join(tmp, `${name}.bpf.o`);
    const r = run(["clang", "-g", "-O2", "-target", "bpf", "-c", c, "-o", o]);
    if (r.code !== 0) throw new Error(r.err);
    return o;
  }

  function repoCopy(): string {
    const root = join(tmp, `repo${n++}`);
    for (const f of ["scripts/gen-min-btf.sh", "scripts/gen-btf-bundle.ts", "src/kernel/btf/validate.ts"]) {
      mkdirSync(join(root, f, ".."), { recursive: true });
      cpSync(join(REPO, f), join(root, f));
    }
    mkdirSync(join(root, "btf"), { recursive: true });
    writeFileSync(join(root, "btf/manifest.txt"), `# test\ndebian/12/${arch}/${release()} sysfs\n`);
    expect(run(["bun", join(root, "scripts/gen-btf-bundle.ts")], {}, root).code).toBe(0); // empty bundle module
    return root;
  }

  const sh = (root: string, args: string[], env: Record<string, string> = {}) => run(["bash", join(root, "scripts/gen-min-btf.sh"), ...args], env, root);
  const objVar = `OBJECT_${arch}`;

  test("--check skips clearly when the BPF object is not built", () => {
    const r = sh(repoCopy(), ["--check"]);
    expect(r.code).toBe(0);
    expect(r.err).toContain(`SKIP ${arch}: BPF object .output/tracer.bpf.o not built`);
  });

  test("generate, check OK, then stale after the object changes, and unlisted files fail", () => {
    const root = repoCopy();
    const objA = bpfObject("a", ["tgid"]);
    const gen = sh(root, [], { [objVar]: objA });
    expect(gen.code).toBe(0);
    const out = join(root, `btf/debian/12/${arch}/${release()}.btf`);
    expect(existsSync(out)).toBe(true);
    expect(readFileSync(join(root, `btf/core-relocs-${arch}.txt`), "utf8")).toBe("FIELD_BYTE_OFFSET struct task_struct.tgid\n");
    expect(readFileSync(join(root, "src/kernel/btf/bundle.generated.ts"), "utf8")).toContain(`debian/12/${arch}/${release()}.btf`);

    const ok = sh(root, ["--check"], { [objVar]: objA });
    expect(ok.err).toContain("OK: bundled BTF matches");
    expect(ok.code).toBe(0);

    const stale = sh(root, ["--check"], { [objVar]: bpfObject("b", ["tgid", "pid"]) });
    expect(stale.code).toBe(1);
    expect(stale.err).toContain(`STALE ${arch}: the object's CO-RE relocations differ`);
    expect(stale.err).toContain("+FIELD_BYTE_OFFSET struct task_struct.pid");

    // a kernel whose full BTF is not at hand: the file is not regenerated and the stamp not updated
    const manifest = join(root, "btf/manifest.txt");
    writeFileSync(manifest, readFileSync(manifest, "utf8") + `ubuntu/20.04/${arch}/9.9.9-nosource\n`);
    const stamp = readFileSync(join(root, `btf/core-relocs-${arch}.txt`), "utf8");
    const partial = sh(root, [], { [objVar]: bpfObject("c", ["pid"]) });
    expect(partial.code).toBe(1);
    expect(partial.err).toContain(`NO SOURCE for ubuntu/20.04/${arch}/9.9.9-nosource`);
    expect(readFileSync(join(root, `btf/core-relocs-${arch}.txt`), "utf8")).toBe(stamp);
    writeFileSync(manifest, readFileSync(manifest, "utf8").replace(/^ubuntu.*\n/m, ""));
    expect(sh(root, [], { [objVar]: objA }).code).toBe(0);

    cpSync(U2004, join(root, "btf/ubuntu-stray.btf"));
    const unlisted = sh(root, ["--check"], { [objVar]: objA });
    expect(unlisted.code).toBe(1);
    expect(unlisted.err).toContain("UNLISTED");
  }, 60_000);
});
