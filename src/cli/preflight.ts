/**
 * `ebpf-tracer check` and the start of `run`: can capture work on this host, and how. Each row
 * is ok / warn / fail with a reason; any fail means capture cannot work.
 */
import { analyzeElf } from "../kernel/tls/discover.ts";
import { ElfFile } from "../kernel/tls/elf.ts";
import { readLdCache, tlsLibraryCandidates } from "../kernel/tls/ldcache.ts";
import { existsSync, readFileSync } from "node:fs";
import { release } from "node:os";
import type { Config } from "../config/config.ts";
import { resolveBtf, type BtfResolution } from "../kernel/btf/resolve.ts";
import { effectiveCaps, missingCaps, hasCap } from "./privileges.ts";
import { loadLibbpf, libbpfVersion, probeMapType, probeUprobe } from "../kernel/libbpf-ffi.ts";
import { libbpfBytes } from "../kernel/embedded.ts";
import { chooseAttachMode, ensureTracefs, kprobesAvailable } from "../kernel/tracer.ts";
import { findCgroup2Root } from "../selection/cgroups.ts";
import { isTracerError } from "../errors.ts";

export type Verdict = "ok" | "warn" | "fail";
export interface CheckRow {
  check: string;
  verdict: Verdict;
  detail: string;
}

export interface PreflightResult {
  rows: CheckRow[];
  ok: boolean;
  btf?: BtfResolution;
}

function kernelRow(rel: string): CheckRow {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  const v = m ? Number(m[1]) * 1000 + Number(m[2]) : 0;
  if (v >= 5008) return { check: "kernel", verdict: "ok", detail: `${rel} (5.8+: ring buffer, CAP_BPF)` };
  if (v >= 4018) return { check: "kernel", verdict: "warn", detail: `${rel}: older than 5.8, perf buffers and CAP_SYS_ADMIN are needed` };
  return { check: "kernel", verdict: "fail", detail: `${rel}: eBPF capture needs at least 4.18` };
}

/**
 * The oldest glibc the binary runs on: the Bun runtime's floor, which scripts/build-libbpf.sh
 * holds the embedded libbpf to (it fails the build on any newer symbol version). On an older
 * glibc the dynamic loader refuses the binary before this code runs; this row reports the
 * version and catches a runtime that is not glibc at all.
 */
export const MIN_GLIBC = "2.17";

function glibcRuntime(): string | undefined {
  const report = (process as { report?: { getReport?: () => { header?: { glibcVersionRuntime?: string } } } }).report;
  return report?.getReport?.()?.header?.glibcVersionRuntime;
}

export function glibcRow(version: string | null = glibcRuntime() ?? null): CheckRow {
  if (!version) return { check: "glibc", verdict: "fail", detail: `not running on glibc: the binary needs glibc ${MIN_GLIBC} or newer` };
  const [maj = 0, min = 0] = version.split(".").map(Number);
  const [wantMaj = 0, wantMin = 0] = MIN_GLIBC.split(".").map(Number);
  if (maj > wantMaj || (maj === wantMaj && min >= wantMin)) return { check: "glibc", verdict: "ok", detail: `${version} (${MIN_GLIBC}+ needed)` };
  return { check: "glibc", verdict: "fail", detail: `glibc ${version} is too old: the binary needs glibc ${MIN_GLIBC} or newer` };
}

function lockdownRow(): CheckRow {
  let text = "";
  try {
    text = readFileSync("/sys/kernel/security/lockdown", "utf8");
  } catch {
    return { check: "lockdown", verdict: "ok", detail: "no lockdown LSM" };
  }
  const mode = /\[(\w+)\]/.exec(text)?.[1] ?? "unknown";
  if (mode === "confidentiality") return { check: "lockdown", verdict: "fail", detail: "lockdown=confidentiality forbids reading process memory from BPF" };
  return { check: "lockdown", verdict: mode === "none" ? "ok" : "warn", detail: `lockdown=${mode}` };
}

function capsRow(): CheckRow {
  const caps = effectiveCaps();
  const missing = missingCaps(caps);
  if (missing.length) return { check: "capabilities", verdict: "fail", detail: `missing ${missing.join(", ")}` };
  const extra = (["CAP_SYS_RESOURCE", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"] as const).filter((c) => !hasCap(caps, c) && !hasCap(caps, "CAP_SYS_ADMIN"));
  if (extra.length) return { check: "capabilities", verdict: "warn", detail: `missing ${extra.join(", ")}: process details of other users may be unreadable` };
  return { check: "capabilities", verdict: "ok", detail: hasCap(caps, "CAP_SYS_ADMIN") ? "CAP_SYS_ADMIN (root)" : "CAP_BPF, CAP_PERFMON and helpers" };
}

function cgroupRow(): CheckRow {
  const root = findCgroup2Root();
  if (!root) return { check: "cgroup", verdict: "warn", detail: "v1 only: unit/cgroup/container targets fall back to per-process matching" };
  return { check: "cgroup", verdict: "ok", detail: `v2 at ${root}${root.endsWith("/unified") ? " (hybrid)" : ""}` };
}

/** Uprobes for TLS plaintext: the kernel's uprobe PMU, the config switch, and the host's TLS
 * libraries (the loader cache's, classified by their exported symbols as the agent will). */
function uprobesRow(cfg: Config, libbpfLoaded: boolean): CheckRow {
  const PMU = "/sys/bus/event_source/devices/uprobe/type";
  if (!existsSync(PMU)) {
    return { check: "uprobes", verdict: "warn", detail: "not available (no uprobe PMU): TLS plaintext capture will not work" };
  }
  if (!cfg.enable_uprobes) return { check: "uprobes", verdict: "warn", detail: "available, but enable_uprobes is false: TLS connections are reported, not decrypted" };
  const libs: string[] = [];
  let trial: { path: string; symbol: string; offset: number } | undefined;
  try {
    for (const path of tlsLibraryCandidates(readLdCache(), cfg.libssl_prefixes)) {
      try {
        const elf = ElfFile.open(path);
        try {
          const st = analyzeElf(elf, false).stack;
          if (st) libs.push(`${path.slice(path.lastIndexOf("/") + 1)} (${st.kind}${st.decryptable ? "" : ", not decryptable"})`);
          const p = st?.decryptable ? st.probes.find((x) => x.offset > 0) : undefined;
          if (p && !trial) trial = { path, symbol: p.symbol, offset: p.offset };
        } finally {
          elf.close();
        }
      } catch {
        /* unreadable: not listed */
      }
    }
  } catch {
    /* no loader cache */
  }
  const found = `host TLS libraries: ${libs.length ? libs.join(", ") : "none in /etc/ld.so.cache"}`;
  // A uprobe made for real, on the first TLS function capture would probe, for this process only.
  if (trial && libbpfLoaded) {
    const r = probeUprobe(Number(readFileSync(PMU, "utf8").trim()), trial.path, trial.offset);
    if (r !== 0) return { check: "uprobes", verdict: "warn", detail: `the kernel refused a uprobe on ${trial.symbol} in ${trial.path} (errno ${-r}): TLS plaintext capture will not work; ${found}` };
    return { check: "uprobes", verdict: "ok", detail: `work (a uprobe on ${trial.symbol} in ${trial.path} was created and removed); ${found}` };
  }
  return { check: "uprobes", verdict: "ok", detail: `available (not tried: no TLS library to probe, or libbpf not loaded); ${found}` };
}

export async function preflight(cfg: Config): Promise<PreflightResult> {
  const rows: CheckRow[] = [];
  rows.push(kernelRow(release()));
  rows.push(glibcRow());
  rows.push(capsRow());
  rows.push(lockdownRow());
  let tracefs: string | undefined;
  try {
    tracefs = ensureTracefs();
    rows.push({ check: "tracefs", verdict: "ok", detail: tracefs });
  } catch (e) {
    rows.push({ check: "tracefs", verdict: "warn", detail: (e as Error).message });
  }
  let btf: BtfResolution | undefined;
  let libbpfLoaded = false;
  try {
    btf = await resolveBtf(cfg.btf);
    rows.push({ check: "BTF", verdict: "ok", detail: `${btf.source}${btf.path ? `: ${btf.path}` : ": /sys/kernel/btf/vmlinux"}` });
  } catch (e) {
    rows.push({ check: "BTF", verdict: "fail", detail: (e as Error).message });
  }
  try {
    const mode = chooseAttachMode(tracefs, cfg.enable_tracepoints);
    rows.push({ check: "attach mode", verdict: "ok", detail: mode === "tracepoints" ? "syscall tracepoints" : "kprobes on syscall functions" + (cfg.enable_tracepoints ? " (no syscall tracepoints)" : " (enable_tracepoints: false)") });
  } catch (e) {
    rows.push({ check: "attach mode", verdict: "fail", detail: isTracerError(e) ? e.message : String(e) });
  }
  try {
    loadLibbpf(await libbpfBytes());
    rows.push({ check: "libbpf", verdict: "ok", detail: `${libbpfVersion()} (embedded)` });
    libbpfLoaded = true;
    const ring = probeMapType(27) === 1;
    const forced = cfg.bpf.buffer;
    if (forced === "ringbuf" && !ring) rows.push({ check: "buffer", verdict: "fail", detail: "bpf.buffer: ringbuf but the kernel has no BPF ring buffer" });
    else rows.push({ check: "buffer", verdict: "ok", detail: ring && forced !== "perf" ? "BPF ring buffer" : `perf event array (${cfg.perfmap_queue_size} pages per CPU)${ring ? ", forced" : ""}` });
  } catch (e) {
    rows.push({ check: "libbpf", verdict: "fail", detail: (e as Error).message });
  }
  rows.push(uprobesRow(cfg, libbpfLoaded));
  rows.push({ check: "kprobes", verdict: kprobesAvailable(tracefs) ? "ok" : "warn", detail: kprobesAvailable(tracefs) ? "available" : "not available (CONFIG_KPROBES off): syscall tracepoints are required" });
  rows.push(cgroupRow());
  return { rows, ok: rows.every((r) => r.verdict !== "fail"), btf };
}

export function formatRows(rows: CheckRow[]): string {
  const w = Math.max(...rows.map((r) => r.check.length));
  return rows.map((r) => `${r.verdict.padEnd(4)}  ${r.check.padEnd(w)}  ${r.detail}`).join("\n");
}
