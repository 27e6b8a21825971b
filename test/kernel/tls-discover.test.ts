/**
 * TLS discovery on this machine's real files and processes (no root needed: the processes are our
 * own children). Probe offsets are checked against objdump's File Offset; kinds against what each
 * file really is (Debian's libssl3.so is NSS; Node carries OpenSSL; Bun carries BoringSSL without
 * symbols; a Go program built here with and without its symbol table).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { analyzeElf, mkdev, parseMaps, TlsDiscovery, type FileAnalysis } from "../../src/kernel/tls/discover.ts";
import { ElfFile } from "../../src/kernel/tls/elf.ts";
import { parseLdCache, readLdCache, tlsLibraryCandidates } from "../../src/kernel/tls/ldcache.ts";
import { buildGo, goSkipReason } from "../fixtures/go/build.ts";

const LIB = "/usr/lib/x86_64-linux-gnu";
const goSkip = goSkipReason();
if (goSkip) console.warn(`Go parts of tls-discover.test.ts skipped: ${goSkip}`);

function sh(cmd: string[]): string {
  return Bun.spawnSync(cmd).stdout.toString();
}

function objdumpFileOffset(path: string, sym: string): number {
  const m = /\(File Offset: 0x([0-9a-f]+)\):/.exec(sh(["objdump", "-d", "-F", `--disassemble=${sym}`, path]));
  if (!m) throw new Error(`objdump: no ${sym} in ${path}`);
  return parseInt(m[1]!, 16);
}

/**
 * objdump's view of a C function's probe site on x86-64 (src/kernel/tls/probe-site.ts): past a
 * leading endbr64 and a register test/cmp when the next instruction is one the kernel emulates
 * (push of a register, one-byte nop, direct call/jmp/jcc); else the function's start.
 */
function objdumpSite(path: string, sym: string): number {
  const base = objdumpFileOffset(path, sym);
  if (process.arch !== "x64") return base;
  const out = sh(["objdump", "-d", "--no-show-raw-insn", `--disassemble=${sym}`, path]);
  const ins = [...out.matchAll(/^\s+([0-9a-f]+):\s+(\S+)\s*(\S*)/gm)].slice(0, 3).map((m) => ({ at: parseInt(m[1]!, 16), op: m[2]!, args: m[3]! }));
  const emulated = (i?: { op: string; args: string }) =>
    !!i && ((i.op === "push" && i.args.startsWith("%r")) || i.op === "nop" || (/^(call|jmp|j[a-z]+)$/.test(i.op) && /^[0-9a-f]+$/.test(i.args)));
  let k = ins[0]?.op === "endbr64" ? 1 : 0;
  if (!emulated(ins[k])) k = /^(test|cmp)$/.test(ins[k]?.op ?? "") && /^%\w+,%\w+$/.test(ins[k]!.args) && emulated(ins[k + 1]) ? k + 1 : 0;
  return base + ins[k]!.at - ins[0]!.at;
}

function analyze(path: string, isExe = false): FileAnalysis {
  return ElfFile.with(path, (elf) => analyzeElf(elf, isExe));
}

describe("parseMaps", () => {
  test("distinct files by (dev, inode), first range, deleted suffix dropped, anonymous skipped", () => {
    const text = [
      "55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1311 /usr/bin/python3.11",
      "55d0c0a02000-55d0c0b00000 r-xp 00002000 fd:01 1311 /usr/bin/python3.11",
      "55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]",
      "7f0000000000-7f0000001000 r--p 00000000 103:02 77 /opt/app/lib/libssl.so.3 (deleted)",
      "7f0000002000-7f0000003000 rw-p 00000000 00:00 0 ",
      "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]",
      "7f0000004000-7f0000005000 r--s 00000000 00:05 12 /memfd:x (deleted)",
      "",
    ].join("\n");
    expect(parseMaps(text)).toEqual([
      { path: "/usr/bin/python3.11", dev: mkdev(0xfd, 1), ino: 1311, range: "55d0c0a00000-55d0c0a02000" },
      { path: "/opt/app/lib/libssl.so.3", dev: mkdev(0x103, 2), ino: 77, range: "7f0000000000-7f0000001000" },
      { path: "/memfd:x", dev: mkdev(0, 5), ino: 12, range: "7f0000004000-7f0000005000" },
    ]);
  });
});

describe.skipIf(!existsSync(`${LIB}/libssl.so.3`))("stacks by exported symbols (Debian files)", () => {
  test("libssl.so.3 is OpenSSL: entry+return on the read and write functions (x86-64: the internal ones, tls-probe-site.test.ts), entry on SSL_free", () => {
    const path = `${LIB}/libssl.so.3`;
    const { stack } = analyze(path);
    expect(stack).toMatchObject({ kind: "openssl", version: "3", decryptable: true });
    const name = (p: { symbol: string }) => p.symbol.replace(/→0x[0-9a-f]+$/, "→internal");
    expect(stack!.probes.map((p) => `${name(p)}:${p.kind}:${p.program}`)).toEqual(process.arch === "x64" ? [
      "SSL_read+SSL_read_ex→internal:entry:tls_ssl_read_ex_entry", "SSL_read+SSL_read_ex→internal:return:tls_ssl_read_ex_return",
      "SSL_write+SSL_write_ex→internal:entry:tls_ssl_write_ex_entry", "SSL_write+SSL_write_ex→internal:return:tls_ssl_write_ex_return",
      "SSL_free:entry:tls_free_entry",
    ] : [
      "SSL_read:entry:tls_ssl_read_entry", "SSL_read:return:tls_ssl_read_return",
      "SSL_write:entry:tls_ssl_write_entry", "SSL_write:return:tls_ssl_write_return",
      "SSL_read_ex:entry:tls_ssl_read_ex_entry", "SSL_read_ex:return:tls_ssl_read_ex_return",
      "SSL_write_ex:entry:tls_ssl_write_ex_entry", "SSL_write_ex:return:tls_ssl_write_ex_return",
      "SSL_free:entry:tls_free_entry",
    ]);
    for (const p of stack!.probes.filter((x) => !x.symbol.includes("→"))) expect(p.offset).toBe(objdumpSite(path, p.symbol));
  });

  test("libcrypto.so.3 is not a TLS stack but names the OpenSSL release", () => {
    const a = analyze(`${LIB}/libcrypto.so.3`);
    expect(a.stack).toBeUndefined();
    expect(a.opensslVersion).toMatch(/^3\.\d+\.\d+$/);
  });

  test("libssl3.so is NSS, reported as not decryptable", () => {
    expect(analyze(`${LIB}/libssl3.so`).stack).toMatchObject({ kind: "nss", decryptable: false, probes: [] });
  });

  test("libgnutls.so.30: record_recv/send with the SSL_read/SSL_write programs, deinit frees", () => {
    const { stack } = analyze(`${LIB}/libgnutls.so.30`);
    const pkg = /Version: (\d+\.\d+\.\d+)/.exec(sh(["dpkg", "-s", "libgnutls30"]))?.[1];
    expect(stack).toMatchObject({ kind: "gnutls", decryptable: true });
    if (pkg) expect(stack!.version).toBe(pkg);
    expect(stack!.probes.map((p) => `${p.symbol}:${p.program}`)).toEqual([
      "gnutls_record_recv:tls_ssl_read_entry", "gnutls_record_recv:tls_ssl_read_return",
      "gnutls_record_send:tls_ssl_write_entry", "gnutls_record_send:tls_ssl_write_return",
      "gnutls_deinit:tls_free_entry",
    ]);
  });

  test("libc is no TLS stack", () => {
    expect(analyze(`${LIB}/libc.so.6`).stack).toBeUndefined();
  });
});

describe("executables", () => {
  test.skipIf(!existsSync("/usr/bin/node"))("Node (nodesource) carries OpenSSL with exported SSL_*: probed in the executable", () => {
    const { stack } = analyze("/usr/bin/node", true);
    expect(stack).toMatchObject({ kind: "openssl", decryptable: true, version: sh(["node", "-p", "process.versions.openssl"]).trim() });
    const read = stack!.probes.find((p) => p.symbol === "SSL_read")!;
    expect(read.offset).toBe(objdumpFileOffset("/usr/bin/node", "SSL_read"));
  }, 30_000);

  const bun = existsSync("/usr/bin/bun") ? realpathSync("/usr/bin/bun") : "";
  test.skipIf(!bun)("Bun carries BoringSSL without symbols: reported, not decrypted", () => {
    expect(analyze(bun, true).stack).toMatchObject({ kind: "boringssl", decryptable: false, reason: expect.stringMatching(/without exported symbols/) });
  });

  const java = existsSync("/usr/bin/java") ? realpathSync("/usr/bin/java") : "";
  test.skipIf(!java)("the JVM is reported as Java (JSSE), not decrypted", () => {
    const jvm = java.replace(/bin\/java$/, "lib/server/libjvm.so");
    expect(analyze(jvm).stack).toMatchObject({ kind: "java", decryptable: false });
  });
});

const staticSkip = existsSync(`${LIB}/libssl.a`) && Bun.which("gcc") ? undefined : "libssl.a or gcc missing";
describe.skipIf(!!staticSkip)("a C program linked statically with OpenSSL", () => {
  // SSL_read/SSL_write/SSL_free (and OpenSSL_version's text) referenced so the linker keeps them;
  // nothing is exported.
  const src = "#include <openssl/ssl.h>\nvoid *volatile keep[] = { (void *)SSL_read, (void *)SSL_write, (void *)SSL_free, (void *)SSL_read_ex, (void *)OpenSSL_version };\nint main(void) { return keep[0] == 0; }\n";
  const dir = mkdtempSync(join(tmpdir(), "tls-static-"));
  const bin = join(dir, "static-ssl");
  const stripped = join(dir, "static-ssl-stripped");
  beforeAll(() => {
    writeFileSync(join(dir, "t.c"), src);
    const cc = Bun.spawnSync(["gcc", "-O1", join(dir, "t.c"), "-o", bin, "-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-ldl", "-lpthread"]);
    if (cc.exitCode !== 0) throw new Error(cc.stderr.toString());
    Bun.spawnSync(["strip", "--strip-all", "-o", stripped, bin]);
  }, 60_000);

  test("with its symbol table: probed at the local SSL_* symbols, release from .rodata", () => {
    const { stack } = analyze(bin, true);
    expect(stack).toMatchObject({ kind: "openssl", decryptable: true, version: expect.stringMatching(/^3\.\d+\.\d+$/) });
    // x86-64: the read probes sit on the function SSL_read and SSL_read_ex share (probe-site.ts)
    const read = stack!.probes.find((p) => p.symbol === "SSL_read" || p.symbol.startsWith("SSL_read+SSL_read_ex→"))!;
    const internal = /→0x([0-9a-f]+)$/.exec(read.symbol)?.[1];
    expect(read.offset).toBe(internal ? ElfFile.with(bin, (e) => e.vaddrToOffset(parseInt(internal, 16))!) : objdumpSite(bin, "SSL_read"));
    expect(analyze(bin, false).stack).toBeUndefined(); // as a library it exports nothing
  });

  test("stripped: reported with the custom_ssl_address hint; the hint with the right addresses probes it", () => {
    expect(analyze(stripped, true).stack).toMatchObject({ kind: "openssl", decryptable: false, reason: expect.stringMatching(/custom_ssl_address/) });
    const syms = ElfFile.with(bin, (e) => e.findSymbols(["SSL_read", "SSL_write", "SSL_free"], [".symtab"]));
    const custom = { binary: stripped, sslRead: syms.get("SSL_read")!.value, sslWrite: syms.get("SSL_write")!.value, sslFree: syms.get("SSL_free")!.value };
    const { stack } = ElfFile.with(stripped, (e) => analyzeElf(e, true, custom));
    expect(stack!.probes.map((p) => [p.symbol, p.offset])).toEqual([
      ["SSL_read", objdumpSite(bin, "SSL_read")], ["SSL_read", objdumpSite(bin, "SSL_read")],
      ["SSL_write", objdumpSite(bin, "SSL_write")], ["SSL_write", objdumpSite(bin, "SSL_write")],
      ["SSL_free", objdumpSite(bin, "SSL_free")],
    ]);
  });
});

describe.skipIf(!!goSkip)("Go binaries", () => {
  test("crypto/tls program: entry probes on (*Conn).Read/Write, Read's copy, Write's RETs, offsets for Go 1.19", () => {
    const bin = buildGo("httpsecho");
    const { stack } = analyze(bin, true);
    expect(stack).toMatchObject({ kind: "go", version: expect.stringMatching(/^go1\.19/), decryptable: true });
    expect(stack!.go!.offsets).toMatchObject({ gGoid: 152, pollFDSysfd: 16, source: "dwarf" });
    expect(stack!.go!.mapValue.length).toBe(32);
    const kinds = stack!.probes.map((p) => `${p.symbol}:${p.kind}`);
    expect(kinds).toEqual(["crypto/tls.(*Conn).Read:entry", "crypto/tls.(*Conn).Read:copy", "crypto/tls.(*Conn).Write:entry", "crypto/tls.(*Conn).Write:ret-offsets"]);
    // Every RET offset is inside the function and the byte there is C3.
    const file = readFileSync(bin);
    for (const p of stack!.probes.filter((x) => x.kind === "ret-offsets")) {
      expect(p.retOffsets!.length).toBeGreaterThan(2);
      // the RETs of (*Conn).Write
      for (const r of p.retOffsets!) expect(file[r]).toBe(0xc3);
      expect(p.offset).toBe(objdumpFileOffset(bin, p.symbol));
    }
  }, 180_000);

  test("without DWARF (-w) the version table gives the offsets", () => {
    const { stack } = analyze(buildGo("httpsecho", "-w"), true);
    expect(stack).toMatchObject({ kind: "go", decryptable: true });
    expect(stack!.go!.offsets).toMatchObject({ gGoid: 152, source: "table", measured: true });
  }, 180_000);

  test("stripped (-s -w): reported as not decryptable, found through the pc-line table", () => {
    const { stack } = analyze(buildGo("httpsecho", "-s -w"), true);
    expect(stack).toMatchObject({ kind: "go", decryptable: false, version: expect.stringMatching(/^go1\.19/), reason: expect.stringMatching(/stripped Go binary/) });
  }, 180_000);

  test("a Go program without crypto/tls, with and without symbols: no stack", () => {
    expect(analyze(buildGo("hello"), true).stack).toBeUndefined();
    expect(analyze(buildGo("hello", "-s -w"), true).stack).toBeUndefined();
  }, 180_000);
});

describe("live processes (our own children)", () => {
  const children: Bun.Subprocess[] = [];
  afterAll(() => {
    for (const c of children) c.kill();
  });

  /**
   * Starts `cmd` and waits until its maps mention `marker` (or 5 s); with `ready`, first until it
   * prints a line (its maps are then settled).
   */
  async function start(cmd: string[], marker: RegExp, ready = false): Promise<number> {
    const p = Bun.spawn(cmd, { stdout: ready ? "pipe" : "ignore", stderr: "ignore" });
    children.push(p);
    if (ready) await p.stdout!.getReader().read();
    for (let i = 0; i < 100; i++) {
      try {
        if (marker.test(readFileSync(`/proc/${p.pid}/maps`, "utf8"))) return p.pid;
      } catch {
        /* not yet */
      }
      await Bun.sleep(50);
    }
    throw new Error(`${cmd.join(" ")}: ${marker} never mapped`);
  }

  test("Python with and without `import ssl`; the release comes from libcrypto; one analysis per file", async () => {
    const plain = await start(["python3", "-c", "import time; print('ready', flush=True); time.sleep(30)"], /libc\.so/, true);
    const withSsl = await start(["python3", "-c", "import ssl, time; print('ready', flush=True); time.sleep(30)"], /libssl\.so/, true);
    const d = new TlsDiscovery();
    expect(d.discoverProcess(plain).stacks).toEqual([]);
    const r = d.discoverProcess(withSsl);
    expect(r.errors).toEqual([]);
    expect(r.stacks).toHaveLength(1);
    expect(r.stacks[0]).toMatchObject({ kind: "openssl", decryptable: true, version: expect.stringMatching(/^3\.\d+\.\d+$/), path: expect.stringMatching(/libssl\.so\.3$/) });
    const cached = d.cachedFiles;
    d.discoverProcess(withSsl);
    expect(d.cachedFiles).toBe(cached);
    // libssl_prefixes restricts which libraries are opened.
    expect(new TlsDiscovery({ libsslPrefixes: ["libgnutls"] }).discoverProcess(withSsl).stacks).toEqual([]);
  }, 30_000);

  test.skipIf(!!goSkip)("a running Go TLS server", async () => {
    const pid = await start([buildGo("httpsecho"), "-serve"], /httpsecho/);
    const r = new TlsDiscovery().discoverProcess(pid);
    expect(r.stacks.map((s) => [s.kind, s.decryptable])).toEqual([["go", true]]);
    const st = Bun.spawnSync(["stat", "-L", "-c", "%i", `/proc/${pid}/exe`]).stdout.toString().trim();
    expect(r.stacks[0]!.ino).toBe(Number(st));
  }, 180_000);

  test("custom_ssl_address turns a file into a probed one at the given addresses", async () => {
    const pid = await start(["python3", "-c", "import ssl, time; time.sleep(30)"], /libssl\.so/);
    const path = parseMaps(readFileSync(`/proc/${pid}/maps`, "utf8")).find((f) => /libssl\.so\.3$/.test(f.path))!.path;
    const syms = ElfFile.with(path, (e) => e.findSymbols(["SSL_read", "SSL_write"]));
    const d = new TlsDiscovery({ customSslAddress: [{ binary: path, sslRead: syms.get("SSL_read")!.value, sslWrite: syms.get("SSL_write")!.value }] });
    const s = d.discoverProcess(pid).stacks.find((x) => x.path === path)!;
    expect(s.kind).toBe("custom");
    expect(s.probes.map((p) => [p.symbol, p.kind, p.offset])).toEqual([
      ["SSL_read", "entry", objdumpFileOffset(path, "SSL_read")], ["SSL_read", "return", objdumpFileOffset(path, "SSL_read")],
      ["SSL_write", "entry", objdumpFileOffset(path, "SSL_write")], ["SSL_write", "return", objdumpFileOffset(path, "SSL_write")],
    ]);
  }, 30_000);

  test("uprobe_attach_exclusion_rules: by exe path and by command-line substring; listed, not probed", async () => {
    const pid = await start(["python3", "-c", "import ssl, time; time.sleep(30)", "--marker-x"], /libssl\.so/);
    const exe = realpathSync(`/proc/${pid}/exe`);
    const byCmd = new TlsDiscovery({ exclusionRules: [{ exe: "/nonexistent" }, { cmdline: "--marker-x" }] }).discoverProcess(pid);
    expect(byCmd.excludedBy).toBe("uprobe_attach_exclusion_rules[1]");
    expect(byCmd.stacks).toHaveLength(1);
    expect(byCmd.stacks[0]).toMatchObject({ kind: "openssl", decryptable: false, probes: [], reason: "excluded by uprobe_attach_exclusion_rules[1]" });
    expect(new TlsDiscovery({ exclusionRules: [{ exe, cmdline: "--other" }] }).discoverProcess(pid).excludedBy).toBeUndefined();
    expect(new TlsDiscovery({ exclusionRules: [{ exe }] }).discoverProcess(pid).excludedBy).toBe("uprobe_attach_exclusion_rules[0]");
    // The shared cache still holds the decryptable analysis for processes no rule matches.
    const d = new TlsDiscovery({ exclusionRules: [{ cmdline: "--marker-x" }] });
    d.discoverProcess(pid);
    const other = await start(["python3", "-c", "import ssl, time; time.sleep(30)"], /libssl\.so/);
    expect(d.discoverProcess(other).stacks[0]!.decryptable).toBe(true);
  }, 30_000);

  test("custom_ssl_address outside the file's segments is a CONFIG error naming key and binary", async () => {
    const pid = await start(["python3", "-c", "import ssl, time; time.sleep(30)"], /libssl\.so/);
    const path = parseMaps(readFileSync(`/proc/${pid}/maps`, "utf8")).find((f) => /libssl\.so\.3$/.test(f.path))!.path;
    const r = new TlsDiscovery({ customSslAddress: [{ binary: path, sslRead: 0x10, sslWrite: 2 ** 40 }] }).discoverProcess(pid);
    expect(r.stacks.find((s) => s.path === path)).toBeUndefined();
    expect(r.errors).toEqual([{ path, reason: expect.stringMatching(/^custom_ssl_address: ssl_write 0x10000000000 for .*libssl\.so\.3 is not in a loaded segment/) }]);
  }, 30_000);

  test("a process that is gone: a TracerError naming its maps", () => {
    expect(() => new TlsDiscovery().discoverProcess(2 ** 22 + 7)).toThrow(/cannot read \/proc\/\d+\/maps/);
  });
});

describe.skipIf(!existsSync("/etc/ld.so.cache"))("loader cache: TLS libraries to probe at start", () => {
  test("entries equal `ldconfig -p`; candidates are the versioned libssl/libgnutls, classified by symbols", () => {
    const entries = readLdCache();
    const want = [...sh(["ldconfig", "-p"]).matchAll(/^\t(\S+) \(([^)]*)\) => (\S+)$/gm)].map((m) => `${m[1]} ${m[3]}`);
    expect(entries.map((e) => `${e.name} ${e.path}`)).toEqual(want);
    const cands = tlsLibraryCandidates(entries);
    expect(cands).toContain("/lib/x86_64-linux-gnu/libssl.so.3");
    expect(cands).toContain("/lib/x86_64-linux-gnu/libgnutls.so.30");
    expect(cands.some((p) => p.endsWith("/libssl3.so") || p.endsWith("/libssl.so"))).toBe(false);
    const kinds = cands.map((p) => analyze(p).stack?.kind);
    expect(kinds).toContain("openssl");
    expect(kinds).toContain("gnutls");
    // libssl_prefixes replaces the name rule; libssl3.so is then a candidate that analysis calls NSS.
    const nss = tlsLibraryCandidates(entries, ["libssl3"]);
    expect(nss.map((p) => analyze(p).stack?.kind)).toEqual(["nss"]);
  }, 30_000);

  test("a file without the table, or with a count past its end, is an IO error", () => {
    expect(() => parseLdCache(new Uint8Array(100))).toThrow(/no glibc-ld.so.cache1.1 table/);
    const b = new Uint8Array(readFileSync("/etc/ld.so.cache"));
    const at = Buffer.from(b).indexOf("glibc-ld.so.cache1.1");
    new DataView(b.buffer).setUint32(at + 20, 0xffffff, true);
    expect(() => parseLdCache(b)).toThrow(/entries do not fit/);
  });
});
