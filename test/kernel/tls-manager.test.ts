/**
 * TlsCapture (src/kernel/tls/manager.ts) against a fake kernel and live processes of our own
 * (python3 that has imported ssl): one attach per file however many processes map it, the kernel
 * maps written per process, release when the last user is gone, exclusion rules and
 * enable_uprobes: false honoured. No root needed (our own children's /proc entries).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { TlsCapture, type TlsKernel } from "../../src/kernel/tls/manager.ts";
import { parseMaps } from "../../src/kernel/tls/discover.ts";
import type { FileIdentity, UprobeTarget } from "../../src/kernel/attach-plan.ts";

const PY = "/usr/bin/python3";
const SKIP = existsSync(PY) ? undefined : `${PY} missing`;
if (SKIP) console.warn(`test/kernel/tls-manager.test.ts skipped: ${SKIP}`);

class FakeKernel implements TlsKernel {
  attached: { file: string; targets: UprobeTarget[] }[] = [];
  released: FileIdentity[] = [];
  procs = new Map<number, boolean>();
  go = new Map<number, Uint8Array | undefined>();
  known = new Map<string, boolean>();
  enabled?: boolean;
  attachUprobes(file: string | FileIdentity, targets: UprobeTarget[]): FileIdentity {
    const path = typeof file === "string" ? file : file.path;
    this.attached.push({ file: path, targets });
    return { dev: 1n, ino: BigInt(this.attached.length), path };
  }
  releaseUprobes(file: string | FileIdentity): void {
    this.released.push(file as FileIdentity);
  }
  setTlsEnabled(on: boolean): number {
    this.enabled = on;
    return 0;
  }
  setTlsProc(tgid: number, on: boolean): number {
    this.procs.set(tgid, on);
    return 0;
  }
  setGoTlsOffsets(tgid: number, value: Uint8Array | undefined): number {
    this.go.set(tgid, value);
    return 0;
  }
  setTlsKnownFile(dev: number, ino: number, tls: boolean): number {
    this.known.set(`${dev}:${ino}`, tls);
    return 0;
  }
}

const kids: ReturnType<typeof Bun.spawn>[] = [];
afterAll(() => {
  for (const k of kids) k.kill("SIGKILL");
});

/** A python3 that has mapped libssl (import ssl) and waits; resolves once it has. */
async function pythonWithSsl(tag = ""): Promise<number> {
  const p = Bun.spawn([PY, "-c", `import ssl, sys, time\nprint("ready", flush=True)\ntime.sleep(60) # ${tag}`], { stdout: "pipe", stderr: "ignore" });
  kids.push(p);
  const reader = p.stdout.getReader();
  await reader.read();
  return p.pid;
}

describe.skipIf(!!SKIP)("TlsCapture", () => {
  test("two processes mapping one libssl: one attach, maps per process, one release after both", async () => {
    const k = new FakeKernel();
    const tls = new TlsCapture(k, { enabled: true, probeLdCache: false });
    tls.start();
    expect(k.enabled).toBe(true);
    const a = await pythonWithSsl();
    const b = await pythonWithSsl();
    tls.addProcess(a, "python3");
    tls.addProcess(b, "python3");
    tls.addProcess(a, "python3"); // a rescan: nothing new
    const ssl = k.attached.filter((x) => /libssl\.so/.test(x.file));
    expect(ssl).toHaveLength(1);
    expect(ssl[0]!.file).toStartWith(`/proc/${a}/root/`);
    // read and write, each entry and return: on SSL_read/SSL_write, or (x86-64, tls-probe-site.test.ts)
    // on the internal function both read (write) functions call, with the _ex programs
    const progs = ssl[0]!.targets.map((t) => t.program);
    for (const fn of ["read", "write"]) {
      for (const end of ["entry", "return"]) expect(progs.filter((p) => p === `tls_ssl_${fn}_${end}` || p === `tls_ssl_${fn}_ex_${end}`).length).toBeGreaterThan(0);
    }
    expect(progs).toContain("tls_free_entry");
    expect(k.procs.get(a)).toBe(true);
    expect(k.procs.get(b)).toBe(true);
    expect([...k.known.values()]).toContain(true); // libssl marked TLS
    expect([...k.known.values()]).toContain(false); // libc and the rest: not TLS
    expect(tls.library(a)).toBe("openssl");
    const cov = tls.snapshot().find((c) => c.pid === a)!;
    expect(cov.state).toBe("decrypting");
    expect(cov.stacks.find((s) => s.kind === "openssl")!.probes.attached).toBe(ssl[0]!.targets.length);
    tls.removeProcess(a);
    expect(k.released).toHaveLength(0);
    expect(k.procs.get(a)).toBe(false);
    tls.removeProcess(b);
    expect(k.released).toHaveLength(k.attached.length);
  });

  test("an exclusion rule keeps the process out of tls_procs and attaches nothing for it", async () => {
    const k = new FakeKernel();
    const tls = new TlsCapture(k, { enabled: true, probeLdCache: false, exclusionRules: [{ cmdline: "no-tls-here" }] });
    const pid = await pythonWithSsl("no-tls-here");
    tls.addProcess(pid, "python3");
    expect(k.procs.get(pid)).toBe(false);
    expect(k.attached).toHaveLength(0);
    expect(tls.snapshot()[0]!.state).toBe("excluded");
  });

  test("enable_uprobes false: the kernel switch is off and nothing is attached", async () => {
    const k = new FakeKernel();
    const tls = new TlsCapture(k, { enabled: false });
    tls.start();
    expect(k.enabled).toBe(false);
    tls.addProcess(await pythonWithSsl(), "python3");
    expect(k.attached).toHaveLength(0);
  });

  test("a process mapping an already probed libssl is credited with it at the mmap event, before /proc shows the mapping", async () => {
    const k = new FakeKernel();
    const tls = new TlsCapture(k, { enabled: true, probeLdCache: false });
    tls.start();
    const py = await pythonWithSsl("probed");
    tls.addProcess(py, "python3"); // libssl is probed now
    const ssl = parseMaps(readFileSync(`/proc/${py}/maps`, "utf8")).find((f) => /libssl\.so/.test(f.path))!;
    expect(ssl).toBeDefined();
    // a process that has not mapped libssl (yet): a curl between its mmap and its first TLS call
    const sleeper = Bun.spawn(["sleep", "60"]);
    kids.push(sleeper);
    tls.addProcess(sleeper.pid, "curl");
    expect(tls.library(sleeper.pid)).toBeUndefined();
    tls.mapped(sleeper.pid, ssl.dev, ssl.ino);
    expect(tls.library(sleeper.pid)).toBe("openssl");
    // the mmap event before the exec is handled: credited, and kept when the process is added
    const early = Bun.spawn(["sleep", "60"]);
    kids.push(early);
    tls.mapped(early.pid, ssl.dev, ssl.ino);
    expect(tls.library(early.pid)).toBe("openssl");
    tls.addProcess(early.pid, "curl");
    expect(tls.library(early.pid)).toBe("openssl");
    tls.removeProcess(early.pid);
    expect(tls.library(early.pid)).toBeUndefined();
    // a file nobody probed credits nothing
    const other = Bun.spawn(["sleep", "60"]);
    kids.push(other);
    tls.addProcess(other.pid, "x");
    tls.mapped(other.pid, 1, 1);
    expect(tls.library(other.pid)).toBeUndefined();
    tls.stop();
  });
});
