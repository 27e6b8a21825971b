/** The environment the systemd unit gives the agent: its `Environment=NAME=value` lines. */
import { readFileSync } from "node:fs";
import { join } from "node:path";

export const UNIT_FILE = join(import.meta.dir, "..", "..", "systemd", "ebpf-tracer.service");

export function unitEnvironment(path = UNIT_FILE): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of readFileSync(path, "utf8").matchAll(/^Environment=([A-Za-z_][A-Za-z0-9_]*)=(\S*)$/gm)) env[m[1]!] = m[2]!;
  return env;
}

/** The unit's `CPUQuota=` (percent of one core) and `Nice=`; undefined where it sets none. */
export function unitLimits(path = UNIT_FILE): { cpuQuotaPercent?: number; nice?: number } {
  const text = readFileSync(path, "utf8");
  const quota = /^CPUQuota=(\d+(?:\.\d+)?)%$/m.exec(text);
  const nice = /^Nice=(-?\d+)$/m.exec(text);
  return { cpuQuotaPercent: quota ? Number(quota[1]) : undefined, nice: nice ? Number(nice[1]) : undefined };
}
