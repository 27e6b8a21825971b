/**
 * One structured "system information" log line, written when the kernel has no BTF of its own,
 * so a support ticket from an unsupported host carries everything needed to find or build BTF
 * for it (the reference Traceable tracer logs the same facts).
 *
 * Gathered with `systeminformation`; each probe is bounded by a timeout and a failing or slow
 * probe only leaves its fields out (listed under `probe_errors`), so this never blocks startup
 * for long and never throws.
 */
import { readFileSync } from "node:fs";
import { version as kernelVersion } from "node:os";
import si, { type Systeminformation as S } from "systeminformation";
import { log, type Logger } from "../../log/log.ts";
import { parseOsRelease } from "./locate.ts";

/** The subset of systeminformation used here; tests pass a fake. */
export interface SysInfoProbes {
  osInfo(): Promise<S.OsData>;
  system(): Promise<S.SystemData>;
  cpu(): Promise<S.CpuData>;
  mem(): Promise<S.MemData>;
  uuid(): Promise<S.UuidData>;
}

export interface SysInfoOptions {
  probes?: SysInfoProbes;
  /** per-probe limit */
  timeoutMs?: number;
  /** os-release text; read from /etc/os-release (or /usr/lib/os-release) when absent */
  osReleaseText?: string;
}

export type SystemInfo = Record<string, string | number | boolean | string[]>;

export async function collectSystemInfo(opts: SysInfoOptions = {}): Promise<SystemInfo> {
  const probes = opts.probes ?? si;
  const limit = opts.timeoutMs ?? 5000;
  const errors: string[] = [];
  const run = <T>(name: string, f: () => Promise<T>) => bounded(name, f, limit, errors);
  const [osd, sys, cpu, mem, ids] = await Promise.all([
    run("osInfo", () => probes.osInfo()),
    run("system", () => probes.system()),
    run("cpu", () => probes.cpu()),
    run("mem", () => probes.mem()),
    run("uuid", () => probes.uuid()),
  ]);
  const rel = parseOsRelease(opts.osReleaseText ?? readOsReleaseText());
  const info: SystemInfo = {
    os_name: osd?.distro || rel.prettyName,
    os_vendor: rel.id,
    os_version: osd?.release || rel.versionId,
    os_codename: osd?.codename || rel.versionCodename,
    os_pretty_name: rel.prettyName,
    os_id_like: rel.idLike.join(" "),
    os_arch: osd?.arch ?? process.arch,
    kernel_release: osd?.kernel ?? "",
    kernel_version: safe(kernelVersion),
    hostname: osd?.hostname ?? "",
    fqdn: osd?.fqdn ?? "",
    machine_id: ids?.os || readMachineId(),
    hardware_uuid: ids?.hardware || sys?.uuid || "",
    system_manufacturer: sys?.manufacturer ?? "",
    system_model: sys?.model ?? "",
    virtual: sys?.virtual ?? false,
    hypervisor: sys?.virtualHost ?? "",
    cpu_vendor: cpu?.vendor || cpu?.manufacturer || "",
    cpu_brand: cpu?.brand ?? "",
    cpu_family: cpu?.family ?? "",
    cpu_model: cpu?.model ?? "",
    cpu_stepping: cpu?.stepping ?? "",
    cpu_cores: cpu?.cores ?? 0,
    cpu_physical_cores: cpu?.physicalCores ?? 0,
    cpu_speed_ghz: cpu?.speed ?? 0,
    cpu_hypervisor_flag: /\bhypervisor\b/.test(cpu?.flags ?? ""),
    mem_total_bytes: mem?.total ?? 0,
    mem_available_bytes: mem?.available ?? 0,
  };
  if (errors.length) info.probe_errors = errors;
  return info;
}

/** Collects and logs the system information as ONE info line; returns what it logged. */
export async function logSystemInfo(logger: Logger = log, opts: SysInfoOptions = {}): Promise<SystemInfo> {
  const info = await collectSystemInfo(opts);
  logger.info("system information", info);
  return info;
}

async function bounded<T>(name: string, f: () => Promise<T>, ms: number, errors: string[]): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => { errors.push(`${name}: timed out after ${ms} ms`); resolve(undefined); }, ms);
  });
  try {
    return await Promise.race([f(), timeout]);
  } catch (e) {
    errors.push(`${name}: ${(e as Error)?.message ?? String(e)}`);
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

function safe(f: () => string): string {
  try {
    return f();
  } catch {
    return "";
  }
}

/** /etc/os-release, else /usr/lib/os-release (os-release(5)); "" when neither exists. */
export function readOsReleaseText(): string {
  for (const p of ["/etc/os-release", "/usr/lib/os-release"]) {
    try {
      return readFileSync(p, "utf8");
    } catch {
      // try the next one
    }
  }
  return "";
}

function readMachineId(): string {
  for (const p of ["/etc/machine-id", "/var/lib/dbus/machine-id"]) {
    try {
      return readFileSync(p, "utf8").trim();
    } catch {
      // try the next one
    }
  }
  return "";
}
