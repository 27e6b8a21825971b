/**
 * Whether this process may load and attach BPF programs: root, or the capabilities the kernel
 * asks for (CAP_BPF + CAP_PERFMON on 5.8+, CAP_SYS_ADMIN before). Checked before anything is
 * touched so that the error names what is missing.
 */
import { readFileSync } from "node:fs";
import { TracerError } from "../errors.ts";

const CAP = { CAP_DAC_READ_SEARCH: 2, CAP_SYS_PTRACE: 19, CAP_SYS_ADMIN: 21, CAP_SYS_RESOURCE: 24, CAP_PERFMON: 38, CAP_BPF: 39 } as const;
export type CapName = keyof typeof CAP;

export function effectiveCaps(statusText?: string): bigint {
  const text = statusText ?? readFileSync("/proc/self/status", "utf8");
  const m = /^CapEff:\s*([0-9a-f]+)/m.exec(text);
  return m ? BigInt("0x" + m[1]) : 0n;
}

export function hasCap(caps: bigint, name: CapName): boolean {
  return (caps >> BigInt(CAP[name])) & 1n ? true : false;
}

/** Capabilities capture needs that `caps` lacks (empty when it can run). */
export function missingCaps(caps: bigint): CapName[] {
  if (hasCap(caps, "CAP_SYS_ADMIN")) return [];
  return (["CAP_BPF", "CAP_PERFMON"] as CapName[]).filter((c) => !hasCap(caps, c));
}

export function requireCaptureCaps(statusText?: string): void {
  const missing = missingCaps(effectiveCaps(statusText));
  if (missing.length) {
    throw new TracerError(
      "PRIVILEGE",
      `missing capability ${missing.join(" and ")}: run as root, or grant CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (CAP_SYS_ADMIN on kernels before 5.8)`,
    );
  }
}
