/**
 * pid_bytes sizing (src/kernel/tracer.ts): the kernel's one-byte-per-tgid pid filter covers
 * pid_max at load, exists only where arrays can be mapped into user space (5.5+), and never
 * grows past PID_MAX_LIMIT.
 */
import { describe, expect, test } from "bun:test";
import { pidBytesPages } from "../../src/kernel/tracer.ts";

describe("pidBytesPages", () => {
  test("pid_max over 4096, rounded up", () => {
    expect(pidBytesPages("6.1.0-50-cloud-amd64", "32768\n")).toBe(8);
    expect(pidBytesPages("6.12.9+bpo-cloud-amd64", "32769\n")).toBe(9);
    expect(pidBytesPages("5.10.0-32-cloud-amd64", "4194304\n")).toBe(1024);
    expect(pidBytesPages("5.5.0", "1")).toBe(1);
  });
  test("capped at PID_MAX_LIMIT (4 MiB of bytes)", () => {
    expect(pidBytesPages("6.1.0", "99999999")).toBe(1024);
  });
  test("none before 5.5 (no BPF_F_MMAPABLE) or without a readable pid_max: the hash alone", () => {
    expect(pidBytesPages("5.4.0-150-generic", "32768")).toBe(0);
    expect(pidBytesPages("4.19.0-27-amd64", "32768")).toBe(0);
    expect(pidBytesPages("garbage", "32768")).toBe(0);
    expect(pidBytesPages("6.1.0", null)).toBe(0);
    expect(pidBytesPages("6.1.0", "")).toBe(0);
    expect(pidBytesPages("6.1.0", "-5")).toBe(0);
  });
});
