#!/usr/bin/env bun
/**
 * Entry point: the command line. Only this file maps errors to exit statuses (errors.ts).
 */
import { Command, Option } from "commander";
import { readFileSync, watch, type FSWatcher } from "node:fs";
import { basename, dirname } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { configFileWarningsFor, DEFAULT_CONFIG_PATH, defaultConfig, loadConfig, type Config, type Target } from "../config/config.ts";
import { resolveBtf } from "../kernel/btf/resolve.ts";
import { formatRows, preflight } from "./preflight.ts";
import { EXIT_STATUS, TracerError, isTracerError } from "../errors.ts";
import { log, type LogLevel } from "../log/log.ts";
import { requireCaptureCaps } from "./privileges.ts";
import { Agent } from "../agent/agent.ts";
import { formatSpanLine } from "../export/console-line.ts";
import { StdoutExporter } from "../export/stdout.ts";
import { MODES, type Mode } from "../config/schema.ts";
import type { SpanSink } from "../spans/span.ts";
import { createExporter, isReloadable } from "../export/factory.ts";
import { createLogSink, type ClosableLogSink } from "../log/output.ts";
import { agentStatusProvider, startAdminServer, type AdminServer } from "./admin-server.ts";
import { statusCommand } from "./status-command.ts";
import { probesCommand } from "./probes-command.ts";
import { configValidateCommand } from "./config-validate-command.ts";
import { notifyReady, notifyReloading, notifyStopping } from "./sd-notify.ts";
import { Recorder } from "../kernel/event-source.ts";
import { ApiTap } from "../metrics/tap.ts";
import { topCommand, type TopOptions } from "./top.ts";
import { apisCommand, type ApisOptions } from "./apis.ts";
import { RedactingSink } from "../spans/redact.ts";

function collectInt(v: string, prev: number[]): number[] {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new TracerError("CONFIG", `not a positive whole number: ${v}`);
  return [...prev, n];
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

function configure(cfg: Config, level?: string): void {
  log.configure((level as LogLevel) ?? cfg.logging.level, cfg.logging.encoding);
}

/** `run` only: logging.output_paths / error_output_paths / log_rotation (src/log-output.ts). */
let logSink: ClosableLogSink | undefined;
function configureRunLogging(cfg: Config): void {
  const next = createLogSink(cfg.logging); // throws CONFIG when a log file cannot be opened
  log.configure(cfg.logging.level, cfg.logging.encoding, next);
  logSink?.close();
  logSink = next;
}

/** Runs until SIGINT/SIGTERM, then stops capture and flushes the sink. */
async function runUntilSignal(agent: Agent, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info("stopping", { signal: sig });
      resolve();
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
  await agent.stop(timeoutMs);
}

/** Finds BTF for this kernel (kernel, config path, bundled, downloaded) or throws UNSUPPORTED. */
async function btfFor(cfg: Config): Promise<{ path?: string; source: string }> {
  const r = await resolveBtf(cfg.btf);
  return { path: r.path, source: r.source };
}

/**
 * Re-reads the config on SIGHUP and when the file changes. A config that fails validation is
 * rejected with a log line and the running one stays in force.
 */
function watchConfig(path: string, agent: Agent, tap: ApiTap): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastText = safeRead(path);
  const reload = (why: string) => {
    let cfg: Config;
    try {
      cfg = loadConfig(path);
    } catch (e) {
      log.error("new config rejected; keeping the running one", { reason: (e as Error).message, trigger: why });
      return;
    }
    lastText = safeRead(path);
    try {
      configureRunLogging(cfg);
      let sink: SpanSink | undefined;
      if (cfg.exporter !== agentExporter) {
        // A new exporter behind the same redaction and route/metrics stage (its state is kept).
        const old = tap.swap(createExporter(cfg));
        void old.shutdown(cfg.shutdown_timeout);
        agentExporter = cfg.exporter;
        if (isReloadable(agent.sink)) agent.sink.update(cfg);
      } else if (isReloadable(agent.sink)) {
        agent.sink.update(cfg);
      }
      agent.reload(cfg, sink);
    } catch (e) {
      log.error("config reload failed; keeping the running one", { reason: (e as Error).message, trigger: why });
    }
  };
  let agentExporter = agent.currentConfig.exporter;
  const onHup = () => {
    void notifyReloading().then(() => {
      reload("SIGHUP");
      return notifyReady(`capturing: ${agent.selector.selected().length} processes selected`);
    });
  };
  process.on("SIGHUP", onHup);
  let watcher: FSWatcher | undefined;
  try {
    // Watch the directory: editors and config managers replace the file rather than write it.
    watcher = watch(dirname(path), (_ev, name) => {
      if (name !== basename(path)) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (safeRead(path) !== lastText) reload("file changed");
      }, 300);
    });
  } catch {
    log.warn("cannot watch the config file; reload with SIGHUP", { file: path });
  }
  return () => {
    process.off("SIGHUP", onHup);
    watcher?.close();
    clearTimeout(timer);
  };
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

async function cmdCheck(opts: { config?: string }): Promise<void> {
  const cfg = opts.config ? loadConfig(opts.config) : defaultConfig();
  log.configure("warn", "console");
  const r = await preflight(cfg);
  process.stdout.write(formatRows(r.rows) + "\n");
  for (const w of configFileWarningsFor(cfg)) process.stdout.write(`warning: ${w}\n`);
  process.stdout.write(r.ok ? "capture can work on this host\n" : "capture cannot work on this host\n");
  if (!r.ok) process.exitCode = EXIT_STATUS.UNSUPPORTED;
}

/** The same checks as `check`, logged as one line; throws when capture cannot work. */
async function preflightOrThrow(cfg: Config): Promise<{ path?: string; source: string }> {
  requireCaptureCaps();
  const r = await preflight(cfg);
  log.info("preflight", Object.fromEntries(r.rows.map((x) => [x.check, `${x.verdict}: ${x.detail}`])));
  const failed = r.rows.filter((x) => x.verdict === "fail");
  if (failed.length || !r.btf) {
    throw new TracerError("UNSUPPORTED", `capture cannot work on this host: ${failed.map((x) => `${x.check}: ${x.detail}`).join("; ")}`);
  }
  return { path: r.btf.path, source: r.btf.source };
}

async function cmdRun(opts: { config: string }): Promise<void> {
  const cfg = loadConfig(opts.config);
  configureRunLogging(cfg);
  requireCaptureCaps();
  log.info("config", { file: cfg.source, config: maskSecrets(cfg) });
  for (const w of configFileWarningsFor(cfg)) log.warn("config file readable by others", { reason: w });
  // Redaction first, so the route/metrics stage and the API inventory only ever see redacted
  // spans (and whether redaction fired); then the exporter.
  const tap = new ApiTap(createExporter(cfg), cfg, { inventory: true });
  const sink = RedactingSink.fromConfig(tap, cfg);
  const btf = await preflightOrThrow(cfg);
  const agent = await Agent.start({ cfg, sink, btfCustomPath: btf.path, btfSource: btf.source });
  let admin: AdminServer | undefined;
  if (cfg.admin.enabled) {
    try {
      admin = startAdminServer(cfg.admin.address, agentStatusProvider(agent, { version: pkg.version, btfSource: btf.source, btfPath: btf.path, extraMetrics: () => tap.prometheus() }), {
        allowRemote: cfg.admin.allow_remote,
        bearerToken: cfg.admin.bearer_token,
      });
      log.info("admin endpoint", { url: admin.url });
    } catch (e) {
      // Capture matters more than the admin endpoint: run without it.
      log.error("admin endpoint not started", { reason: (e as Error).message });
    }
  }
  const unwatch = watchConfig(opts.config, agent, tap);
  const ready = await notifyReady(`capturing: ${agent.selector.selected().length} processes selected, ${agent.kernel.attachMode}, BTF ${btf.source}`);
  if (!ready.sent && process.env.NOTIFY_SOCKET) log.warn("could not notify systemd (READY=1)", { reason: ready.reason });
  agent.releaseStartupPages();
  await runUntilSignal(agent, cfg.shutdown_timeout);
  agent.logStats();
  await notifyStopping();
  unwatch();
  admin?.stop();
  logSink?.close();
}

/** The effective config for the log, with secrets replaced. */
export function maskSecrets(cfg: Config): Config {
  const c = structuredClone(cfg);
  if (c.agent_config.reporting.agent_token) c.agent_config.reporting.agent_token = "****";
  if (c.admin.bearer_token) c.admin.bearer_token = "****";
  for (const k of Object.keys(c.agent_config.reporting.headers)) c.agent_config.reporting.headers[k] = "****";
  return c;
}

interface CaptureOpts {
  config?: string;
  pid: number[];
  exe: string[];
  port: number[];
  mode?: Mode;
  json?: boolean;
  record?: string;
  logLevel?: string;
  /** false with --no-redact: raw values on this terminal only (run always redacts) */
  redact: boolean;
}

async function cmdCapture(o: CaptureOpts): Promise<void> {
  const cfg = o.config ? loadConfig(o.config) : defaultConfig();
  configure(cfg, o.logLevel ?? (o.config ? undefined : "warn"));
  const mode = o.mode ?? cfg.mode;
  const extraTargets: Target[] = [
    ...o.pid.map((pid) => ({ pid, mode })),
    ...o.exe.map((exe) => ({ exe, mode })),
    ...o.port.map((port) => ({ port, mode })),
  ];
  if (!extraTargets.length && !cfg.capture.pids.length && !cfg.capture.exe.length && !cfg.capture.ports.length && !cfg.targets.length && !cfg.capture_all) {
    throw new TracerError("CONFIG", "capture: select something to capture with --pid, --exe or --port (or targets in -c FILE)");
  }
  requireCaptureCaps();
  const out: SpanSink = o.json ? new StdoutExporter({ kind: "stdout" }) : new StdoutExporter({ kind: "stdout" }, log, formatSpanLine);
  const tap = new ApiTap(out, cfg);
  const sink = o.redact === false ? tap : RedactingSink.fromConfig(tap, cfg);
  if (o.redact === false) process.stderr.write("warning: --no-redact: secrets (tokens, cookies, passwords) are printed as captured\n");
  const recorder = o.record ? new Recorder(o.record) : undefined;
  const btf = await btfFor(cfg);
  const agent = await Agent.start({ cfg, sink, record: recorder?.write, extraTargets, btfCustomPath: btf.path, btfSource: btf.source });
  // Ctrl-C should feel instant: the kernel's per-probe detach cost is paid after we exit.
  agent.kernel.closeInBackground = true;
  process.stderr.write(`capturing (Ctrl-C to stop)\n`);
  agent.releaseStartupPages();
  await runUntilSignal(agent, 1000);
  await recorder?.end();
  if (log.enabled("info")) agent.logStats();
}

/** The admin address (and token) `status` and `probes` ask; undefined when the endpoint is disabled (exit 3 set). */
function adminTarget(o: { config: string; address?: string }): { address: string; token?: string } | undefined {
  if (o.address) {
    let token: string | undefined;
    try {
      token = loadConfig(o.config, true).admin.bearer_token || undefined;
    } catch {
      /* an unreadable config only means no token: the address was given */
    }
    return { address: o.address, token };
  }
  const cfg = loadConfig(o.config, true);
  if (!cfg.admin.enabled) {
    process.stdout.write(`ebpf-tracer: admin endpoint disabled in ${o.config} (admin.enabled: false); try systemctl status ebpf-tracer\n`);
    process.exitCode = 3;
    return undefined;
  }
  return { address: cfg.admin.address, token: cfg.admin.bearer_token || undefined };
}

export function buildCli(): Command {
  const program = new Command();
  program.name("ebpf-tracer").description("Captures HTTP API calls of selected processes with eBPF and exports them as spans").version(pkg.version, "-v, --version");
  program
    .command("run")
    .description("run the agent (the systemd service)")
    .option("-c, --config <file>", "config file (YAML, or TOML by extension)", DEFAULT_CONFIG_PATH)
    .action(cmdRun);
  program
    .command("capture")
    .description("print API calls of the selected processes as they complete, until Ctrl-C")
    .option("-c, --config <file>", "config file for other settings (btf, data_capture, ...)")
    .option("--pid <pid>", "capture this process and its children (repeatable)", collectInt, [])
    .option("--exe <name>", "capture processes running this executable, by file name or path, including ones started later (repeatable)", collect, [])
    .option("--port <port>", "capture processes listening on this TCP port (repeatable)", collectInt, [])
    .addOption(new Option("--mode <mode>", "which side of connections to capture").choices(MODES as unknown as string[]))
    .option("--json", "one JSON object per line instead of readable lines")
    .option("--record <file>", "also write the raw kernel events to FILE (for bench/replay)")
    .option("--log-level <level>", "log level on stderr (default warn)")
    .option("--no-redact", "print secrets (headers, query/body fields, command lines) as captured, on this terminal only")
    .action(cmdCapture);
  program
    .command("check")
    .description("preflight: can capture work on this host, and how (exit 0 yes, 69 no)")
    .option("-c, --config <file>", "config file (its btf: and attach settings apply)")
    .action(cmdCheck);
  program
    .command("status")
    .description("ask the running agent how it is (exit 0 healthy, 1 degraded, 3 not running)")
    .option("-c, --config <file>", "config file whose admin.address to ask", DEFAULT_CONFIG_PATH)
    .option("--address <host:port>", "admin endpoint address (overrides the config)")
    .action(async (o: { config: string; address?: string }) => {
      const target = adminTarget(o);
      if (!target) return;
      process.exitCode = await statusCommand(target.address, 3000, target.token);
    });
  program
    .command("probes")
    .description("list the BPF programs a running agent attached (exit 0, 3 not running)")
    .option("-c, --config <file>", "config file whose admin.address to ask", DEFAULT_CONFIG_PATH)
    .option("--address <host:port>", "admin endpoint address (overrides the config)")
    .option("--json", "JSON instead of a table")
    .action(async (o: { config: string; address?: string; json?: boolean }) => {
      const target = adminTarget(o);
      if (!target) return;
      process.exitCode = await probesCommand(target.address, { json: o.json, token: target.token });
    });
  program
    .command("config")
    .description("config file tools")
    .command("validate")
    .description("check a config file (exit 0 ok, 78 not)")
    .option("-c, --config <file>", "config file", DEFAULT_CONFIG_PATH)
    .action((o: { config: string }) => {
      process.exitCode = configValidateCommand(o.config);
    });
  program
    .command("top")
    .description("live view per route (rate, errors, latency, bytes) from the running agent, or capturing by itself with --exe/--pid/--port")
    .option("-c, --config <file>", "config file whose admin.address to ask", DEFAULT_CONFIG_PATH)
    .option("--address <host:port>", "admin endpoint address (overrides the config)")
    .option("--interval <duration>", "refresh period", "1s")
    .option("--sort <key>", "r rate, e errors, 5 p50, 9 p95, p p99, t total, b bytes, n route", "t")
    .option("-n, --iterations <n>", "stop after n refreshes")
    .option("--pid <pid>", "standalone: capture this process (repeatable)", collectInt, [])
    .option("--exe <name>", "standalone: capture processes running this executable (repeatable)", collect, [])
    .option("--port <port>", "standalone: capture processes listening on this port (repeatable)", collectInt, [])
    .action(async (o: TopOptions) => {
      process.exitCode = await topCommand(o);
    });
  program
    .command("apis")
    .description("the API inventory: every route seen since the agent first ran (table, or --json)")
    .option("-c, --config <file>", "config file whose metrics.inventory_path to read", DEFAULT_CONFIG_PATH)
    .option("--file <path>", "inventory file (overrides the config)")
    .option("--json", "JSON array instead of a table")
    .option("--new-since <duration>", "only endpoints first seen within this long (30m, 2h, 7d)")
    .action((o: ApisOptions) => {
      process.exitCode = apisCommand(o);
    });
  program
    .command("version")
    .description("print the version")
    .action(() => console.log(`ebpf-tracer ${pkg.version}`));
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli().exitOverride((e) => {
      throw e;
    }).parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    const ce = e as { code?: string; exitCode?: number };
    if (typeof ce.code === "string" && ce.code.startsWith("commander.")) {
      return ce.code === "commander.helpDisplayed" || ce.code === "commander.version" ? 0 : 2;
    }
    if (isTracerError(e)) {
      process.stderr.write(`ebpf-tracer: ${e.message}\n`);
      return EXIT_STATUS[e.code];
    }
    process.stderr.write(`ebpf-tracer: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    return EXIT_STATUS.INTERNAL;
  }
}

if (import.meta.main) {
  const code = await main(process.argv);
  process.exit(code);
}
