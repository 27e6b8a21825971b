/**
 * The BTF chain: decides which BTF libbpf gets as btf_custom_path.
 *
 *   1. btf.path (when set), then the kernel's own BTF (/sys/kernel/btf/vmlinux, vmlinux images)
 *   2. a BTF file bundled in the binary, for this OS release, arch and kernel release
 *   3. a download from btf.download_url into btf.download_storage_path (a valid cached file
 *      from an earlier start is used without downloading)
 *   4. otherwise TracerError("UNSUPPORTED") naming the kernel release, the OS and every place tried
 *
 * Logging: one info line per step ("btf: <step>: ...") saying where it looked, whether it found
 * something and why it moved on; a rejected file is a warn line. When the kernel has no BTF of
 * its own, one "system information" line is logged too (src/sysinfo.ts).
 * Every file handed out has been validated (btf-validate) except /sys/kernel/btf/vmlinux, which
 * libbpf finds itself (path undefined).
 */
import { existsSync, rmSync } from "node:fs";
import { release as osRelease } from "node:os";
import { join } from "node:path";
import type { Config } from "../../config/config.ts";
import { TracerError } from "../../errors.ts";
import { log as defaultLog, type Logger } from "../../log/log.ts";
import { btfKey, locateBtf, parseOsRelease, KERNEL_BTF_SYSFS, type BtfhubDir, type Candidate, type OsRelease } from "./locate.ts";
import { validateBtfFile, type Validation } from "./validate.ts";
import { embeddedBundle, materializeBundled, type BundleSource } from "./bundle.ts";
import { downloadBtf, expandUrl, DownloadError } from "./download.ts";
import { logSystemInfo, readOsReleaseText } from "./sysinfo.ts";

export type BtfSource = "kernel" | "path" | "bundled" | "downloaded";

export interface BtfResolution {
  source: BtfSource;
  /** file for libbpf's btf_custom_path; undefined means libbpf should use the kernel's own */
  path: string | undefined;
  /** every place looked at, in order, with its outcome ("<where>: <outcome>") */
  tried: string[];
}

/** Everything the chain reads from the host; tests replace any of it. */
export interface ResolveDeps {
  /** uname -r */
  release?: string;
  /** uname -m or process.arch */
  arch?: string;
  osRelease?: OsRelease;
  exists?: (path: string) => boolean;
  validateFile?: (path: string) => Validation;
  bundle?: BundleSource;
  /** PEM CA for the download (tests); production trusts the system CAs */
  ca?: string | Buffer;
  /** proxy variables; default process.env */
  env?: Record<string, string | undefined>;
  logger?: Logger;
  /** logs the one "system information" line; default src/sysinfo.ts */
  logSystemInfo?: (logger: Logger) => Promise<unknown>;
  /** extra directories for materializing a bundled file after download_storage_path */
  runtimeDirs?: string[];
}

/** At most this many BTFHub directories are tried over the network (404s are cheap, timeouts not). */
const MAX_DOWNLOAD_TRIES = 4;

export async function resolveBtf(cfg: Config["btf"], deps: ResolveDeps = {}): Promise<BtfResolution> {
  const ctx = context(cfg, deps);
  ctx.logger.info("btf: resolving", {
    release: ctx.release, os: ctx.os.prettyName, os_id: ctx.os.id, version_id: ctx.os.versionId, arch: ctx.arch,
  });
  const loc = locateBtf({
    release: ctx.release, os: ctx.os, arch: ctx.arch, exists: ctx.exists,
    bundled: ctx.bundle.keys(), configuredPath: cfg.path,
  });
  const files = loc.candidates.filter((c) => c.source !== "bundled");
  const local = fromFiles(ctx, files.filter((c) => c.source === "path"), "configured path")
    ?? fromFiles(ctx, files.filter((c) => c.source === "kernel"), "kernel");
  if (local) return local;
  await ctx.logSysInfo(ctx.logger).catch(() => undefined);
  const bundled = await fromBundle(ctx, loc.candidates.filter((c) => c.source === "bundled"), loc.arch);
  if (bundled) return bundled;
  const downloaded = await fromDownload(ctx, loc.downloadDirs, loc.arch);
  if (downloaded) return downloaded;
  return fail(ctx, loc.arch);
}

interface Ctx {
  cfg: Config["btf"];
  release: string;
  arch: string;
  os: OsRelease;
  exists: (p: string) => boolean;
  validate: (p: string) => Validation;
  bundle: BundleSource;
  logger: Logger;
  logSysInfo: (l: Logger) => Promise<unknown>;
  deps: ResolveDeps;
  tried: string[];
}

function context(cfg: Config["btf"], deps: ResolveDeps): Ctx {
  return {
    cfg,
    release: deps.release ?? osRelease(),
    arch: deps.arch ?? process.arch,
    os: deps.osRelease ?? parseOsRelease(readOsReleaseText()),
    exists: deps.exists ?? existsSync,
    validate: deps.validateFile ?? validateBtfFile,
    bundle: deps.bundle ?? embeddedBundle,
    logger: deps.logger ?? defaultLog,
    logSysInfo: deps.logSystemInfo ?? ((l) => logSystemInfo(l)),
    deps,
    tried: [],
  };
}

/** Step 1: the first existing file that validates. /sys/kernel/btf/vmlinux is trusted as is. */
function fromFiles(ctx: Ctx, cands: Candidate[], step: string): BtfResolution | undefined {
  if (cands.length === 0) return undefined;
  for (const c of cands) {
    if (!c.found) { ctx.tried.push(`${c.path}: not found`); continue; }
    if (c.path === KERNEL_BTF_SYSFS) {
      ctx.tried.push(`${c.path}: found`);
      ctx.logger.info(`btf: ${step}: found ${c.path}; libbpf will use the kernel's own BTF`, { looked: ctx.tried.slice() });
      return { source: "kernel", path: undefined, tried: ctx.tried };
    }
    const v = ctx.validate(c.path);
    if (v.ok) {
      ctx.tried.push(`${c.path}: found`);
      ctx.logger.info(`btf: ${step}: using ${c.path} (${c.why}, ${v.typeCount} types)`, { looked: ctx.tried.slice() });
      return { source: c.source === "path" ? "path" : "kernel", path: c.path, tried: ctx.tried };
    }
    ctx.tried.push(`${c.path}: rejected (${v.reason})`);
    ctx.logger.warn(`btf: ${step}: ignoring ${c.path}: ${v.reason}`, { why: c.why });
  }
  ctx.logger.info(`btf: ${step}: no usable BTF`, { looked: cands.map((c) => c.path) });
  return undefined;
}

/** Step 2: a bundled file for this OS/arch/release, validated and copied to a real path for libbpf. */
async function fromBundle(ctx: Ctx, cands: Candidate[], arch: string | undefined): Promise<BtfResolution | undefined> {
  if (!arch) {
    ctx.tried.push(`bundled: none for architecture ${ctx.arch}`);
    ctx.logger.info(`btf: bundled: no BTFHub architecture for ${ctx.arch}`);
    return undefined;
  }
  for (const c of cands) {
    if (!c.found) { ctx.tried.push(`bundled ${c.path}: not bundled`); continue; }
    try {
      const dirs = [ctx.cfg.download_storage_path, ...(ctx.deps.runtimeDirs ?? ["/run/ebpf-tracer/btf"])].filter(Boolean);
      const m = await materializeBundled(ctx.bundle, c.path, dirs);
      ctx.tried.push(`bundled ${c.path}: found`);
      ctx.logger.info(`btf: bundled: using ${c.path} copied to ${m.path} (${m.typeCount} types)`, { written: m.written });
      return { source: "bundled", path: m.path, tried: ctx.tried };
    } catch (e) {
      ctx.tried.push(`bundled ${c.path}: rejected (${(e as Error).message})`);
      ctx.logger.warn(`btf: bundled: cannot use ${c.path}: ${(e as Error).message}`);
    }
  }
  ctx.logger.info("btf: bundled: nothing bundled for this kernel", {
    looked: cands.map((c) => c.path), bundled_files: ctx.bundle.keys().length,
  });
  return undefined;
}

/** Step 3: a valid cached download, else a download (each directory alias in turn). */
async function fromDownload(ctx: Ctx, dirs: BtfhubDir[], arch: string | undefined): Promise<BtfResolution | undefined> {
  const { download_url: template, download_storage_path: store } = ctx.cfg;
  if (!arch || dirs.length === 0) {
    ctx.tried.push("download: no BTFHub directory for this OS/architecture");
    ctx.logger.info("btf: download: skipped, no BTFHub directory for this OS/architecture", { os_id: ctx.os.id, arch: ctx.arch });
    return undefined;
  }
  const cached = fromCache(ctx, dirs, arch);
  if (cached) return cached;
  if (!template) {
    ctx.tried.push("download: disabled (btf.download_url is empty)");
    ctx.logger.info("btf: download: disabled (btf.download_url is empty)");
    return undefined;
  }
  const seen = new Set<string>();
  for (const dir of dirs.slice(0, MAX_DOWNLOAD_TRIES)) {
    const url = expandUrl(template, { id: dir.id, version_id: dir.version, arch, release: ctx.release });
    if (seen.has(url)) continue;
    seen.add(url);
    const dest = join(store, btfKey(dir, arch, ctx.release));
    const r = await tryDownload(ctx, url, dest);
    if (r === "next") continue;
    if (r === "stop") break;
    return r;
  }
  return undefined;
}

function fromCache(ctx: Ctx, dirs: BtfhubDir[], arch: string): BtfResolution | undefined {
  for (const dir of dirs) {
    const path = join(ctx.cfg.download_storage_path, btfKey(dir, arch, ctx.release));
    if (!ctx.exists(path)) { ctx.tried.push(`cache ${path}: not found`); continue; }
    const v = ctx.validate(path);
    if (v.ok) {
      ctx.tried.push(`cache ${path}: found`);
      ctx.logger.info(`btf: download: using cached ${path} (${v.typeCount} types), not downloading`);
      return { source: "downloaded", path, tried: ctx.tried };
    }
    ctx.tried.push(`cache ${path}: rejected (${v.reason})`);
    ctx.logger.warn(`btf: download: removing invalid cached ${path}: ${v.reason}`);
    rmSync(path, { force: true });
  }
  return undefined;
}

/** One download attempt: the resolution, "next" (404: try another directory) or "stop". */
async function tryDownload(ctx: Ctx, url: string, dest: string): Promise<BtfResolution | "next" | "stop"> {
  const t0 = Date.now();
  try {
    const d = await downloadBtf({
      url, destPath: dest, release: ctx.release, timeoutMs: ctx.cfg.download_timeout, ca: ctx.deps.ca, env: ctx.deps.env,
    });
    ctx.tried.push(`${url}: downloaded`);
    ctx.logger.info(`btf: download: fetched ${url} into ${d.path} (${d.typeCount} types)`, { bytes: d.bytes, ms: Date.now() - t0 });
    return { source: "downloaded", path: d.path, tried: ctx.tried };
  } catch (e) {
    if (!(e instanceof DownloadError)) throw e;
    ctx.tried.push(`${url}: ${e.message}`);
    const notThere = e.kind === "http" && e.status === 404;
    ctx.logger.info(`btf: download: ${notThere ? "not in the archive" : "failed"}: ${url}: ${e.message}`, { kind: e.kind, ms: Date.now() - t0 });
    // a 404 or a bad archive under one alias says nothing about the next; a dead network does
    return notThere || e.kind === "archive" || e.kind === "invalid" ? "next" : "stop";
  }
}

function fail(ctx: Ctx, arch: string | undefined): never {
  const what = `kernel ${ctx.release} on ${ctx.os.prettyName} (${arch ?? ctx.arch})`;
  throw new TracerError(
    "UNSUPPORTED",
    `no BTF found for ${what}: the kernel has no /sys/kernel/btf/vmlinux and no BTF was found elsewhere. Looked at: ${ctx.tried.join("; ")}. ` +
      "Set btf.path to a BTF file for this kernel (BTFHub has many), or make btf.download_url reachable.",
    { release: ctx.release, os: ctx.os.prettyName, os_id: ctx.os.id, version_id: ctx.os.versionId, arch: ctx.arch, tried: ctx.tried },
  );
}
