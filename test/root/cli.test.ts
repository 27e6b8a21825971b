import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, rootSkipReason } from "../support/tracer.ts";

const skip = rootSkipReason();
if (skip) console.warn(`skipping CLI tests: ${skip}`);

function run(args: string[], prefix: string[] = []) {
  const r = Bun.spawnSync([...prefix, BIN, ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe.skipIf(!!skip)("command line of the compiled binary", () => {
  test("version and help", () => {
    expect(run(["version"]).out).toMatch(/^ebpf-tracer \d+\.\d+\.\d+/);
    const h = run(["capture", "--help"]);
    expect(h.code).toBe(0);
    expect(h.out).toContain("--exe <name>");
  });

  test("a bad config names file, line and key, exits 78 before touching anything", () => {
    const dir = mkdtempSync(join(tmpdir(), "et-cli-"));
    const cfg = join(dir, "bad.yaml");
    writeFileSync(cfg, "mode: ingress\ntargets:\n  - exe: nginx\n    prot: 80\n");
    const r = run(["run", "-c", cfg]);
    expect(r.code).toBe(78);
    expect(r.err.trim()).toBe(`ebpf-tracer: ${cfg}:4: key "targets[0].prot": unknown key (known here: service_name, exe, cmdline, mode, systemd_unit, cgroup, container, port, pid, max_spans_per_second)`);
    const missing = run(["run", "-c", join(dir, "nope.yaml")]);
    expect(missing.code).toBe(78);
    expect(missing.err).toContain("cannot read config: ENOENT");
  });

  test("without privileges: one line naming the missing capability, exit 77", () => {
    const r = run(["capture", "--exe", "curl"], ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
    expect(r.code).toBe(77);
    expect(r.err.trim().split("\n").length).toBe(1);
    expect(r.err).toContain("missing capability CAP_BPF and CAP_PERFMON");
  });

  test("capture without a selector is a usage error", () => {
    const r = run(["capture"]);
    expect(r.code).toBe(78);
    expect(r.err).toContain("select something to capture");
  });

  test("check prints the preflight table and exits 0 here", () => {
    const r = run(["check"]);
    expect(r.code).toBe(0);
    for (const row of ["kernel", "capabilities", "BTF", "attach mode", "buffer", "libbpf", "tracefs", "cgroup", "uprobes", "lockdown"]) {
      expect(r.out).toMatch(new RegExp(`^(ok|warn) +${row} `, "m"));
    }
    expect(r.out).toContain("capture can work on this host");
    // uprobes are tried for real on the host's libssl (Debian 12: libssl3 is installed), and
    // nothing of the trial is left behind
    expect(r.out).toMatch(/^ok +uprobes +work \(a uprobe on SSL_\S+ in \S+libssl\.so\.3 was created and removed\)/m);
    if (existsSync("/sys/kernel/tracing/uprobe_events")) expect(readFileSync("/sys/kernel/tracing/uprobe_events", "utf8")).not.toContain("libssl");
  });

  test("check fails with 69 when the configuration makes capture impossible", () => {
    const dir = mkdtempSync(join(tmpdir(), "et-cli-"));
    const cfg = join(dir, "kp.yaml");
    writeFileSync(cfg, "enable_tracepoints: false\n");
    const hasKprobes = Bun.spawnSync(["test", "-e", "/sys/bus/event_source/devices/kprobe/type"]).exitCode === 0;
    const r = run(["check", "-c", cfg]);
    if (hasKprobes) {
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/ok +attach mode +kprobes/);
    } else {
      expect(r.code).toBe(69);
      expect(r.out).toMatch(/fail +attach mode .*no kprobes/);
    }
  });
});
