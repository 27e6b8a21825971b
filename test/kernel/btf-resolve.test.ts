/**
 * The whole BTF chain with the host replaced by fakes (release, os-release, file probes, bundle)
 * and a loopback HTTPS server standing in for BTFHub.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveBtf, type ResolveDeps } from "../../src/kernel/btf/resolve.ts";
import { bundleFromMap } from "../../src/kernel/btf/bundle.ts";
import { parseOsRelease, KERNEL_BTF_SYSFS } from "../../src/kernel/btf/locate.ts";
import { Logger, type LogLevel } from "../../src/log/log.ts";
import { TracerError } from "../../src/errors.ts";
import { defaultConfig, type Config } from "../../src/config/config.ts";
import { buildTarXz, hostToolsPresent, makeCerts, startServer, type TestServer } from "./btf-https-server.ts";

const FIX = join(import.meta.dir, "../fixtures/btf/kyanos/custom-archive");
const U2004 = join(FIX, "ubuntu/20.04/x86_64/5.4.0-26-generic.btf");
const C7 = join(FIX, "centos/7/x86_64/3.10.0-957.el7.x86_64.btf");
const UBUNTU = parseOsRelease('ID=ubuntu\nVERSION_ID="20.04"\nVERSION_CODENAME=focal\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n');
const DEB11 = parseOsRelease('ID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\nPRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n');

let tmp: string;
let srv: TestServer | undefined;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "btf-resolve-"));
  if (hostToolsPresent) srv = startServer(makeCerts(join(tmp, "pki")));
});
afterAll(async () => {
  await srv?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

interface Line { level: LogLevel; msg: string; [k: string]: unknown }

let seq = 0;
function harness(over: Partial<ResolveDeps> = {}, cfgOver: Partial<Config["btf"]> = {}) {
  const lines: Line[] = [];
  let sysinfoCalls = 0;
  const logger = new Logger("debug", { write: (l) => lines.push(JSON.parse(l)) });
  const store = join(tmp, `store${seq++}`);
  const cfg: Config["btf"] = { path: "", download_url: "", download_storage_path: store, download_timeout: 5000, ...cfgOver };
  const deps: ResolveDeps = {
    release: "5.4.0-26-generic", arch: "x86_64", osRelease: UBUNTU,
    exists: (p) => p.startsWith(tmp) && existsSync(p), // nothing of the real host is visible
    bundle: bundleFromMap({}), logger, ca: srv?.ca, env: {}, runtimeDirs: [],
    logSystemInfo: async (l) => { sysinfoCalls++; l.info("system information", { fake: true }); },
    ...over,
  };
  return { cfg, deps, lines, store, sysinfoCalls: () => sysinfoCalls, msgs: () => lines.map((l) => l.msg) };
}

async function unsupported(p: Promise<unknown>): Promise<TracerError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(TracerError);
    expect((e as TracerError).code).toBe("UNSUPPORTED");
    return e as TracerError;
  }
  throw new Error("expected UNSUPPORTED");
}

describe("step 1: configured path and kernel BTF", () => {
  test("the kernel's own BTF: libbpf uses it, one line, no system information", async () => {
    const h = harness({ exists: (p) => p === KERNEL_BTF_SYSFS });
    const r = await resolveBtf(h.cfg, h.deps);
    expect(r).toEqual({ source: "kernel", path: undefined, tried: [`${KERNEL_BTF_SYSFS}: found`] });
    expect(h.msgs()).toEqual(["btf: resolving", `btf: kernel: found ${KERNEL_BTF_SYSFS}; libbpf will use the kernel's own BTF`]);
    expect(h.sysinfoCalls()).toBe(0);
  });

  test("btf.path wins over kernel BTF and is validated", async () => {
    const h = harness({ exists: (p) => p === KERNEL_BTF_SYSFS || p === C7 }, { path: C7 });
    expect(await resolveBtf(h.cfg, h.deps)).toEqual({ source: "path", path: C7, tried: [`${C7}: found`] });
  });

  test("an invalid btf.path is logged and skipped", async () => {
    const bad = join(tmp, "bad.btf");
    writeFileSync(bad, "garbage garbage garbage garbage");
    const h = harness({ exists: (p) => p === KERNEL_BTF_SYSFS || p === bad }, { path: bad });
    const r = await resolveBtf(h.cfg, h.deps);
    expect(r.source).toBe("kernel");
    expect(r.tried[0]).toBe(`${bad}: rejected (bad magic 0x6167 (want 0xeb9f))`);
    expect(h.lines.find((l) => l.level === "warn")?.msg).toContain(`btf: configured path: ignoring ${bad}: bad magic`);
  });

  test("a vmlinux image is used when sysfs has no BTF; a bad one is skipped", async () => {
    const rel = "5.4.0-26-generic";
    const h = harness({
      exists: (p) => p === `/boot/vmlinux-${rel}` || p === `/usr/lib/debug/boot/vmlinux-${rel}`,
      validateFile: (p) => p.startsWith("/boot") ? { ok: false, reason: "ELF image has no .BTF section" } : { ok: true, typeCount: 9, format: "elf", bytes: 1 },
    });
    const r = await resolveBtf(h.cfg, h.deps);
    expect(r).toMatchObject({ source: "kernel", path: `/usr/lib/debug/boot/vmlinux-${rel}` });
    expect(r.tried).toContain(`/boot/vmlinux-${rel}: rejected (ELF image has no .BTF section)`);
    expect(h.sysinfoCalls()).toBe(0);
  });

  test.skipIf(!existsSync(KERNEL_BTF_SYSFS))("defaults read this machine (kernel BTF present)", async () => {
    const lines: string[] = [];
    const r = await resolveBtf(defaultConfig().btf, { logger: new Logger("info", { write: (l) => lines.push(l) }) });
    expect(r.source).toBe("kernel");
    expect(r.path).toBeUndefined();
    expect(lines.length).toBe(2);
  });
});

describe("step 2: bundled", () => {
  test("a bundled file is validated, copied to a real path, then reused", async () => {
    const h = harness({ bundle: bundleFromMap({ "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": U2004 }) });
    const r = await resolveBtf(h.cfg, h.deps);
    const want = join(h.store, "bundled/ubuntu/20.04/x86_64/5.4.0-26-generic.btf");
    expect(r).toMatchObject({ source: "bundled", path: want });
    expect(readFileSync(want)).toEqual(readFileSync(U2004));
    expect(h.sysinfoCalls()).toBe(1);
    expect(h.msgs()).toContain("system information");
    expect(h.lines.find((l) => l.msg.startsWith("btf: bundled: using"))?.written).toBe(true);
    const again = await resolveBtf(h.cfg, h.deps);
    expect(again.path).toBe(want);
    expect(h.lines.filter((l) => l.msg.startsWith("btf: bundled: using")).map((l) => l.written)).toEqual([true, false]);
  });

  test("invalid bundled bytes are refused and the chain moves on", async () => {
    const junk = join(tmp, "junk.btf");
    writeFileSync(junk, new Uint8Array(64));
    const h = harness({ bundle: bundleFromMap({ "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": junk }) });
    const e = await unsupported(resolveBtf(h.cfg, h.deps));
    expect(e.message).toContain("bundled ubuntu/20.04/x86_64/5.4.0-26-generic.btf: rejected (bundled ubuntu/20.04/x86_64/5.4.0-26-generic.btf is not valid BTF: bad magic");
  });

  test("an unwritable storage path falls back to a private temporary directory", async () => {
    const file = join(tmp, "a-file");
    writeFileSync(file, "x");
    const h = harness({ bundle: bundleFromMap({ "ubuntu/20.04/x86_64/5.4.0-26-generic.btf": U2004 }) }, { download_storage_path: join(file, "sub") });
    const r = await resolveBtf(h.cfg, h.deps);
    expect(r.source).toBe("bundled");
    const prefix = join(tmpdir(), "ebpf-tracer-btf-");
    expect(r.path!.startsWith(prefix)).toBe(true);
    // remove only the private mkdtemp directory the chain created (…/ebpf-tracer-btf-XXXXXX)
    const privateDir = r.path!.slice(0, r.path!.indexOf("/bundled/"));
    expect(privateDir.startsWith(prefix) && privateDir.length > prefix.length && !privateDir.slice(prefix.length).includes("/")).toBe(true);
    rmSync(privateDir, { recursive: true, force: true });
  });
});

describe.skipIf(!hostToolsPresent)("step 3: download and cache", () => {
  const rel = "5.4.0-26-generic";
  const template = () => `${srv!.origin}/hub/{id}/{version_id}/{arch}/{release}.btf.tar.xz`;

  test("downloads once; the next start uses the cache without touching the server", async () => {
    const path = "/hub/ubuntu/20.04/x86_64/5.4.0-26-generic.btf.tar.xz";
    srv!.routes.set(path, { body: buildTarXz(tmp, `${rel}.btf`, new Uint8Array(readFileSync(U2004))) });
    const h = harness({}, { download_url: template() });
    const first = await resolveBtf(h.cfg, h.deps);
    const cached = join(h.store, "ubuntu/20.04/x86_64/5.4.0-26-generic.btf");
    expect(first).toMatchObject({ source: "downloaded", path: cached });
    expect(readFileSync(cached)).toEqual(readFileSync(U2004));
    expect(srv!.hits.get(path)).toBe(1);

    const second = await resolveBtf(h.cfg, h.deps);
    expect(second).toMatchObject({ source: "downloaded", path: cached });
    expect(srv!.hits.get(path)).toBe(1);
    expect(h.msgs()).toContain(`btf: download: using cached ${cached} (86 types), not downloading`);

    writeFileSync(cached, "corrupted cache");
    const third = await resolveBtf(h.cfg, h.deps);
    expect(third.path).toBe(cached);
    expect(srv!.hits.get(path)).toBe(2);
    expect(h.lines.some((l) => l.level === "warn" && l.msg.startsWith(`btf: download: removing invalid cached ${cached}`))).toBe(true);
    expect(readFileSync(cached)).toEqual(readFileSync(U2004));
  });

  test("Debian 11: bullseye is tried first, then 11", async () => {
    const r11 = "5.10.0-9-amd64";
    const ok = `/hub/debian/11/x86_64/${r11}.btf.tar.xz`;
    srv!.routes.set(ok, { body: buildTarXz(tmp, `${r11}.btf`, new Uint8Array(readFileSync(C7))) });
    const h = harness({ osRelease: DEB11, release: r11 }, { download_url: template() });
    const r = await resolveBtf(h.cfg, h.deps);
    expect(r).toMatchObject({ source: "downloaded", path: join(h.store, `debian/11/x86_64/${r11}.btf`) });
    expect(srv!.hits.get(`/hub/debian/bullseye/x86_64/${r11}.btf.tar.xz`)).toBe(1);
    expect(r.tried).toContain(`${srv!.origin}/hub/debian/bullseye/x86_64/${r11}.btf.tar.xz: HTTP 404`);
  });

  test("a timeout stops the chain: no further aliases, UNSUPPORTED names it", async () => {
    const r11 = "5.10.0-10-amd64";
    srv!.routes.set(`/hub/debian/bullseye/x86_64/${r11}.btf.tar.xz`, { hang: true });
    const h = harness({ osRelease: DEB11, release: r11 }, { download_url: template(), download_timeout: 300 });
    const e = await unsupported(resolveBtf(h.cfg, h.deps));
    expect(e.message).toContain("no complete answer within 300 ms");
    expect(srv!.hits.get(`/hub/debian/11/x86_64/${r11}.btf.tar.xz`)).toBeUndefined();
  });

  test("nothing anywhere: UNSUPPORTED with release, OS and every place looked at; one line per step", async () => {
    const rel = "5.4.0-1-generic";
    const h = harness({ release: rel }, { download_url: template(), path: "/etc/ebpf-tracer/custom.btf" });
    const e = await unsupported(resolveBtf(h.cfg, h.deps));
    const url = `${srv!.origin}/hub/ubuntu/20.04/x86_64/${rel}.btf.tar.xz`;
    expect(e.message).toStartWith(`no BTF found for kernel ${rel} on Ubuntu 20.04.6 LTS (x86_64)`);
    for (const place of [
      "/etc/ebpf-tracer/custom.btf: not found", `${KERNEL_BTF_SYSFS}: not found`, `/boot/vmlinux-${rel}: not found`,
      `/usr/lib/debug/lib/modules/${rel}/vmlinux: not found`, `bundled ubuntu/20.04/x86_64/${rel}.btf: not bundled`,
      `bundled ubuntu/focal/x86_64/${rel}.btf: not bundled`, `cache ${join(h.store, `ubuntu/20.04/x86_64/${rel}.btf`)}: not found`,
      `${url}: HTTP 404`,
    ]) expect(e.message).toContain(place);
    expect(e.detail).toMatchObject({ release: rel, os: "Ubuntu 20.04.6 LTS", os_id: "ubuntu", arch: "x86_64" });
    expect(h.msgs()).toEqual([
      "btf: resolving",
      "btf: configured path: no usable BTF",
      "btf: kernel: no usable BTF",
      "system information",
      "btf: bundled: nothing bundled for this kernel",
      `btf: download: not in the archive: ${url}: HTTP 404`,
      `btf: download: not in the archive: ${srv!.origin}/hub/ubuntu/focal/x86_64/${rel}.btf.tar.xz: HTTP 404`,
    ]);
  });
});

describe("no download possible", () => {
  test("empty download_url: the step says it is disabled", async () => {
    const h = harness();
    const e = await unsupported(resolveBtf(h.cfg, h.deps));
    expect(e.message).toContain("download: disabled (btf.download_url is empty)");
    expect(h.msgs()).toContain("btf: download: disabled (btf.download_url is empty)");
  });

  test("an architecture BTFHub does not cover", async () => {
    const h = harness({ arch: "riscv64" }, { download_url: "https://example.invalid/{id}" });
    const e = await unsupported(resolveBtf(h.cfg, h.deps));
    expect(e.message).toContain("(riscv64)");
    expect(e.message).toContain("bundled: none for architecture riscv64");
    expect(e.message).toContain("download: no BTFHub directory for this OS/architecture");
  });
});
