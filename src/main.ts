#!/usr/bin/env bun
/**
 * Entry point: the command line. Only this file maps errors to exit statuses (errors.ts).
 */
import { Command, Option } from "commander";
import { appendFileSync, writeFileSync } from "node:fs";
import pkg from "../package.json" with { type: "json" };
import { DEFAULT_CONFIG_PATH, defaultConfig, loadConfig, type Config } from "./config.ts";
import { EXIT_STATUS, TracerError, isTracerError } from "./errors.ts";
import { log, type LogLevel } from "./log.ts";
import { requireCaptureCaps } from "./privileges.ts";
import { Agent } from "./agent.ts";
import { ConsoleSink } from "./console-sink.ts";
import { MODES, type Mode } from "./config-schema.ts";
import type { SpanSink } from "./span.ts";
import { createSink } from "./exporter-factory.ts";

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

async function cmdRun(opts: { config: string }): Promise<void> {
  const cfg = loadConfig(opts.config);
  configure(cfg);
  requireCaptureCaps();
  log.info("config", { file: cfg.source, mode: cfg.mode, exporter: cfg.exporter, capture: cfg.capture });
  const sink = createSink(cfg);
  const agent = await Agent.start({
    cfg,
    sink,
    selection: { pids: cfg.capture.pids, exe: cfg.capture.exe, ports: cfg.capture.ports, mode: cfg.mode },
  });
  await runUntilSignal(agent, cfg.shutdown_timeout);
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
}

async function cmdCapture(o: CaptureOpts): Promise<void> {
  const cfg = o.config ? loadConfig(o.config) : defaultConfig();
  configure(cfg, o.logLevel ?? (o.config ? undefined : "warn"));
  if (!o.pid.length && !o.exe.length && !o.port.length && !cfg.capture.pids.length && !cfg.capture.exe.length && !cfg.capture.ports.length) {
    throw new TracerError("CONFIG", "capture: select something to capture with --pid, --exe or --port");
  }
  requireCaptureCaps();
  const sink: SpanSink = new ConsoleSink(!!o.json);
  let record: ((f: Uint8Array) => void) | undefined;
  if (o.record) {
    writeFileSync(o.record, new Uint8Array(0));
    const path = o.record;
    record = (f) => appendFileSync(path, f);
  }
  const agent = await Agent.start({
    cfg,
    sink,
    record,
    selection: {
      pids: [...cfg.capture.pids, ...o.pid],
      exe: [...cfg.capture.exe, ...o.exe],
      ports: [...cfg.capture.ports, ...o.port],
      mode: o.mode ?? cfg.mode,
    },
  });
  process.stderr.write(`capturing (Ctrl-C to stop)\n`);
  await runUntilSignal(agent, 1000);
  if (log.enabled("info")) agent.logStats();
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
    .action(cmdCapture);
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
    return 0;
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
