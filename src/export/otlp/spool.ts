/**
 * On-disk spool of encoded OTLP batches (the exact request bodies, already gzipped when the
 * exporter gzips), one file per batch, named by its sequence number so that a directory listing
 * gives the sending order, also after a restart.
 *
 * File `<seq, 16 digits>.otlp` = 32-byte header + body, little-endian:
 *   0  "EBTSPOOL" magic      8  version (1)     9  encoding (0 protobuf, 1 json)
 *   10 flags (bit 0 gzip, bit 1 zstd)    11 signal (0 traces, 1 metrics)    12 span count u32
 *   16 created, unix ms f64  24 body length u32 28 CRC-32 of the whole file with this field zeroed
 * Written as `.<name>.tmp`, fsynced, renamed, directory fsynced: a power loss leaves either the
 * old state or a complete file. A file whose size, magic or checksum is wrong is logged and
 * deleted, never sent. Bounded by `maxBytes` (file sizes): the oldest batches are dropped first.
 */
import { promises as fsp } from "node:fs";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { TracerError } from "../../errors.ts";
import type { Logger } from "../../log/log.ts";
import type { Compression, EncodedBatch } from "./batch.ts";

const SPOOL_MAGIC = "EBTSPOOL";
export const SPOOL_HEADER_BYTES = 32;
const NAME_RE = /^(\d{16})\.otlp$/;

export interface SpoolEntry {
  seq: number;
  spans: number;
  /** file size */
  bytes: number;
  path: string;
  /** being sent: not dropped by the bound, not handed out again */
  inFlight: boolean;
  /** the batch itself while its file is still being written (read() serves it from memory) */
  pending?: EncodedBatch;
  /** removed while its write was in progress: the file is deleted once written */
  removed?: boolean;
}

export interface SpoolEvents {
  /** spans lost from the spool (bound or corruption) */
  dropped(spans: number): void;
  corrupt(): void;
}

export function spoolFileName(seq: number): string {
  return `${String(seq).padStart(16, "0")}.otlp`;
}

export function encodeSpoolFile(b: EncodedBatch): Buffer {
  const file = Buffer.alloc(SPOOL_HEADER_BYTES + b.body.length);
  file.write(SPOOL_MAGIC, 0, "latin1");
  file[8] = 1;
  file[9] = b.encoding === "json" ? 1 : 0;
  file[10] = b.compression === "gzip" ? 1 : b.compression === "zstd" ? 2 : 0;
  file[11] = b.signal === "metrics" ? 1 : 0;
  file.writeUInt32LE(b.spans, 12);
  file.writeDoubleLE(b.createdMs, 16);
  file.writeUInt32LE(b.body.length, 24);
  file.set(b.body, SPOOL_HEADER_BYTES);
  file.writeUInt32LE(Bun.hash.crc32(file) >>> 0, 28);
  return file;
}

interface Header {
  spans: number;
  bodyLength: number;
}

/** Header fields, or the reason it cannot be trusted. */
function readHeader(h: Buffer): Header | string {
  if (h.length < SPOOL_HEADER_BYTES) return `truncated header (${h.length} bytes)`;
  if (h.toString("latin1", 0, 8) !== SPOOL_MAGIC) return "bad magic";
  if (h[8] !== 1) return `unknown version ${h[8]}`;
  return { spans: h.readUInt32LE(12), bodyLength: h.readUInt32LE(24) };
}

/** Byte 10's compression: bit 0 gzip (what every version wrote), bit 1 zstd. */
function compressionOf(flags: number): Compression {
  return flags & 2 ? "zstd" : flags & 1 ? "gzip" : "none";
}

/** Parses and verifies a whole spool file. */
export function decodeSpoolFile(file: Buffer, seq: number): EncodedBatch | string {
  const h = readHeader(file);
  if (typeof h === "string") return h;
  if (file.length !== SPOOL_HEADER_BYTES + h.bodyLength) {
    return `torn file: ${file.length} bytes, header says ${SPOOL_HEADER_BYTES + h.bodyLength}`;
  }
  const stored = file.readUInt32LE(28);
  const copy = Buffer.from(file);
  copy.writeUInt32LE(0, 28);
  if ((Bun.hash.crc32(copy) >>> 0) !== stored) return "checksum mismatch";
  return {
    seq, spans: h.spans, encoding: file[9] === 1 ? "json" : "protobuf", compression: compressionOf(file[10]!),
    createdMs: file.readDoubleLE(16), body: new Uint8Array(file.subarray(SPOOL_HEADER_BYTES)),
    ...(file[11] === 1 ? { signal: "metrics" as const } : {}),
  };
}

export class Spool {
  /** sorted by seq */
  readonly entries: SpoolEntry[] = [];
  totalBytes = 0;
  private dropLogs = 0;

  constructor(
    readonly dir: string,
    private maxBytes: number,
    private readonly log: Logger,
    private readonly events: SpoolEvents,
  ) {}

  get enabled(): boolean {
    return this.maxBytes > 0;
  }

  get spans(): number {
    let n = 0;
    for (const e of this.entries) n += e.spans;
    return n;
  }

  setMaxBytes(n: number): void {
    this.maxBytes = n;
  }

  maxSeq(): number {
    return this.entries.length ? this.entries[this.entries.length - 1]!.seq : 0;
  }

  /** Creates the directory and indexes the files left by a previous run (headers only). */
  open(): void {
    if (!this.enabled) return;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new TracerError("IO", `spool.path ${this.dir}: cannot create: ${(e as NodeJS.ErrnoException).code ?? e} (set spool.max_size_mb: 0 to run without a spool)`);
    }
    for (const name of readdirSync(this.dir).sort()) {
      if (name.endsWith(".tmp")) this.unlinkQuietly(join(this.dir, name));
      const m = NAME_RE.exec(name);
      if (m) this.indexFile(Number(m[1]), join(this.dir, name));
    }
    if (this.entries.length) {
      this.log.info("spool: batches from a previous run will be sent first", { dir: this.dir, batches: this.entries.length, spans: this.spans, bytes: this.totalBytes });
    }
  }

  private indexFile(seq: number, path: string): void {
    try {
      const size = statSync(path).size;
      const head = Buffer.alloc(SPOOL_HEADER_BYTES);
      const fd = openSync(path, "r");
      let n = 0;
      try {
        n = readSync(fd, head, 0, SPOOL_HEADER_BYTES, 0);
      } finally {
        closeSync(fd);
      }
      const h = readHeader(head.subarray(0, n));
      if (typeof h === "string") return this.discard(path, h, 0);
      if (size !== SPOOL_HEADER_BYTES + h.bodyLength) {
        return this.discard(path, `torn file: ${size} bytes, header says ${SPOOL_HEADER_BYTES + h.bodyLength}`, h.spans);
      }
      this.insert({ seq, spans: h.spans, bytes: size, path, inFlight: false });
    } catch (e) {
      this.discard(path, `unreadable: ${(e as NodeJS.ErrnoException).code ?? e}`, 0);
    }
  }

  private discard(path: string, reason: string, spans: number): void {
    this.log.warn("spool: skipping a corrupt or torn spool file", { file: path, reason, spans });
    this.events.corrupt();
    if (spans) this.events.dropped(spans);
    this.unlinkQuietly(path);
  }

  private insert(e: SpoolEntry): void {
    let i = this.entries.length;
    while (i > 0 && this.entries[i - 1]!.seq > e.seq) i--;
    this.entries.splice(i, 0, e);
    this.totalBytes += e.bytes;
  }

  /** Writes a batch durably; drops the oldest batches past the bound. false = not stored. */
  append(b: EncodedBatch): boolean {
    if (!this.enabled) return false;
    const size = SPOOL_HEADER_BYTES + b.body.length;
    if (size > this.maxBytes) {
      this.logDrop("spool: batch larger than spool.max_size_mb, dropped", b.spans);
      return false;
    }
    if (!this.makeRoom(size, b.seq)) {
      this.logDrop("spool: full (spool.max_size_mb), dropped the oldest batch", b.spans);
      return false;
    }
    const path = join(this.dir, spoolFileName(b.seq));
    const entry: SpoolEntry = { seq: b.seq, spans: b.spans, bytes: size, path, inFlight: false, pending: b };
    this.insert(entry);
    // The durable write (two fsyncs) runs on the thread pool, one file at a time, so the event
    // loop that drains the ring never waits for the disk. Until it is written the batch is
    // served from memory; shutdown waits for the chain (flushWrites).
    this.writes = this.writes.then(() => this.writeEntry(entry, b));
    return true;
  }

  private writes: Promise<void> = Promise.resolve();

  private async writeEntry(e: SpoolEntry, b: EncodedBatch): Promise<void> {
    if (e.removed) return;
    try {
      await writeDurablyAsync(this.dir, e.path, encodeSpoolFile(b));
    } catch (err) {
      this.log.error("spool: cannot write batch", { file: e.path, error: (err as NodeJS.ErrnoException).code ?? String(err), spans: b.spans });
      if (!e.removed) {
        this.forget(e);
        this.events.dropped(e.spans);
      }
      return;
    }
    e.pending = undefined;
    if (e.removed) this.unlinkQuietly(e.path);
  }

  /** Resolves when every batch appended so far is on disk (or failed and was counted). */
  flushWrites(): Promise<void> {
    return this.writes;
  }

  /** Drops the oldest batches until `size` fits; false when the new batch (seq) is itself the oldest. */
  private makeRoom(size: number, seq: number): boolean {
    while (this.totalBytes + size > this.maxBytes) {
      const victim = this.entries.find((e) => !e.inFlight);
      if (!victim) return true; // only batches being sent: they leave soon
      if (victim.seq > seq) return false;
      this.remove(victim);
      this.events.dropped(victim.spans);
      this.logDrop("spool: full (spool.max_size_mb), dropped the oldest batch", victim.spans);
    }
    return true;
  }

  private logDrop(msg: string, spans: number): void {
    if (this.dropLogs++ % 100 === 0) this.log.warn(msg, { dir: this.dir, spans, maxBytes: this.maxBytes, drops: this.dropLogs });
  }

  /** Oldest entry not being sent. */
  head(): SpoolEntry | undefined {
    return this.entries.find((e) => !e.inFlight);
  }

  /** Reads and verifies an entry; a bad file is logged, deleted and undefined returned. */
  read(e: SpoolEntry): EncodedBatch | undefined {
    if (e.pending) return e.pending;
    let file: Buffer;
    try {
      file = readFileSync(e.path);
    } catch (err) {
      this.forget(e);
      this.discard(e.path, `unreadable: ${(err as NodeJS.ErrnoException).code ?? err}`, e.spans);
      return undefined;
    }
    const b = decodeSpoolFile(file, e.seq);
    if (typeof b === "string") {
      this.forget(e);
      this.discard(e.path, b, e.spans);
      return undefined;
    }
    return b;
  }

  private forget(e: SpoolEntry): void {
    const i = this.entries.indexOf(e);
    if (i < 0) return;
    this.entries.splice(i, 1);
    this.totalBytes -= e.bytes;
  }

  /** Deletes an entry's file (sent, or dropped by the caller). */
  remove(e: SpoolEntry): void {
    this.forget(e);
    if (e.pending) e.removed = true;
    else this.unlinkQuietly(e.path);
  }

  private unlinkQuietly(path: string): void {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  }
}

/** temp file + fsync + rename + directory fsync, off the event loop */
async function writeDurablyAsync(dir: string, path: string, data: Uint8Array): Promise<void> {
  const tmp = join(dir, `.${path.slice(dir.length + 1)}.tmp`);
  const fh = await fsp.open(tmp, "w", 0o600);
  try {
    let off = 0;
    while (off < data.length) off += (await fh.write(data, off, data.length - off)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, path);
  try {
    const dh = await fsp.open(dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // some filesystems refuse directory fsync; the rename is still atomic
  }
}
