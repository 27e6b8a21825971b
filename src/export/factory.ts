/**
 * Chooses the span sink from `exporter`: `otlp` (OtlpExporter, needs
 * agent_config.reporting.endpoint), `stdout`, or `file:PATH` (StdoutExporter), always behind a
 * RedactingSink (data_capture.redact): no span reaches an exporter unredacted. Throws TracerError
 * during setup; the sinks themselves never throw from export().
 */
import type { Config } from "../config/config.ts";
import { TracerError } from "../errors.ts";
import type { Logger } from "../log/log.ts";
import type { SpanSink } from "../spans/span.ts";
import { RedactingSink } from "../spans/redact.ts";
import { OtlpExporter, type OtlpExporterOptions } from "./otlp/exporter.ts";
import { StdoutExporter } from "./stdout.ts";

export interface SinkOptions extends OtlpExporterOptions {
  logger?: Logger;
}

export function createSink(cfg: Config, opts: SinkOptions = {}): SpanSink {
  return RedactingSink.fromConfig(createExporter(cfg, opts), cfg);
}

/** The exporter alone, without redaction: for callers that put their own stages in front of it
 * and a RedactingSink in front of those (cli/main.ts). */
export function createExporter(cfg: Config, opts: SinkOptions = {}): SpanSink {
  const e = cfg.exporter;
  if (e === "otlp") return new OtlpExporter(cfg, opts);
  if (e === "stdout") return new StdoutExporter({ kind: "stdout" }, opts.logger);
  if (e.startsWith("file:") && e.length > 5) return new StdoutExporter({ kind: "file", path: e.slice(5) }, opts.logger);
  throw new TracerError("CONFIG", `key "exporter": must be otlp, stdout or file:PATH, got "${e}"`, { key: "exporter" });
}

/** True for sinks that can re-read their settings on SIGHUP (see OtlpExporter.update). */
export function isReloadable(sink: SpanSink): sink is SpanSink & { update(cfg: Config): void } {
  return typeof (sink as { update?: unknown }).update === "function";
}
