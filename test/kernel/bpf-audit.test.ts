import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { Logger } from "../../src/log/log.ts";
import { describeSection, ProbeAudit, sha256Hex } from "../../src/kernel/bpf-audit.ts";

describe("ProbeAudit", () => {
  test("one log line per object, program loaded and probe attached/detached, with the object's SHA-256", () => {
    const lines: Record<string, any>[] = [];
    const logger = new Logger("info", { write: (l) => lines.push(JSON.parse(l)) });
    const obj = new TextEncoder().encode("\x7fELF fake object");
    const sha = createHash("sha256").update(obj).digest("hex");
    const a = new ProbeAudit(obj, logger, () => new Date("2026-01-01T00:00:00Z"));
    expect(a.objectSha256).toBe(sha);
    expect(sha256Hex(obj)).toBe(sha);
    a.loaded("tp_enter_read", "tracepoint/syscalls/sys_enter_read");
    a.attached("tp_enter_read", "tracepoint/syscalls/sys_enter_read");
    a.attached("ssl_write", "uprobe", "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_write");
    expect(a.list()).toEqual([
      { program: "tp_enter_read", attach_point: "syscalls/sys_enter_read", kind: "tracepoint", object_sha256: sha, attached_at: "2026-01-01T00:00:00.000Z" },
      { program: "ssl_write", attach_point: "SSL_write", kind: "uprobe", target: "/usr/lib/x86_64-linux-gnu/libssl.so.3", object_sha256: sha, attached_at: "2026-01-01T00:00:00.000Z" },
    ]);
    a.detached("ssl_write", "uprobe", "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_write");
    expect(a.list().map((p) => p.program)).toEqual(["tp_enter_read"]);
    expect(lines.map((l) => l.msg)).toEqual(["BPF object opened", "BPF program loaded", "probe attached", "probe attached", "probe detached"]);
    expect(lines.every((l) => l.object_sha256 === sha)).toBe(true);
    expect(lines[3]).toMatchObject({ target: "/usr/lib/x86_64-linux-gnu/libssl.so.3", kind: "uprobe" });
  });
  test("sections", () => {
    expect(describeSection("kretsyscall/connect")).toEqual({ kind: "kretprobe", attach_point: "connect" });
    expect(describeSection("weird")).toEqual({ kind: "other", attach_point: "weird" });
  });
});
