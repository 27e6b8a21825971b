/**
 * A SpanSink writing one JSON line per span (`jsonLine`: spanToJson's object) to stdout
 * (`exporter: stdout`) or appending to a file (`exporter: file:PATH`). Lines are encoded as they
 * come into one reused buffer, written at 64 KiB or every 200 ms, and on shutdown (no per-flush
 * string join and Buffer: they were 7 % of capture's profile). A failing write is counted and
 * logged once, never thrown.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { TracerError } from "../errors.ts";
import { log as defaultLog, type Logger } from "../log/log.ts";
import { nanosToIso, type Attributes, type Span, type SpanSink } from "../spans/span.ts";
import { writeUtf8 } from "./utf8-write.ts";

const FLUSH_BYTES = 64 * 1024;

/**
 * The JSON line of `capture --json` and the stdout/file exporters: exactly
 * JSON.stringify(spanToJson(span)), put together from parts. The resource (one frozen object per
 * process, shared by its spans) is stringified once per object instead of once per span, and no
 * intermediate object is built; together they were a sixth of capture's CPU profile.
 */
export function jsonLine(span: Span): string {
  lineParts(span);
  return parts.head + parts.attributes + parts.shared + RESOURCE_KEY + parts.resource + "}";
}
const RESOURCE_KEY = ',"resource":';

/**
 * The line in four strings, as jsonLine joins them: the head up to `"attributes":`, the span's
 * own attributes as a JSON object (without its closing brace when shared ones follow), the
 * shared attributes (Span.shared) as the rest of that object (`,"k":v,…}`, stringified once per
 * shared object, or "" when there are none), the resource object. The exporter encodes them into its buffer one by one:
 * joined, they are a string JSC keeps as a rope and copies once more to encode (~300 ns of a
 * 1.6 KB line). Valid until the next call; throws what JSON.stringify throws, before any part
 * changes the output.
 */
function lineParts(span: Span): void {
  const resource = jsonOnce(resourceJson, span.resource, WHOLE);
  let attributes = JSON.stringify(span.attributes);
  let shared = "";
  if (span.shared !== undefined) {
    shared = jsonOnce(sharedJson, span.shared, AFTER_COMMA);
    // "{}" + `,"k":v}` must not keep the comma; an empty shared object adds nothing
    if (shared === "}") shared = "";
    else if (attributes.length === 2) {
      attributes = "{";
      shared = shared.slice(1);
    } else attributes = attributes.slice(0, -1);
  }
  // Ids are lower-case hex and the kind one of two words (Span's contract), and a duration is a
  // finite number (String gives what JSON.stringify gives): none needs escaping.
  parts.head =
    '{"name":' + JSON.stringify(span.name) +
    (span.kind === "server" ? ',"kind":"server","traceId":"' : ',"kind":"client","traceId":"') + span.traceId +
    '","spanId":"' + span.spanId +
    (span.parentSpanId ? '","parentSpanId":"' + span.parentSpanId : "") +
    '","start":"' + nanosToIso(span.startTimeUnixNano) +
    '","durationMs":' + String(Number(span.endTimeUnixNano - span.startTimeUnixNano) / 1e6) +
    ',"error":' + (span.error ? "true" : "false") +
    ',"attributes":';
  parts.attributes = attributes;
  parts.shared = shared;
  parts.resource = resource;
}
const parts = { head: "", attributes: "", shared: "", resource: "" };
/**
 * JSON.stringify(obj) through `form`, once per frozen object (the resource a process's spans
 * share, a connection's shared attributes); an object that is not frozen may change and is
 * stringified each time.
 */
function jsonOnce(cache: WeakMap<Attributes, string>, obj: Attributes, form: (json: string) => string): string {
  let j = cache.get(obj);
  if (j === undefined) {
    j = form(JSON.stringify(obj));
    if (Object.isFrozen(obj)) cache.set(obj, j);
  }
  return j;
}
const WHOLE = (json: string) => json;
/** The object's members after a comma, and its closing brace: `,"k":v,…}` ("}" when empty). */
const AFTER_COMMA = (json: string) => (json.length === 2 ? "}" : "," + json.slice(1));
const resourceJson = new WeakMap<Attributes, string>();
const sharedJson = new WeakMap<Attributes, string>();
const FLUSH_MS = 200;

export type LineTarget = { kind: "stdout" } | { kind: "file"; path: string };

export class StdoutExporter implements SpanSink {
  private fd: number;
  private readonly ownsFd: boolean;
  /** encoded lines waiting to be written: out[0, outLen), `pending` of them */
  private out = Buffer.allocUnsafe(2 * FLUSH_BYTES);
  private outLen = 0;
  private pending = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private writeErrorLogged = false;
  private readonly c = { SpansWritten: 0, SpansDropped: 0, WriteErrors: 0 };
  /** the JSON format: lines are encoded in parts (lineParts) */
  private readonly json: boolean;

  /**
   * Throws TracerError when the file cannot be opened for appending. `format` turns a span into
   * its line (without the newline): JSON by default; `capture` passes the readable form.
   */
  constructor(
    readonly target: LineTarget = { kind: "stdout" },
    private readonly log: Logger = defaultLog,
    private readonly format: (span: Span) => string = jsonLine,
  ) {
    this.json = format === jsonLine;
    if (target.kind === "stdout") {
      this.fd = 1;
      this.ownsFd = false;
      return;
    }
    try {
      this.fd = openSync(target.path, "a", 0o640);
    } catch (e) {
      throw new TracerError("CONFIG", `key "exporter": cannot open ${target.path} for appending: ${(e as NodeJS.ErrnoException).code ?? e}`, { key: "exporter", file: target.path });
    }
    this.ownsFd = true;
  }

  export(span: Span): void {
    if (this.closed) {
      this.c.SpansDropped++;
      return;
    }
    const json = this.json;
    let line = "";
    try {
      if (json) lineParts(span);
      else line = this.format(span) + "\n";
    } catch (e) {
      this.c.SpansDropped++;
      return;
    }
    // room for the worst case (3 bytes per UTF-16 unit): a line larger than the buffer grows it
    const most = 3 * (json ? parts.head.length + parts.attributes.length + parts.shared.length + parts.resource.length + RESOURCE_KEY.length + 2 : line.length);
    if (this.outLen + most > this.out.length) {
      this.flush();
      if (most > this.out.length) this.out = Buffer.allocUnsafe(most);
    }
    if (json) {
      const out = this.out;
      let n = this.outLen;
      n += writeUtf8(out, parts.head, n);
      n += writeUtf8(out, parts.attributes, n);
      if (parts.shared.length) n += writeUtf8(out, parts.shared, n);
      n += writeUtf8(out, RESOURCE_KEY, n);
      n += writeUtf8(out, parts.resource, n);
      out[n++] = 0x7d; // }
      out[n++] = 0x0a;
      this.outLen = n;
    } else {
      this.outLen += writeUtf8(this.out, line, this.outLen);
    }
    this.pending++;
    this.c.SpansWritten++;
    if (this.outLen >= FLUSH_BYTES) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref?.();
    }
  }

  /** Writes the buffered lines now. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.outLen === 0) return;
    const len = this.outLen;
    const lines = this.pending;
    this.outLen = 0;
    this.pending = 0;
    try {
      let off = 0;
      while (off < len) off += writeSync(this.fd, this.out, off, len - off);
    } catch (e) {
      this.c.WriteErrors++;
      this.c.SpansWritten -= lines;
      this.c.SpansDropped += lines;
      if (!this.writeErrorLogged) {
        this.writeErrorLogged = true;
        this.log.error("span output: write failed, spans dropped", { target: this.describe(), error: (e as NodeJS.ErrnoException).code ?? String(e) });
      }
    }
  }

  async shutdown(_timeoutMs: number): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.ownsFd) {
      try {
        closeSync(this.fd);
      } catch {
        // nothing to do
      }
    }
  }

  /** SpansWritten, SpansDropped, WriteErrors */
  stats(): Record<string, number> {
    return { ...this.c };
  }

  private describe(): string {
    return this.target.kind === "stdout" ? "stdout" : this.target.path;
  }
}
