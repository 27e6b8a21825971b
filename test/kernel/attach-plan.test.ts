/**
 * The attach plan without root: probes read from sections, the flavour chosen per syscall, optional
 * and required probes, and ProbeLinks attaching, reference-counting uprobes per file identity and
 * detaching, with the kernel calls replaced by a recorder.
 */
import { describe, expect, test } from "bun:test";
import { planAttach, probeOf, ProbeLinks, type FileIdentity, type LinkOps, type Probe, type SyscallFlavour } from "../../src/kernel/attach-plan.ts";
import { isTracerError } from "../../src/errors.ts";

const SECTIONS: [string, string][] = [
  ["tp_enter_read", "tracepoint/syscalls/sys_enter_read"],
  ["tp_exit_read", "tracepoint/syscalls/sys_exit_read"],
  ["tp_enter_sendmmsg", "tracepoint/syscalls/sys_enter_sendmmsg"],
  ["tp_exit_sendmmsg", "tracepoint/syscalls/sys_exit_sendmmsg"],
  ["tp_enter_close", "tracepoint/syscalls/sys_enter_close"],
  ["tp_enter_mmap", "tracepoint/syscalls/sys_enter_mmap"],
  ["kp_read", "ksyscall/read"],
  ["krp_read", "kretsyscall/read"],
  ["kp_sendmmsg", "ksyscall/sendmmsg"],
  ["krp_sendmmsg", "kretsyscall/sendmmsg"],
  ["kp_close", "ksyscall/close"],
  ["tp_exec", "tracepoint/sched/sched_process_exec"],
  ["rtp_fork", "raw_tracepoint/sched_process_fork"],
  ["tp_exit", "tracepoint/sched/sched_process_exit"],
  ["tp_sock_state", "tracepoint/sock/inet_sock_set_state"],
  ["up_ssl_write", "uprobe/SSL_write"],
  ["urp_ssl_read", "uretprobe/SSL_read"],
];
const PROBES = SECTIONS.map(([n, s]) => probeOf(n, s));

function plan(flavours: SyscallFlavour[], missing: string[] = []) {
  return planAttach(PROBES, { flavours, exists: (p) => !missing.includes(p.section) });
}

const programs = (ps: Probe[]) => ps.map((p) => p.program);

describe("probes from sections", () => {
  test("kind, target, syscall and optional are read from the section", () => {
    const by = Object.fromEntries(PROBES.map((p) => [p.program, p]));
    expect(by.tp_enter_read).toMatchObject({ kind: "tracepoint", target: "syscalls/sys_enter_read", syscall: "read", optional: true });
    expect(by.krp_read).toMatchObject({ kind: "kretprobe", target: "read", syscall: "read" });
    expect(by.rtp_fork).toMatchObject({ kind: "raw_tracepoint", target: "sched_process_fork", optional: false });
    expect(by.tp_exec).toMatchObject({ kind: "tracepoint", target: "sched/sched_process_exec", optional: false });
    expect(by.tp_sock_state).toMatchObject({ kind: "tracepoint", target: "sock/inet_sock_set_state", optional: true });
    expect(by.up_ssl_write!.kind).toBe("uprobe");
    expect(by.urp_ssl_read!.kind).toBe("uretprobe");
    const kp = probeOf("k", "kprobe/tcp_close");
    expect(kp).toMatchObject({ kind: "kprobe", target: "tcp_close" });
    expect(kp.syscall).toBeUndefined();
  });

  test("an unknown section is an internal error naming program and section", () => {
    expect(() => probeOf("x", "fentry/tcp_close")).toThrow(/BPF program x: section fentry\/tcp_close has no attach rule/);
  });
});

describe("planAttach", () => {
  test("tracepoints where they exist: kprobe flavour not loaded, uprobes kept for later", () => {
    const p = plan(["tracepoint", "kprobe"]);
    expect(programs(p.start)).toEqual(["tp_enter_read", "tp_exit_read", "tp_enter_sendmmsg", "tp_exit_sendmmsg", "tp_enter_close", "tp_enter_mmap", "tp_exec", "rtp_fork", "tp_exit", "tp_sock_state"]);
    expect(p.unload).toEqual(["kp_read", "krp_read", "kp_sendmmsg", "krp_sendmmsg", "kp_close"]);
    expect(programs(p.uprobes)).toEqual(["up_ssl_write", "urp_ssl_read"]);
    expect(p.skipped).toEqual([]);
    expect(p.flavour).toEqual({ read: "tracepoint", sendmmsg: "tracepoint", close: "tracepoint", mmap: "tracepoint" });
  });

  test("a syscall whose tracepoint is missing falls back to its kprobes; the others keep tracepoints", () => {
    const p = plan(["tracepoint", "kprobe"], ["tracepoint/syscalls/sys_exit_sendmmsg"]);
    expect(p.flavour.sendmmsg).toBe("kprobe");
    expect(p.flavour.read).toBe("tracepoint");
    expect(programs(p.start)).toContain("kp_sendmmsg");
    expect(programs(p.start)).toContain("krp_sendmmsg");
    expect(p.unload).toContain("tp_enter_sendmmsg");
    expect(p.unload).toContain("tp_exit_sendmmsg");
    expect(p.skipped).toEqual([]);
  });

  test("without kprobes a syscall whose tracepoint is missing is skipped and listed", () => {
    const p = plan(["tracepoint"], ["tracepoint/syscalls/sys_enter_sendmmsg"]);
    expect(p.flavour.sendmmsg).toBeUndefined();
    expect(p.skipped).toEqual(["tracepoint/syscalls/sys_enter_sendmmsg"]);
    expect(p.unload).toEqual(expect.arrayContaining(["tp_enter_sendmmsg", "tp_exit_sendmmsg", "kp_sendmmsg", "krp_sendmmsg"]));
    expect(programs(p.start)).not.toContain("tp_exit_sendmmsg");
  });

  test("kprobes only (enable_tracepoints false): every syscall on kprobes, tracepoint flavour unloaded", () => {
    const p = plan(["kprobe"], ["ksyscall/sendmmsg"]);
    expect(programs(p.start)).toEqual(["kp_read", "krp_read", "kp_close", "tp_exec", "rtp_fork", "tp_exit", "tp_sock_state"]);
    // sendmmsg: its kprobe is missing; mmap: a tracepoint-only probe, and tracepoints are off
    expect(p.skipped).toEqual(["tracepoint/syscalls/sys_enter_mmap", "ksyscall/sendmmsg"]);
    expect(p.unload).toEqual(expect.arrayContaining(["tp_enter_read", "tp_exit_read", "tp_enter_close", "tp_enter_mmap", "kp_sendmmsg", "krp_sendmmsg"]));
  });

  test("an optional probe without its attach point is skipped, listed and not loaded", () => {
    const p = plan(["tracepoint"], ["tracepoint/sock/inet_sock_set_state"]);
    expect(p.skipped).toEqual(["tracepoint/sock/inet_sock_set_state"]);
    expect(p.unload).toContain("tp_sock_state");
    expect(programs(p.start)).not.toContain("tp_sock_state");
  });

  test("a required probe without its attach point stops the start with UNSUPPORTED", () => {
    let err: unknown;
    try {
      plan(["tracepoint"], ["raw_tracepoint/sched_process_fork"]);
    } catch (e) {
      err = e;
    }
    expect(isTracerError(err) && err.code).toBe("UNSUPPORTED");
    expect((err as Error).message).toContain("raw tracepoint sched_process_fork (needed by BPF program rtp_fork)");
  });
});

interface FakeLink {
  program: string;
  point: string;
  n: number;
}

class Recorder implements LinkOps<FakeLink> {
  attached: FakeLink[] = [];
  detached: { links: FakeLink[]; wait: boolean }[] = [];
  failOn?: string;
  private n = 0;
  attach(p: Probe): FakeLink {
    if (p.program === this.failOn) throw new Error(`attach ${p.program} failed`);
    const l = { program: p.program, point: p.target, n: this.n++ };
    this.attached.push(l);
    return l;
  }
  attachUprobe(p: Probe, file: string, offset: number): FakeLink {
    if (p.program === this.failOn) throw new Error(`attach ${p.program} failed`);
    const l = { program: p.program, point: `${file}+0x${offset.toString(16)}`, n: this.n++ };
    this.attached.push(l);
    return l;
  }
  detach(links: FakeLink[], wait: boolean): void {
    this.detached.push({ links: [...links], wait });
  }
}

/** Paths → identities: /usr/lib/libssl.so.3 and /proc/1/root/usr/lib/libssl.so.3 are one file. */
const IDS: Record<string, FileIdentity> = {
  "/usr/lib/libssl.so.3": { dev: 8n, ino: 100n, path: "/usr/lib/libssl.so.3" },
  "/proc/1/root/usr/lib/libssl.so.3": { dev: 8n, ino: 100n, path: "/proc/1/root/usr/lib/libssl.so.3" },
  "/opt/app/libssl.so.3": { dev: 8n, ino: 200n, path: "/opt/app/libssl.so.3" },
};
const identify = (path: string): FileIdentity => {
  const id = IDS[path];
  if (!id) throw new Error(`ENOENT ${path}`);
  return id;
};
const SSL = [{ program: "up_ssl_write", offset: 0x3a0f0, symbol: "SSL_write" }, { program: "urp_ssl_read", offset: 0x39e20, symbol: "SSL_read" }];

describe("ProbeLinks", () => {
  test("attaches the start probes one link at a time and keeps their handles", () => {
    const ops = new Recorder();
    const links = new ProbeLinks(plan(["tracepoint"]), ops, identify);
    links.attachStart();
    expect(ops.attached.map((l) => l.program)).toEqual(programs(plan(["tracepoint"]).start));
    expect(links.attached).toEqual(plan(["tracepoint"]).start.map((p) => p.section));
    expect(links.links()).toEqual(ops.attached);
  });

  test("a failed start attach detaches what was attached and rethrows", () => {
    const ops = new Recorder();
    ops.failOn = "tp_exec";
    const links = new ProbeLinks(plan(["tracepoint"]), ops, identify);
    expect(() => links.attachStart()).toThrow("attach tp_exec failed");
    expect(ops.detached).toEqual([{ links: ops.attached, wait: true }]);
    expect(links.links()).toEqual([]);
  });

  test("uprobes are counted per file identity: one set of links per inode, detached at the last release", () => {
    const ops = new Recorder();
    const links = new ProbeLinks(plan(["tracepoint"]), ops, identify);
    const a = links.attachUprobes("/usr/lib/libssl.so.3", SSL);
    expect(ops.attached.map((l) => l.point)).toEqual(["/usr/lib/libssl.so.3+0x3a0f0", "/usr/lib/libssl.so.3+0x39e20"]);
    const b = links.attachUprobes("/proc/1/root/usr/lib/libssl.so.3", SSL);
    expect(b).toEqual(a);
    expect(ops.attached.length).toBe(2);
    expect(links.uprobeUsers(a)).toBe(2);
    links.attachUprobes("/opt/app/libssl.so.3", SSL);
    expect(ops.attached.length).toBe(4);

    links.release(a);
    expect(ops.detached).toEqual([]);
    links.release("/usr/lib/libssl.so.3");
    expect(ops.detached).toEqual([{ links: ops.attached.slice(0, 2), wait: false }]);
    expect(links.uprobeUsers(a)).toBe(0);
    links.release(a); // not probed any more: nothing happens
    expect(ops.detached.length).toBe(1);

    links.attachStart();
    links.detachAll();
    const last = ops.detached.at(-1)!;
    expect(last.wait).toBe(true);
    expect(last.links.map((l) => l.program)).toEqual([...programs(plan(["tracepoint"]).start), "up_ssl_write", "urp_ssl_read"]);
    expect(links.links()).toEqual([]);
  });

  test("a uprobe attach that fails part-way leaves nothing attached for that file", () => {
    const ops = new Recorder();
    ops.failOn = "urp_ssl_read";
    const links = new ProbeLinks(plan(["tracepoint"]), ops, identify);
    expect(() => links.attachUprobes("/usr/lib/libssl.so.3", SSL)).toThrow("attach urp_ssl_read failed");
    expect(ops.detached).toEqual([{ links: [ops.attached[0]!], wait: false }]);
    expect(links.uprobeUsers(IDS["/usr/lib/libssl.so.3"]!)).toBe(0);
  });

  test("a program that is not a uprobe program of the object is refused", () => {
    const links = new ProbeLinks(plan(["tracepoint"]), new Recorder(), identify);
    expect(() => links.attachUprobes("/usr/lib/libssl.so.3", [{ program: "tp_exec", offset: 16 }])).toThrow("BPF program tp_exec is not a uprobe program of the object");
  });
});

describe("loop variants", () => {
  const WITH_VARIANTS = [
    ...PROBES,
    probeOf("tp_exit_read_lp", "tracepoint/syscalls/sys_exit_read"),
    probeOf("krp_read_lp", "kretsyscall/read"),
    probeOf("urp_ssl_read_lp", "uretprobe/SSL_read"),
  ];
  const variantPlan = (loopVariants: boolean, flavours: SyscallFlavour[] = ["tracepoint", "kprobe"]) =>
    planAttach(WITH_VARIANTS, { flavours, exists: () => true, loopVariants });

  test("with bpf_loop: the variant is loaded and attached under its program's name; the program is not loaded", () => {
    const p = variantPlan(true);
    const read = p.start.find((x) => x.program === "tp_exit_read")!;
    expect(read.loads).toBe("tp_exit_read_lp");
    expect(p.start.filter((x) => x.program.endsWith("_lp"))).toEqual([]);
    expect(p.uprobes.find((x) => x.program === "urp_ssl_read")!.loads).toBe("urp_ssl_read_lp");
    // the plain programs that have a variant, and the kprobe flavour (its variant, not its plain program)
    // and read's entry: its exit variant takes the arguments from the registers
    expect(p.unload.sort()).toEqual(["kp_close", "kp_read", "kp_sendmmsg", "krp_read_lp", "krp_sendmmsg", "tp_enter_read", "tp_exit_read", "urp_ssl_read", "krp_read"].sort());
    expect(p.start.filter((x) => x.syscall === "read").map((x) => x.program)).toEqual(["tp_exit_read"]);
    // programs without a variant load as themselves, and their syscall keeps its entry
    expect(p.start.find((x) => x.program === "tp_exit_sendmmsg")!.loads).toBeUndefined();
    expect(p.start.filter((x) => x.syscall === "sendmmsg").map((x) => x.program).sort()).toEqual(["tp_enter_sendmmsg", "tp_exit_sendmmsg"]);
  });

  test("without bpf_loop: no variant is loaded, every program runs as itself", () => {
    const p = variantPlan(false);
    expect([...p.start, ...p.uprobes].every((x) => x.loads === undefined)).toBe(true);
    expect(p.unload.filter((n) => n.endsWith("_lp")).sort()).toEqual(["krp_read_lp", "tp_exit_read_lp", "urp_ssl_read_lp"]);
    expect(programs(p.start)).toEqual(programs(plan(["tracepoint", "kprobe"]).start));
  });

  test("kprobe flavour with bpf_loop: the kretprobe's variant is attached, the tracepoint's is not loaded", () => {
    const p = variantPlan(true, ["kprobe"]);
    expect(p.start.find((x) => x.program === "krp_read")!.loads).toBe("krp_read_lp");
    expect(p.unload).toContain("tp_exit_read_lp");
    expect(p.unload).toContain("krp_read");
    expect(p.start.filter((x) => x.syscall === "read").map((x) => x.program)).toEqual(["krp_read"]);
  });
});
