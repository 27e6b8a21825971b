/**
 * `ebpf-tracer config validate [-c FILE]`: loads FILE exactly as `run` would and prints
 * "ok: FILE" (exit 0) or the error naming file, key, line and reason (exit 78, EX_CONFIG).
 * Settings that load but will not do what was probably meant are printed as warnings (still 0).
 */
import { configFileWarningsFor, loadConfig, type Config } from "../config/config.ts";
import { EXIT_STATUS, isTracerError } from "../errors.ts";

export function configWarnings(cfg: Config): string[] {
  const w: string[] = [];
  if (cfg.exporter === "otlp" && cfg.agent_config.reporting.endpoint === "") {
    w.push(`exporter is otlp but agent_config.reporting.endpoint is empty: "run" will refuse to start`);
  }
  const sel = cfg.capture;
  if (!cfg.capture_all && !sel.pids.length && !sel.exe.length && !sel.ports.length && !cfg.targets.length) {
    w.push("nothing is selected for capture (capture.pids/exe/ports, targets or capture_all)");
  }
  if (cfg.admin.enabled && !/^(127\.|\[?::1\]?:|localhost:)/.test(cfg.admin.address)) {
    w.push(`admin.address ${cfg.admin.address} is not loopback: /status and /metrics are reachable from the network (with the bearer token)`);
  }
  w.push(...configFileWarningsFor(cfg));
  return w;
}

export function configValidateCommand(path: string): number {
  let cfg: Config;
  try {
    cfg = loadConfig(path);
  } catch (e) {
    const msg = isTracerError(e) ? e.message : `${path}: ${(e as Error)?.message ?? String(e)}`;
    process.stderr.write(`ebpf-tracer: ${msg}\n`);
    return EXIT_STATUS.CONFIG;
  }
  for (const w of configWarnings(cfg)) process.stderr.write(`warning: ${w}\n`);
  process.stdout.write(`ok: ${path}\n`);
  return 0;
}
