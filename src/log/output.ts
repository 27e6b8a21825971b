/**
 * Where log lines go (config `logging:`): `output_paths` (stdout, stderr or file paths),
 * `error_output_paths` (error-level lines go there too; a destination listed in both gets the
 * line once), and with `log_rotation.enabled` a size-rotated file `filepath/filename`:
 * when the next line would take it past `max_size` MB it is renamed to `filename.1`, `.1` to `.2`
 * … and the oldest beyond `max_backups` is deleted (max_backups 0: no backups are kept).
 *
 * Writes are synchronous (one write(2) per line, O_APPEND) so that lines are never reordered or
 * lost in a crash; the agent logs a few lines a minute, not per event. A file that cannot be
 * opened at start is a config error (TracerError CONFIG, names the key); a write or rotation that
 * fails later is reported once on stderr and that destination falls back to stderr.
 */
import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { TracerError } from "../errors.ts";
import type { LogLevel, LogSink } from "./log.ts";

export interface LoggingOutputConfig {
  output_paths: string[];
  error_output_paths: string[];
  log_rotation: { enabled: boolean; filename: string; filepath: string; max_size: number; max_backups: number };
}

/** A LogSink that owns open files: close() them at exit, reopen() after an outside rotation (SIGHUP). */
export interface ClosableLogSink extends LogSink {
  close(): void;
  reopen(): void;
}

interface Destination {
  write(data: string): void;
  close(): void;
  reopen(): void;
}

const MB = 1024 * 1024;

class StdStream implements Destination {
  constructor(private readonly which: "stdout" | "stderr") {}
  write(data: string): void {
    (this.which === "stdout" ? process.stdout : process.stderr).write(data);
  }
  close(): void {}
  reopen(): void {}
}

/** An appended file, optionally rotated by size. */
export class LogFile implements Destination {
  private fd = -1;
  private size = 0;
  private failed = false;

  constructor(
    readonly path: string,
    /** rotate when the file would grow past this many bytes; 0 = never */
    private readonly maxBytes = 0,
    private readonly maxBackups = 0,
    private readonly key = "logging.output_paths",
  ) {
    this.open(true);
  }

  private open(atStart: boolean): void {
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o750 });
      this.fd = openSync(this.path, "a", 0o640);
      this.size = fstatSync(this.fd).size;
    } catch (e) {
      this.fd = -1;
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (atStart) throw new TracerError("CONFIG", `key "${this.key}": cannot open log file ${this.path}: ${code}`, { key: this.key });
      this.fail(`cannot open log file ${this.path}: ${code}`);
    }
  }

  write(data: string): void {
    if (this.fd < 0) {
      if (!this.failed) this.open(false);
      if (this.fd < 0) {
        process.stderr.write(data);
        return;
      }
    }
    const bytes = Buffer.byteLength(data);
    if (this.maxBytes > 0 && this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    try {
      writeSync(this.fd, data);
      this.size += bytes;
    } catch (e) {
      this.fail(`cannot write log file ${this.path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      process.stderr.write(data);
    }
  }

  /** tracer.log → tracer.log.1 → … → tracer.log.N; the one past max_backups is deleted. */
  rotate(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
    this.fd = -1;
    let ok = true;
    try {
      rmSync(`${this.path}.${this.maxBackups}`, { force: true });
      for (let i = this.maxBackups - 1; i >= 1; i--) {
        try {
          renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
        }
      }
      if (this.maxBackups > 0) renameSync(this.path, `${this.path}.1`);
      else rmSync(this.path, { force: true });
    } catch (e) {
      // Keep logging into the same file rather than losing lines; try again after another max_size.
      ok = false;
      process.stderr.write(`ebpf-tracer: log rotation of ${this.path} failed: ${(e as NodeJS.ErrnoException).code ?? String(e)}\n`);
    }
    this.open(false);
    if (!ok) this.size = 0;
  }

  private fail(msg: string): void {
    if (!this.failed) process.stderr.write(`ebpf-tracer: ${msg}; logging to stderr instead\n`);
    this.failed = true;
  }

  close(): void {
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        /* ignore */
      }
    }
    this.fd = -1;
  }

  reopen(): void {
    this.close();
    this.failed = false;
    this.open(false);
  }
}

/**
 * Builds the sink for `cfg.logging`. Throws TracerError (CONFIG) when a log file cannot be opened.
 * Pass the result to `log.configure(level, encoding, sink)`.
 */
export function createLogSink(cfg: LoggingOutputConfig): ClosableLogSink {
  const byName = new Map<string, Destination>();
  const opened: Destination[] = [];
  const get = (name: string, key: string): Destination => {
    const id = name === "stdout" || name === "stderr" ? name : resolve(name);
    let d = byName.get(id);
    if (!d) {
      try {
        d = id === "stdout" || id === "stderr" ? new StdStream(id) : new LogFile(id, 0, 0, key);
      } catch (e) {
        for (const o of opened) o.close();
        throw e;
      }
      byName.set(id, d);
      opened.push(d);
    }
    return d;
  };
  const normal = new Set<Destination>();
  for (const p of cfg.output_paths) normal.add(get(p, "logging.output_paths"));
  const rot = cfg.log_rotation;
  if (rot.enabled) {
    const path = resolve(join(rot.filepath, rot.filename));
    if (byName.has(path)) byName.get(path)!.close();
    let f: LogFile;
    try {
      f = new LogFile(path, rot.max_size * MB, rot.max_backups, "logging.log_rotation.filepath");
    } catch (e) {
      for (const o of opened) o.close();
      throw e;
    }
    const prev = byName.get(path);
    if (prev) normal.delete(prev);
    byName.set(path, f);
    opened.push(f);
    normal.add(f);
  }
  const errors = new Set<Destination>(normal);
  for (const p of cfg.error_output_paths) errors.add(get(p, "logging.error_output_paths"));
  const normalList = [...normal];
  const errorList = [...errors];
  return {
    write(line: string, level: LogLevel): void {
      const data = line + "\n";
      for (const d of level === "error" ? errorList : normalList) d.write(data);
    },
    close(): void {
      for (const d of opened) d.close();
    },
    reopen(): void {
      for (const d of new Set([...normalList, ...errorList])) d.reopen();
    },
  };
}
