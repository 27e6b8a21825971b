/**
 * Process selection rules (config `targets`, `capture_all`, `exclude_processes`, and the older
 * `capture.*` lists) as pure functions: whether a process matches, and which parts can be
 * enforced by the kernel alone. A target matches when all its given fields match; the first
 * matching target wins; `exclude_processes` always wins.
 */
import { realpathSync } from "node:fs";
import type { Config, Target } from "../config/config.ts";
import type { Mode } from "../config/schema.ts";
import { containerIdOf, systemdUnitOf } from "./cgroups.ts";

export interface ProcessFacts {
  pid: number;
  comm: string;
  exe: string;        // full path, "" when unknown
  cmdline: string;    // argv joined with spaces
  cgroup: string;     // cgroup v2 path, "" when unknown
  ports: number[];    // TCP ports it listens on (only needed for port targets)
}

export interface CompiledTarget {
  index: number;
  source: Target;
  mode: Mode;
  serviceName?: string;
  test: (p: ProcessFacts) => boolean;
  /** exact executable name or path and nothing else: the kernel can match it at exec */
  kernelExe?: string;
  /** a port and nothing else: the kernel can select the listener at listen() */
  kernelPort?: number;
  needsPorts: boolean;
  needsCgroup: boolean;
}

export interface Rules {
  captureAll: Mode | undefined;
  mode: Mode;
  exclude: Set<string>;
  targets: CompiledTarget[];
  customAttributes: Record<string, string>;
}

export interface Decision {
  selected: boolean;
  excluded: boolean;
  mode?: Mode;
  target?: CompiledTarget;
}

const GLOB_CHARS = /[*?[\]{}]/;

function globTest(pattern: string): (s: string) => boolean {
  if (!GLOB_CHARS.test(pattern)) return (s) => s === pattern;
  const g = new Bun.Glob(pattern);
  return (s) => g.match(s);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * Executable patterns: with a "/" they match the path (also through symlinks, e.g.
 * /usr/bin/python3 → /usr/bin/python3.11, since /proc shows the resolved path while execve
 * events show the path as called); without, the file name or the comm (the kernel's 15-byte
 * name, which is the called file name).
 */
function exeTest(pattern: string): (p: ProcessFacts) => boolean {
  const t = globTest(pattern);
  if (pattern.includes("/")) {
    let real = pattern;
    if (!GLOB_CHARS.test(pattern)) {
      try {
        real = realpathSync(pattern);
      } catch {
        /* not on this host (yet) */
      }
    }
    return (p) => p.exe !== "" && (t(p.exe) || p.exe === real);
  }
  const commT = GLOB_CHARS.test(pattern) ? t : (c: string) => c === pattern.slice(0, 15);
  return (p) => (p.exe !== "" && t(baseName(p.exe))) || commT(p.comm);
}

/** A cgroup glob matches the process's cgroup or any of its ancestors. */
function cgroupTest(pattern: string): (p: ProcessFacts) => boolean {
  const t = globTest(pattern.replace(/\/+$/, "") || "/");
  return (p) => {
    let path = p.cgroup;
    while (path) {
      if (t(path)) return true;
      const i = path.lastIndexOf("/");
      if (i <= 0) break;
      path = path.slice(0, i);
    }
    return false;
  };
}

function unitTest(unit: string): (p: ProcessFacts) => boolean {
  const name = /\.(service|scope|slice|socket)$/.test(unit) ? unit : `${unit}.service`;
  const t = globTest(name);
  return (p) => p.cgroup.split("/").some((seg) => t(seg));
}

function compileTarget(t: Target, index: number, defMode: Mode): CompiledTarget {
  const tests: ((p: ProcessFacts) => boolean)[] = [];
  if (t.pid !== undefined) tests.push((p) => p.pid === t.pid);
  if (t.exe !== undefined) tests.push(exeTest(t.exe));
  if (t.cmdline !== undefined) {
    const re = new RegExp(t.cmdline);
    tests.push((p) => re.test(p.cmdline));
  }
  if (t.systemd_unit !== undefined) tests.push(unitTest(t.systemd_unit));
  if (t.cgroup !== undefined) tests.push(cgroupTest(t.cgroup));
  if (t.container !== undefined) {
    const prefix = t.container.toLowerCase();
    tests.push((p) => containerIdOf(p.cgroup)?.startsWith(prefix) ?? false);
  }
  if (t.port !== undefined) tests.push((p) => p.ports.includes(t.port!));
  const onlyExe = t.exe !== undefined && !GLOB_CHARS.test(t.exe) &&
    t.pid === undefined && t.cmdline === undefined && t.systemd_unit === undefined &&
    t.cgroup === undefined && t.container === undefined && t.port === undefined;
  return {
    index,
    source: t,
    mode: t.mode ?? defMode,
    serviceName: t.service_name,
    test: (p) => tests.every((f) => f(p)),
    kernelExe: onlyExe ? t.exe : undefined,
    kernelPort: t.port !== undefined && t.exe === undefined && t.pid === undefined && t.cmdline === undefined &&
      t.systemd_unit === undefined && t.cgroup === undefined && t.container === undefined ? t.port : undefined,
    needsPorts: t.port !== undefined,
    needsCgroup: t.systemd_unit !== undefined || t.cgroup !== undefined || t.container !== undefined,
  };
}

/** Targets from the config, `capture.*` lists first (each entry its own target), then `targets`. */
export function compileRules(cfg: Config, extra: Target[] = []): Rules {
  const all: Target[] = [
    ...extra,
    ...cfg.capture.pids.map((pid) => ({ pid })),
    ...cfg.capture.exe.map((exe) => ({ exe })),
    ...cfg.capture.ports.map((port) => ({ port })),
    ...cfg.targets,
  ];
  return {
    captureAll: cfg.capture_all ? cfg.mode : undefined,
    mode: cfg.mode,
    exclude: new Set(cfg.exclude_processes),
    targets: all.map((t, i) => compileTarget(t, i, cfg.mode)),
    customAttributes: cfg.custom_span_attributes,
  };
}

export function isExcluded(rules: Rules, p: ProcessFacts): boolean {
  if (rules.exclude.size === 0) return false;
  return rules.exclude.has(p.comm) || (p.exe !== "" && rules.exclude.has(baseName(p.exe))) || rules.exclude.has(p.exe);
}

export function decide(rules: Rules, p: ProcessFacts): Decision {
  if (isExcluded(rules, p)) return { selected: false, excluded: true };
  for (const t of rules.targets) if (t.test(p)) return { selected: true, excluded: false, mode: t.mode, target: t };
  if (rules.captureAll) return { selected: true, excluded: false, mode: rules.captureAll };
  return { selected: false, excluded: false };
}

/** What user space must hear from the kernel to apply these rules as processes come and go. */
export function kernelNeeds(rules: Rules): { execEvents: boolean; listenEvents: boolean; cgroups: boolean } {
  return {
    execEvents: rules.targets.some((t) => !t.kernelExe && t.source.pid === undefined) ,
    listenEvents: rules.targets.some((t) => t.needsPorts),
    cgroups: rules.targets.some((t) => t.needsCgroup),
  };
}

/** Service name for a selected process: target's, else its systemd unit, else undefined. */
export function serviceNameFor(d: Decision, p: ProcessFacts): string | undefined {
  if (d.target?.serviceName) return d.target.serviceName;
  const unit = systemdUnitOf(p.cgroup);
  if (unit && unit.endsWith(".service")) return unit.slice(0, -".service".length);
  return undefined;
}
