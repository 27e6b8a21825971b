/**
 * The release end to end: `bun run release` builds release 1 (this checkout's version, x86_64 and
 * aarch64) and release 2 (a newer version, x86_64) with the base URL of an HTTPS server on a
 * loopback port whose certificate comes from a private CA; this test checks the release files
 * (tarball contents, .sha256, SHA256SUMS, SBOM), serves them, runs an OTLP receiver, and has
 * test/install/release.sh install them with `curl … | bash` inside a minimal Debian 12 container
 * booted with systemd that trusts the CA (the container shares the host's network).
 * Skipped, saying why, when not root or without systemd-nspawn/debootstrap, or without the
 * aarch64 cross compiler (scripts/install-deps.sh installs it).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestCerts, removeTestCerts, type TestCerts } from "../support/certs.ts";
import { OtlpReceiver } from "../support/otlp-receiver.ts";
import { port } from "../support/servers.ts";
import { runTapScript } from "../support/tap.ts";

const REPO = join(import.meta.dir, "..", "..");
const SCRIPT = join(REPO, "test", "install", "release.sh");
const ROOTFS_STAMP = "/var/cache/ebpf-tracer-test/rootfs-minimal/.stamp";
const V1 = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;
const V2 = `${V1}-next.1`;

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (boots a systemd-nspawn container)";
  if (!Bun.which("systemd-nspawn")) return "systemd-nspawn is not installed (apt-get install systemd-container)";
  if (!Bun.which("nsenter")) return "nsenter is not installed (util-linux)";
  if (!Bun.which("debootstrap") && !existsSync(ROOTFS_STAMP)) return "debootstrap is not installed and no cached rootfs (apt-get install debootstrap)";
  if (!Bun.which("aarch64-linux-gnu-gcc")) return "the aarch64 cross compiler is missing (apt-get install gcc-aarch64-linux-gnu; scripts/install-deps.sh)";
  return undefined;
}

const skip = skipReason();
if (skip) console.warn(`skipping release tests: ${skip}`);

describe.skipIf(!!skip)("release: bun run release, then curl | bash in a minimal systemd container", () => {
  let work = "";
  let certs: TestCerts;
  let rx: OtlpReceiver;
  let server: ReturnType<typeof Bun.serve> | undefined;
  let url = "";
  const r1 = () => join(work, "r1");
  const r2 = () => join(work, "r2");

  function release(args: string[]): void {
    const p = Bun.spawnSync(["bun", "scripts/release.ts", ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
    if (p.exitCode !== 0) throw new Error(`release ${args.join(" ")} failed:\n${p.stdout}\n${p.stderr}`);
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "release-test-"));
    certs = makeTestCerts();
    rx = await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key } });
    const p = port();
    url = `https://127.0.0.1:${p}`;
    release(["--base-url", url, "--out", r1()]);
    release(["--base-url", url, "--version", V2, "--arch", "x86_64", "--out", r2()]);
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: p,
      tls: { cert: Bun.file(certs.server.cert), key: Bun.file(certs.server.key) },
      fetch(req) {
        const u = new URL(req.url);
        if (u.pathname === "/_test/spans") {
          const path = u.searchParams.get("path");
          return new Response(String(rx.spans.filter((s) => (s.attributes["url.path"] as { stringValue?: string } | undefined)?.stringValue === path).length));
        }
        if (u.pathname === "/next/install.sh") return new Response(Bun.file(join(r2(), "install.sh")));
        const name = u.pathname.slice(1);
        if (!/^[A-Za-z0-9._-]+$/.test(name)) return new Response("no", { status: 404 });
        for (const d of [r1(), r2()]) if (existsSync(join(d, name))) return new Response(Bun.file(join(d, name)));
        return new Response("no", { status: 404 });
      },
    });
  }, 600_000);

  afterAll(async () => {
    server?.stop(true);
    await rx?.close();
    if (certs) removeTestCerts(certs);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test("dist/release layout: stamped install.sh, both tarballs with .sha256, SHA256SUMS, SBOM", () => {
    const files = readdirSync(r1()).sort();
    expect(files).toEqual([
      "SHA256SUMS",
      `ebpf-tracer-${V1}-linux-aarch64.tar.gz`,
      `ebpf-tracer-${V1}-linux-aarch64.tar.gz.sha256`,
      `ebpf-tracer-${V1}-linux-x86_64.tar.gz`,
      `ebpf-tracer-${V1}-linux-x86_64.tar.gz.sha256`,
      `ebpf-tracer-${V1}.sbom.json`,
      "install.sh",
    ]);
    const installer = readFileSync(join(r1(), "install.sh"), "utf8");
    expect(installer).toContain(`\nRELEASE_BASE_URL="${url}"\n`);
    expect(installer).toContain(`\nRELEASE_VERSION="${V1}"\n`);
    const check = Bun.spawnSync(["sha256sum", "-c", "SHA256SUMS"], { cwd: r1() });
    expect(check.stdout.toString().trim().split("\n").every((l) => l.endsWith(": OK"))).toBe(true);
    expect(check.exitCode).toBe(0);
    for (const arch of ["x86_64", "aarch64"]) {
      const name = `ebpf-tracer-${V1}-linux-${arch}`;
      const sum = readFileSync(join(r1(), `${name}.tar.gz.sha256`), "utf8");
      expect(sum).toBe(`${new Bun.CryptoHasher("sha256").update(readFileSync(join(r1(), `${name}.tar.gz`))).digest("hex")}  ${name}.tar.gz\n`);
      const list = Bun.spawnSync(["tar", "-tzf", join(r1(), `${name}.tar.gz`)]).stdout.toString().split("\n");
      for (const f of ["ebpf-tracer", "install.sh", "systemd/ebpf-tracer.service", "ebpf-tracer-config.yaml", "licenses/libbpf-LICENSE.BSD-2-Clause", "licenses/zlib-LICENSE", "licenses/elfutils-COPYING-LGPLV3", "sbom.json"]) {
        expect(list).toContain(`${name}/${f}`);
      }
      // the binary is for that architecture
      const head = Bun.spawnSync(["bash", "-c", `tar -xzOf "$1" "$2/ebpf-tracer" | head -c 20 | od -An -tx1 | tr -d ' \\n'`, "x", join(r1(), `${name}.tar.gz`), name]).stdout.toString();
      expect(head.slice(36, 40)).toBe(arch === "x86_64" ? "3e00" : "b700"); // ELF e_machine: EM_X86_64 / EM_AARCH64
    }
    const bom = JSON.parse(readFileSync(join(r1(), `ebpf-tracer-${V1}.sbom.json`), "utf8")) as { components: { name: string; version?: string; hashes?: { content: string }[] }[] };
    const byName = Object.fromEntries(bom.components.map((c) => [c.name, c]));
    expect(byName.libbpf?.version).toBe("1.1.2");
    expect(byName["libelf (elfutils)"]?.version).toBe("0.188");
    expect(byName.zlib?.version).toBe("1.2.13.dfsg");
    expect(byName.commander?.version).toBe("15.1.0");
    expect(byName.bun?.version).toBe(Bun.version);
    expect(byName["tracer.bpf.o (x86_64)"]?.hashes?.[0]?.content).toBe(new Bun.CryptoHasher("sha256").update(readFileSync(join(REPO, ".output", "tracer.bpf.o"))).digest("hex"));
    expect(byName["tracer.bpf.o (aarch64)"]?.hashes?.[0]?.content).toMatch(/^[0-9a-f]{64}$/);
  }, 120_000);

  test("the default config in the tarball passes `ebpf-tracer config validate`", () => {
    const name = `ebpf-tracer-${V1}-linux-x86_64`;
    const dir = join(work, "extract");
    Bun.spawnSync(["mkdir", "-p", dir]);
    expect(Bun.spawnSync(["tar", "-xzf", join(r1(), `${name}.tar.gz`), "-C", dir]).exitCode).toBe(0);
    const v = Bun.spawnSync([join(dir, name, "ebpf-tracer"), "config", "validate", "-c", join(dir, name, "ebpf-tracer-config.yaml")], { stdout: "pipe", stderr: "pipe" });
    expect({ code: v.exitCode, out: v.stdout.toString().split("\n")[0] }).toEqual({ code: 0, out: `ok: ${join(dir, name, "ebpf-tracer-config.yaml")}` });
  }, 60_000);

  test(
    "curl | bash installs from the release, spans reach the receiver, re-run changes nothing, --upgrade restarts once",
    async () => {
      const { code, err, failed, summary, passed } = await runTapScript(["bash", SCRIPT, "--url", url, "--ca", certs.ca.cert, "--collector", `127.0.0.1:${rx.port}`], {
        EBPF_TRACER_TEST_OUT: "/tmp/ebpf-tracer-release-test",
      });
      if (code === 77) {
        console.warn(`release test skipped by release.sh: ${err.trim()}`);
        return;
      }
      expect({ failed, summary, code }).toEqual({ failed: [], summary: expect.stringMatching(/^\d+ passed, 0 failed$/), code: 0 });
      expect(passed).toBeGreaterThanOrEqual(20);
    },
    600_000,
  );
});
