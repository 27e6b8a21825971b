/**
 * Audit trail of what the agent loads into the kernel (fleet governance: "what was loaded on
 * this host, by whom, when"): one info log line per BPF program loaded and per probe attached or
 * detached, each with the SHA-256 of the BPF object it came from, and the list of what is
 * attached now for GET /probes and `ebpf-tracer probes`.
 *
 * Wiring (kernel/tracer.ts): `const audit = new ProbeAudit(bytes)` where the object bytes are
 * opened (before BpfObject.open), `audit.loaded(name, section)` for each program after
 * obj.load() succeeded, `audit.attached(name, section, target?)` after each attach,
 * `audit.detached(...)` when a link is destroyed; the admin provider's probes() returns
 * `audit.list()` (AgentInfo.probes in cli/admin-server.ts).
 */
import { createHash } from "node:crypto";
import { log, type Logger } from "../log/log.ts";

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** One attached probe; the same shape as cli/admin-server.ts ProbeInfo. */
export interface AttachedProbe {
  program: string;
  attach_point: string;
  kind: string;
  target?: string;
  object_sha256: string;
  attached_at: string;
}

const KINDS: Record<string, string> = {
  tracepoint: "tracepoint", tp: "tracepoint", raw_tracepoint: "raw_tracepoint", raw_tp: "raw_tracepoint", tp_btf: "tp_btf",
  kprobe: "kprobe", kretprobe: "kretprobe", ksyscall: "kprobe", kretsyscall: "kretprobe", uprobe: "uprobe", uretprobe: "uretprobe",
};

/** "kretsyscall/connect" → kind kretprobe, attach point connect. */
export function describeSection(section: string): { kind: string; attach_point: string } {
  const i = section.indexOf("/");
  const prefix = i < 0 ? section : section.slice(0, i);
  return { kind: KINDS[prefix] ?? "other", attach_point: i < 0 ? section : section.slice(i + 1) };
}

export class ProbeAudit {
  readonly objectSha256: string;
  private readonly attachedNow = new Map<string, AttachedProbe>();

  constructor(objectBytes: Uint8Array, private readonly logger: Logger = log, private readonly now: () => Date = () => new Date()) {
    this.objectSha256 = sha256Hex(objectBytes);
    this.logger.info("BPF object opened", { object_sha256: this.objectSha256, bytes: objectBytes.byteLength, uid: process.getuid?.(), pid: process.pid });
  }

  loaded(program: string, section: string): void {
    this.logger.info("BPF program loaded", { program, section, object_sha256: this.objectSha256 });
  }

  /** `target`: for uprobes, the file the probe is placed in; `attachPoint` overrides the section's. */
  attached(program: string, section: string, target?: string, attachPoint?: string): void {
    const d = describeSection(section);
    const p: AttachedProbe = { program, attach_point: attachPoint ?? d.attach_point, kind: d.kind, ...(target ? { target } : {}), object_sha256: this.objectSha256, attached_at: this.now().toISOString() };
    this.attachedNow.set(`${program}\0${p.attach_point}\0${target ?? ""}`, p);
    this.logger.info("probe attached", { ...p });
  }

  detached(program: string, section: string, target?: string, attachPoint?: string): void {
    const d = describeSection(section);
    const ap = attachPoint ?? d.attach_point;
    this.attachedNow.delete(`${program}\0${ap}\0${target ?? ""}`);
    this.logger.info("probe detached", { program, attach_point: ap, kind: d.kind, ...(target ? { target } : {}), object_sha256: this.objectSha256 });
  }

  /** What is attached now, in attach order. */
  list(): AttachedProbe[] {
    return [...this.attachedNow.values()];
  }
}
