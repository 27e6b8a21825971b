/**
 * Structured logger: one line per record, JSON (default) or console encoding.
 * `msg` comes first so journal lines read naturally; fields follow as a JSON object.
 */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";
const ORDER: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };

export interface LogSink {
  write(line: string, level: LogLevel): void;
}

export const stderrSink: LogSink = {
  write(line) {
    process.stderr.write(line + "\n");
  },
};

export class Logger {
  private min: number;
  constructor(
    level: LogLevel = "info",
    private sink: LogSink = stderrSink,
    private encoding: "json" | "console" = "json",
  ) {
    this.min = ORDER[level];
  }
  setLevel(level: LogLevel): void {
    this.min = ORDER[level];
  }
  configure(level: LogLevel, encoding: "json" | "console", sink?: LogSink): void {
    this.min = ORDER[level];
    this.encoding = encoding;
    if (sink) this.sink = sink;
  }
  enabled(level: LogLevel): boolean {
    return ORDER[level] >= this.min;
  }
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (ORDER[level] < this.min) return;
    const ts = new Date().toISOString();
    let line: string;
    if (this.encoding === "json") {
      line = JSON.stringify({ ts, level, msg, ...fields }, jsonReplacer);
    } else {
      line = `${ts}\t${level.toUpperCase()}\t${msg}` + (fields ? `\t${JSON.stringify(fields, jsonReplacer)}` : "");
    }
    this.sink.write(line, level);
  }
  trace(msg: string, f?: Record<string, unknown>) { this.log("trace", msg, f); }
  debug(msg: string, f?: Record<string, unknown>) { this.log("debug", msg, f); }
  info(msg: string, f?: Record<string, unknown>) { this.log("info", msg, f); }
  warn(msg: string, f?: Record<string, unknown>) { this.log("warn", msg, f); }
  error(msg: string, f?: Record<string, unknown>) { this.log("error", msg, f); }
}

function jsonReplacer(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? v.toString() : v;
}

/** Process-wide logger; `main` configures it from the config file. */
export const log = new Logger();
