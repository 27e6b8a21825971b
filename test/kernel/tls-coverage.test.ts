/**
 * The TLS coverage book: states, connection outcomes, the log line only on change, and the
 * Prometheus lines, from discovery results shaped like the real ones.
 */
import { describe, expect, test } from "bun:test";
import { TlsCoverageBook } from "../../src/kernel/tls/coverage.ts";
import type { ProcessTls, TlsStack } from "../../src/kernel/tls/discover.ts";

const LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

function openssl(): TlsStack {
  const p = (symbol: string, kind: "entry" | "return") => ({ symbol, offset: 0x35430, kind, program: "x" });
  return { kind: "openssl", version: "3.0.19", path: LIBSSL, dev: 1, ino: 2, arch: "x86_64", decryptable: true, probes: [p("SSL_read", "entry"), p("SSL_read", "return"), p("SSL_write", "entry")] };
}
function bun(): TlsStack {
  return { kind: "boringssl", path: "/usr/bin/bun", dev: 1, ino: 3, arch: "x86_64", decryptable: false, reason: "BoringSSL linked without exported symbols", probes: [] };
}
const proc = (pid: number, stacks: TlsStack[], extra: Partial<ProcessTls> = {}): ProcessTls => ({ pid, exe: "/usr/sbin/nginx", stacks, errors: [], ...extra });

describe("TlsCoverageBook", () => {
  test("decrypting process: one log line, probes counted, then quiet until something changes", () => {
    const b = new TlsCoverageBook(true);
    expect(b.setProcess("nginx", proc(1234, [openssl()]))).toBe(`TLS capture for nginx[1234]: openssl 3.0.19 ${LIBSSL}, decrypting`);
    expect(b.probeResult(1234, LIBSSL)).toBeUndefined();
    expect(b.probeResult(1234, LIBSSL)).toBeUndefined();
    expect(b.setProcess("nginx", proc(1234, [openssl()]))).toBeUndefined();
    const [c] = b.snapshot();
    expect(c!.stacks[0]!.probes).toEqual({ wanted: 3, attached: 2, errors: [] });
    expect(b.tlsConnection(1234, "nginx", 7n)).toBeUndefined();
    expect(b.plaintext(1234, "nginx", 7n, false)).toBeUndefined();
    expect(b.closed(1234, 7n)).toBeUndefined();
    expect(b.snapshot()[0]!.connections).toEqual({ tls: 1, decrypted: 1, inferred: 0, notDecrypted: 0 });
  });

  test("a TLS connection closed without plaintext makes the process partial, and says so", () => {
    const b = new TlsCoverageBook(true);
    b.setProcess("nginx", proc(1, [openssl()]));
    b.tlsConnection(1, "nginx", 9n);
    expect(b.closed(1, 9n)).toBe(`TLS capture for nginx[1]: openssl 3.0.19 ${LIBSSL}, partial (1 TLS connection(s) without plaintext)`);
    expect(b.snapshot()[0]!.state).toBe("partial");
  });

  test("inferred correlation is counted, and an exact one later replaces it", () => {
    const b = new TlsCoverageBook(true);
    b.setProcess("node", proc(5, [openssl()]));
    b.plaintext(5, "node", 1n, true);
    b.plaintext(5, "node", 2n, true);
    b.plaintext(5, "node", 2n, false);
    b.plaintext(5, "node", 2n, true);
    expect(b.snapshot()[0]!.connections).toEqual({ tls: 2, decrypted: 2, inferred: 1, notDecrypted: 0 });
    expect(b.prometheus()).toEqual([
      'ebpf_tracer_tls_stacks{kind="openssl",decryptable="true"} 1',
      "ebpf_tracer_tls_probes_attached 0",
      'ebpf_tracer_tls_connections_total{exe="/usr/sbin/nginx",outcome="decrypted"} 1',
      'ebpf_tracer_tls_connections_total{exe="/usr/sbin/nginx",outcome="inferred"} 1',
      'ebpf_tracer_tls_connections_total{exe="/usr/sbin/nginx",outcome="not_decrypted"} 0',
    ]);
  });

  test("not decryptable, excluded, disabled, attach errors, no TLS", () => {
    const b = new TlsCoverageBook(true);
    expect(b.setProcess("bun", proc(2, [bun()]))).toBe("TLS capture for bun[2]: boringssl /usr/bin/bun (BoringSSL linked without exported symbols), not decrypting");
    b.setProcess("python3", proc(3, [{ ...openssl(), decryptable: false, probes: [], reason: "excluded by uprobe_attach_exclusion_rules[0]" }], { excludedBy: "uprobe_attach_exclusion_rules[0]" }));
    expect(b.setProcess("sh", proc(4, []))).toBeUndefined();
    b.setProcess("curl", proc(6, [openssl()]));
    expect(b.probeResult(6, LIBSSL, "uprobe: EINVAL")).toMatch(/, partial$/);
    const off = new TlsCoverageBook(false);
    expect(off.setProcess("nginx", proc(1, [openssl()]))).toBe(`TLS capture for nginx[1]: openssl 3.0.19 ${LIBSSL} (enable_uprobes is false), disabled`);
    expect(off.snapshot()[0]!.stacks[0]!.probes.wanted).toBe(0);
    const states = Object.fromEntries(b.snapshot().map((c) => [c.comm, c.state]));
    expect(states).toEqual({ bun: "not-decrypting", python3: "excluded", sh: "no-tls", curl: "partial" });
    expect(b.snapshot().find((c) => c.pid === 3)!.reasons).toEqual(["excluded by uprobe_attach_exclusion_rules[0]"]);
    b.processGone(2);
    expect(b.snapshot().map((c) => c.pid)).toEqual([3, 4, 6]);
  });
});
