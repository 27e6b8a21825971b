#!/usr/bin/env bun
/**
 * `bun run release --base-url URL`: builds the release into dist/release/:
 *
 *   install.sh                                    the installer, with URL and the version stamped in
 *   ebpf-tracer-<version>-linux-<arch>.tar.gz     per arch (x86_64, aarch64): ebpf-tracer-<version>-linux-<arch>/
 *     ebpf-tracer, install.sh, systemd/ (unit, drop-ins), ebpf-tracer-config.yaml (the default
 *     config: install.sh --print-config), LICENSE when the project has one, licenses/ (the
 *     embedded third-party code's licences), sbom.json
 *   ebpf-tracer-<version>-linux-<arch>.tar.gz.sha256   "<hex>  <file>", what install.sh verifies
 *   ebpf-tracer-<version>.sbom.json               CycloneDX 1.5: npm packages (versions and
 *                                                 integrity from bun.lock), libbpf/libelf/zlib, the
 *                                                 Bun runtime, the BPF objects' SHA-256
 *   SHA256SUMS                                    every file above
 *
 * URL is where these files will be served from (one directory for all versions: install.sh
 * fetches <URL>/ebpf-tracer-<version>-linux-<arch>.tar.gz).
 * Options: --version V (default package.json's), --arch x86_64,aarch64 (default both),
 * --out DIR (default dist/release; emptied first). Tarballs are reproducible for the same
 * inputs (sorted, owner 0, mtime from SOURCE_DATE_EPOCH or the last commit).
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
export const ARCHES = ["x86_64", "aarch64"] as const;
type Arch = (typeof ARCHES)[number];

/** install.sh with the release's base URL and version in place of the checkout's empty ones. */
export function stampInstaller(text: string, baseUrl: string, version: string): string {
  const quote = (v: string) => {
    if (/["\\$`\n]/.test(v)) throw new Error(`cannot stamp ${JSON.stringify(v)} into install.sh`);
    return `"${v}"`;
  };
  let n = 0;
  const out = text
    .replace(/^RELEASE_BASE_URL=""$/m, () => (n++, `RELEASE_BASE_URL=${quote(baseUrl.replace(/\/+$/, ""))}`))
    .replace(/^RELEASE_VERSION=""$/m, () => (n++, `RELEASE_VERSION=${quote(version)}`));
  if (n !== 2) throw new Error('install.sh has no RELEASE_BASE_URL="" / RELEASE_VERSION="" lines to stamp');
  return out;
}

export function tarballName(version: string, arch: Arch): string {
  return `ebpf-tracer-${version}-linux-${arch}.tar.gz`;
}

interface LockPackage {
  name: string;
  version: string;
  integrity?: string;
  dependencies: string[];
}

/** The npm packages the binary embeds: package.json's dependencies and theirs, from bun.lock. */
export function lockedRuntimePackages(lockText: string): LockPackage[] {
  const lock = Bun.JSONC.parse(lockText) as {
    workspaces: Record<string, { dependencies?: Record<string, string> }>;
    packages: Record<string, [string, string, { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> }?, string?]>;
  };
  const out = new Map<string, LockPackage>();
  const visit = (name: string, parent?: string) => {
    // bun.lock keys nested copies as "parent/name"
    const key = parent && lock.packages[`${parent}/${name}`] ? `${parent}/${name}` : name;
    const entry = lock.packages[key];
    if (!entry) throw new Error(`bun.lock has no package ${name}`);
    const id = entry[0];
    const at = id.lastIndexOf("@");
    const pkg: LockPackage = { name: id.slice(0, at), version: id.slice(at + 1), integrity: entry[3], dependencies: Object.keys(entry[2]?.dependencies ?? {}) };
    const k = `${pkg.name}@${pkg.version}`;
    if (out.has(k)) return;
    out.set(k, pkg);
    for (const d of pkg.dependencies) visit(d, key);
  };
  for (const name of Object.keys(lock.workspaces[""]?.dependencies ?? {})) visit(name);
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name) || a.version.localeCompare(b.version));
}

function sh(cmd: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): string {
  const p = Bun.spawnSync(cmd, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdout: "pipe", stderr: "inherit" });
  if (p.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${p.exitCode})`);
  return p.stdout.toString();
}

const sha256 = (path: string) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");

function parseArgs(argv: string[]) {
  const get = (n: string) => {
    const i = argv.indexOf(n);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (!v || v.startsWith("--")) throw new Error(`${n} needs a value`);
    return v;
  };
  const baseUrl = get("--base-url");
  if (!baseUrl || !/^https?:\/\/[^\s"'$`\\]+$/.test(baseUrl)) throw new Error("--base-url https://HOST/PATH is required (where dist/release/ will be served)");
  const pkgVersion = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  const arches = (get("--arch") ?? ARCHES.join(",")).split(",").map((a) => (a === "arm64" ? "aarch64" : a));
  for (const a of arches) if (!(ARCHES as readonly string[]).includes(a)) throw new Error(`--arch: unknown architecture ${a} (x86_64, aarch64)`);
  return { baseUrl: baseUrl.replace(/\/+$/, ""), version: get("--version") ?? pkgVersion, pkgVersion, arches: arches as Arch[], out: resolve(get("--out") ?? join(ROOT, "dist", "release")) };
}

/** "libbpf 1.1.2\nelfutils 0.188\n…" (written by scripts/build-libbpf.sh) */
function nativeVersions(arch: Arch): Record<string, string> {
  const text = readFileSync(join(ROOT, ".output", arch, "libbpf.versions"), "utf8");
  return Object.fromEntries(text.trim().split("\n").map((l) => l.split(" ") as [string, string]));
}

function bpfObject(arch: Arch): string {
  return arch === process.arch.replace("x64", "x86_64").replace("arm64", "aarch64") ? join(ROOT, ".output", "tracer.bpf.o") : join(ROOT, ".output", arch, "tracer.bpf.o");
}

/** The SPDX licence an installed npm package declares (node_modules/<name>/package.json). */
function npmLicense(name: string): string | undefined {
  const f = join(ROOT, "node_modules", name, "package.json");
  if (!existsSync(f)) return undefined;
  const l = (JSON.parse(readFileSync(f, "utf8")) as { license?: unknown }).license;
  return typeof l === "string" ? l : undefined;
}

function sbom(version: string, arches: Arch[]): object {
  const npm = lockedRuntimePackages(readFileSync(join(ROOT, "bun.lock"), "utf8"));
  const bunVersion = Bun.version;
  const components: object[] = npm.map((p) => ({
    type: "library",
    name: p.name,
    version: p.version,
    purl: `pkg:npm/${p.name.replace("@", "%40")}@${p.version}`,
    ...(npmLicense(p.name) ? { licenses: [{ license: { id: npmLicense(p.name) } }] } : {}),
    ...(p.integrity ? { hashes: [{ alg: p.integrity.startsWith("sha512-") ? "SHA-512" : "SHA-1", content: Buffer.from(p.integrity.replace(/^sha\d+-/, ""), "base64").toString("hex") }] } : {}),
  }));
  const native = nativeVersions(arches[0]!);
  const debian: Record<string, string> = { libbpf: "libbpf", elfutils: "elfutils", zlib: "zlib" };
  for (const [name, v] of Object.entries(native)) {
    components.push({
      type: "library",
      name: name === "elfutils" ? "libelf (elfutils)" : name,
      version: v,
      purl: `pkg:deb/debian/${debian[name] ?? name}@${v}?arch=source`,
      description: "built from the Debian archive's source tarball, linked into the embedded libbpf.so",
    });
  }
  components.push({ type: "application", name: "bun", version: bunVersion, purl: `pkg:npm/bun@${bunVersion}`, description: "the runtime of the single-file executable" });
  for (const arch of arches) {
    components.push({ type: "file", name: `tracer.bpf.o (${arch})`, hashes: [{ alg: "SHA-256", content: sha256(bpfObject(arch)) }], description: "the CO-RE BPF object embedded in the binary" });
  }
  return {
    bomFormat: "CycloneDX",
    specVersion: "1.5",
    version: 1,
    metadata: { component: { type: "application", name: "ebpf-tracer", version } },
    components,
  };
}

function tarGz(dir: string, name: string, out: string, mtime: string): void {
  // reproducible: sorted names, fixed owner and mtime, gzip without a timestamp
  sh(["bash", "-c", `tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@${mtime} -C "$1" -cf - "$2" | gzip -n -6 > "$3"`, "tar", dir, name, out]);
}

function main(): void {
  const a = parseArgs(Bun.argv.slice(2));
  const mtime = process.env.SOURCE_DATE_EPOCH ?? (sh(["git", "log", "-1", "--format=%ct"]).trim() || "0");
  const work = join(ROOT, ".output", "release-work");
  rmSync(work, { recursive: true, force: true });
  rmSync(a.out, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  mkdirSync(a.out, { recursive: true });

  const installer = stampInstaller(readFileSync(join(ROOT, "install.sh"), "utf8"), a.baseUrl, a.version);
  writeFileSync(join(a.out, "install.sh"), installer);
  chmodSync(join(a.out, "install.sh"), 0o755);
  const defaultConfig = sh(["bash", join(ROOT, "install.sh"), "--print-config"]);

  const bins: Partial<Record<Arch, string>> = {};
  for (const arch of a.arches) {
    const bin = join(work, `ebpf-tracer-${arch}`);
    const args = ["bash", "scripts/build.sh", "--arch", arch, "--out", bin];
    if (a.version !== a.pkgVersion) args.push("--version", a.version);
    sh(args);
    bins[arch] = bin;
  }
  const bom = sbom(a.version, a.arches);
  const bomName = `ebpf-tracer-${a.version}.sbom.json`;
  writeFileSync(join(a.out, bomName), JSON.stringify(bom, null, 2) + "\n");

  // licence texts of the embedded third-party code, from the sources the build used
  const lic = join(work, "licenses");
  mkdirSync(lic, { recursive: true });
  const src = join(ROOT, ".output", "src");
  const fromTar = (tarball: string, members: string[], prefix: string) => {
    const t = join(work, "lic-extract");
    rmSync(t, { recursive: true, force: true });
    mkdirSync(t);
    sh(["tar", "-xf", join(src, tarball), "-C", t, "--strip-components=1", ...members.map((m) => `*/${m}`)], { env: { TAR_OPTIONS: "--wildcards" } });
    for (const m of members) copyFileSync(join(t, m), join(lic, `${prefix}-${m}`));
  };
  const nv = nativeVersions(a.arches[0]!);
  fromTar(`libbpf_${nv.libbpf}.orig.tar.gz`, ["LICENSE", "LICENSE.BSD-2-Clause", "LICENSE.LGPL-2.1"], "libbpf");
  fromTar(`elfutils_${nv.elfutils}.orig.tar.bz2`, ["COPYING-LGPLV3", "COPYING-GPLV2", "COPYING"], "elfutils");
  fromTar(`zlib_${nv.zlib}.orig.tar.bz2`, ["LICENSE"], "zlib");
  for (const p of lockedRuntimePackages(readFileSync(join(ROOT, "bun.lock"), "utf8"))) {
    const dir = join(ROOT, "node_modules", p.name);
    const f = existsSync(dir) ? readdirSync(dir).find((n) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(n)) : undefined;
    const out = join(lic, `npm-${p.name.replace("/", "__")}-${f ?? "LICENSE"}`);
    if (f) copyFileSync(join(dir, f), out);
    else if (npmLicense(p.name)) writeFileSync(out, `${p.name} ${p.version}: its package.json declares the licence ${npmLicense(p.name)}; the package ships no licence file.\n`);
    else throw new Error(`node_modules/${p.name} has neither a licence file nor a declared licence`);
  }

  const sums: string[] = [];
  for (const arch of a.arches) {
    const name = `ebpf-tracer-${a.version}-linux-${arch}`;
    const d = join(work, "tar", name);
    mkdirSync(join(d, "systemd"), { recursive: true });
    copyFileSync(bins[arch]!, join(d, "ebpf-tracer"));
    chmodSync(join(d, "ebpf-tracer"), 0o755);
    writeFileSync(join(d, "install.sh"), installer);
    chmodSync(join(d, "install.sh"), 0o755);
    for (const f of readdirSync(join(ROOT, "systemd"))) copyFileSync(join(ROOT, "systemd", f), join(d, "systemd", f));
    writeFileSync(join(d, "ebpf-tracer-config.yaml"), defaultConfig);
    if (existsSync(join(ROOT, "LICENSE"))) copyFileSync(join(ROOT, "LICENSE"), join(d, "LICENSE"));
    else console.warn("release: the project has no LICENSE file; the tarball carries only third-party licences");
    sh(["cp", "-r", lic, join(d, "licenses")]);
    writeFileSync(join(d, "sbom.json"), JSON.stringify(bom, null, 2) + "\n");
    const tgz = join(a.out, tarballName(a.version, arch));
    tarGz(join(work, "tar"), name, tgz, mtime);
    const line = `${sha256(tgz)}  ${basename(tgz)}`;
    writeFileSync(`${tgz}.sha256`, line + "\n");
    sums.push(line);
  }
  for (const f of ["install.sh", bomName]) sums.push(`${sha256(join(a.out, f))}  ${f}`);
  writeFileSync(join(a.out, "SHA256SUMS"), sums.sort((x, y) => x.slice(66).localeCompare(y.slice(66))).join("\n") + "\n");
  rmSync(work, { recursive: true, force: true });
  console.log(`release ${a.version} for ${a.arches.join(", ")} in ${a.out} (base URL ${a.baseUrl}):`);
  for (const f of readdirSync(a.out).sort()) console.log(`  ${f}`);
}

if (import.meta.main) {
  try {
    main();
  } catch (e) {
    console.error(`release: ${(e as Error).message}`);
    process.exit(1);
  }
}
