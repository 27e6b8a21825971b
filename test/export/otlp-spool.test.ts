/**
 * The on-disk spool: file format checks, a collector that is down while spans flow, restart,
 * the size bound, torn/corrupt files, a disabled spool. Real receiver, real files.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { validateConfig, type Config } from "../../src/config/config.ts";
import type { Span } from "../../src/spans/span.ts";
import { OtlpExporter } from "../../src/export/otlp/exporter.ts";
import { decodeSpoolFile, encodeSpoolFile, Spool, SPOOL_HEADER_BYTES, spoolFileName } from "../../src/export/otlp/spool.ts";
import type { EncodedBatch } from "../../src/export/otlp/batch.ts";
import type { TestCerts } from "../support/certs.ts";
import { OtlpBed, captureLog } from "../support/otlp-bed.ts";
import { OtlpReceiver } from "../support/otlp-receiver.ts";

let bed: OtlpBed;
let certs: TestCerts;
let rx: OtlpReceiver;

beforeAll(async () => {
  bed = await OtlpBed.start();
  ({ certs, rx } = bed);
});
afterAll(() => bed.close());

const newDir = (): string => bed.tempDir();
const capture = captureLog;

function config(spoolPath: string, reporting: Record<string, unknown> = {}, maxMb = 8): Config {
  return validateConfig({
    agent_config: {
      ca_cert_file: certs.ca.cert,
      reporting: { endpoint: rx.endpoint, max_batch_spans: 5, max_batch_delay: "20ms", request_timeout: "1s", ...reporting },
    },
    spool: { path: spoolPath, max_size_mb: maxMb },
  }, "", "");
}

const FAST = { backoff: { initialMs: 50, maxMs: 250 } };
let nextId = 1;

function makeSpan(extra: Record<string, string | number> = {}): Span {
  const n = nextId++;
  return {
    traceId: n.toString(16).padStart(32, "0"), spanId: n.toString(16).padStart(16, "0"), name: `GET /x/${n}`, kind: "server",
    startTimeUnixNano: 1_700_000_000_000_000_000n, endTimeUnixNano: 1_700_000_000_100_000_000n, error: false,
    attributes: { "seq.index": n, "http.status_code": 200, ...extra },
    resource: { "service.name": "spool-test", "host.name": "h" },
  };
}

const ids = (spans: Span[]) => new Set(spans.map((s) => s.spanId));
const arrived = (sent: Span[]) => { const want = ids(sent); return rx.spans.filter((s) => want.has(s.spanId)); };
const spoolFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith(".otlp")).sort();

function randomText(bytes: number): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("base64").slice(0, bytes);
}

describe("spool file format", () => {
  const batch: EncodedBatch = { seq: 42, spans: 7, body: new Uint8Array([1, 2, 3, 4, 5]), encoding: "json", compression: "gzip", createdMs: 1_700_000_000_123 };

  test("round trip keeps every field", () => {
    const file = encodeSpoolFile(batch);
    expect(file.length).toBe(SPOOL_HEADER_BYTES + 5);
    expect(file.toString("latin1", 0, 8)).toBe("EBTSPOOL");
    expect(decodeSpoolFile(file, 42)).toEqual(batch);
    for (const compression of ["none", "gzip", "zstd"] as const) {
      expect(decodeSpoolFile(encodeSpoolFile({ ...batch, compression }), 42)).toEqual({ ...batch, compression });
    }
  });

  test("the compression flags: bit 0 gzip, as every earlier version wrote it; bit 1 zstd", () => {
    expect(encodeSpoolFile(batch)[10]).toBe(1);
    expect(encodeSpoolFile({ ...batch, compression: "zstd" })[10]).toBe(2);
    expect(encodeSpoolFile({ ...batch, compression: "none" })[10]).toBe(0);
  });

  test("truncation, a flipped bit anywhere, or a bad magic are detected", () => {
    const file = encodeSpoolFile(batch);
    expect(decodeSpoolFile(file.subarray(0, file.length - 1), 42)).toMatch(/torn/);
    expect(decodeSpoolFile(file.subarray(0, 10), 42)).toMatch(/truncated header/);
    for (let i = 0; i < file.length; i++) {
      const bad = Buffer.from(file);
      bad[i]! ^= 0x10;
      expect(typeof decodeSpoolFile(bad, 42)).toBe("string");
    }
  });

  test("names sort in sequence order", () => {
    expect(spoolFileName(9) < spoolFileName(10)).toBe(true);
    expect(spoolFileName(1_700_000_000_000_000)).toBe("1700000000000000.otlp");
  });

  test("an unusable spool dir fails setup with a clear message", () => {
    const file = join(newDir(), "not-a-dir");
    writeFileSync(file, "x");
    expect(() => new Spool(join(file, "sub"), 1 << 20, capture().logger, { dropped() {}, corrupt() {} }).open())
      .toThrow(/spool.path .*cannot create/);
  });
});

describe("spool writes off the event loop", () => {
  test("append returns at once; the batch is served from memory until its file is durable, then from disk", async () => {
    const dir = newDir();
    const events = { dropped: 0 };
    const sp = new Spool(dir, 1 << 20, capture().logger, { dropped: (n) => { events.dropped += n; }, corrupt() {} });
    sp.open();
    const b: EncodedBatch = { seq: 7, spans: 3, body: new Uint8Array([1, 2, 3, 4]), encoding: "protobuf", compression: "gzip", createdMs: 1 };
    expect(sp.append(b)).toBe(true);
    const e = sp.head()!;
    expect(sp.read(e)).toBe(b); // not yet on disk: no read from a half-written file
    await sp.flushWrites();
    expect(spoolFiles(dir)).toEqual([spoolFileName(7)]);
    const again = new Spool(dir, 1 << 20, capture().logger, { dropped() {}, corrupt() {} });
    again.open();
    expect(again.read(again.head()!)?.body).toEqual(b.body);
    // removed while being written: the file does not outlive the write
    const b2 = { ...b, seq: 8 } as EncodedBatch;
    sp.append(b2);
    sp.remove(sp.entries.find((x) => x.seq === 8)!);
    await sp.flushWrites();
    expect(spoolFiles(dir)).toEqual([spoolFileName(7)]);
    expect(events.dropped).toBe(0);
  });
});

describe("collector down", () => {
  test("down for ~2.5 s while spans flow: every span arrives exactly once and in order", async () => {
    const dir = newDir();
    const log = capture();
    const ex = new OtlpExporter(config(dir, { max_in_flight: 1, max_queue_spans: 10 }), { logger: log.logger, ...FAST });
    const sent: Span[] = [];
    const emit = (n: number) => { for (let i = 0; i < n; i++) { const s = makeSpan(); sent.push(s); ex.export(s); } };
    emit(10);
    await rx.waitFor(() => arrived(sent).length === 10, 3000, "first spans");
    await rx.down();
    for (let t = 0; t < 25; t++) { emit(4); await Bun.sleep(100); }
    expect(ex.stats().SpansSpooled).toBeGreaterThan(0);
    expect(spoolFiles(dir).length).toBeGreaterThan(0);
    expect(ex.stats().ExportErrorsNetwork).toBeGreaterThan(0);
    expect(log.find(/failed: ECONNREFUSED/).length).toBe(1);
    await rx.up();
    emit(10);
    await rx.waitFor(() => arrived(sent).length >= sent.length, 10_000, "all spans after the outage");
    await ex.shutdown(2000);
    const got = arrived(sent);
    expect(got.length).toBe(sent.length);
    expect(rx.duplicateSpanIds()).toEqual([]);
    const order = got.map((s) => Number((s.attributes["seq.index"] as { intValue: string }).intValue));
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(spoolFiles(dir)).toEqual([]);
    expect(ex.stats().SpansDropped).toBe(0);
  });

  test("the spool survives a restart: a new exporter sends what the old one spooled, once", async () => {
    const dir = newDir();
    await rx.down();
    const first = new OtlpExporter(config(dir, { max_queue_spans: 5 }), { logger: capture().logger, ...FAST });
    const sent = Array.from({ length: 23 }, () => makeSpan());
    for (const s of sent) first.export(s);
    await first.shutdown(300);
    expect(first.stats().SpansSpooled).toBe(23);
    expect(spoolFiles(dir).length).toBe(5);
    expect(readdirSync(dir).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    await rx.up();
    const log = capture();
    const second = new OtlpExporter(config(dir, { max_in_flight: 1 }), { logger: log.logger, ...FAST }); // 1: strict order
    expect(log.find(/previous run/)[0]).toMatchObject({ batches: 5, spans: 23 });
    const later = [makeSpan(), makeSpan()];
    for (const s of later) second.export(s);
    await rx.waitFor(() => arrived([...sent, ...later]).length === 25, 5000, "spooled + new spans");
    await second.shutdown(1000);
    expect(rx.duplicateSpanIds()).toEqual([]);
    const got = arrived([...sent, ...later]).map((s) => s.spanId);
    expect(got.slice(0, 23)).toEqual(sent.map((s) => s.spanId)); // spooled ones first, in order
    expect(spoolFiles(dir)).toEqual([]);
  });

  test("past spool.max_size_mb the oldest batches are dropped and counted; the newest are kept", async () => {
    const dir = newDir();
    await rx.down();
    const log = capture();
    const cfg = config(dir, { max_batch_spans: 1, max_queue_spans: 1, compression: "none" }, 1);
    const ex = new OtlpExporter(cfg, { logger: log.logger, ...FAST });
    const sent = Array.from({ length: 14 }, () => makeSpan({ "http.request.body": randomText(100_000) }));
    for (const s of sent) ex.export(s);
    await ex.shutdown(200);
    const st = ex.stats();
    const kept = spoolFiles(dir).length;
    expect(kept).toBeGreaterThanOrEqual(8);
    expect(kept).toBeLessThanOrEqual(10);
    expect(st.SpansDropped).toBe(14 - kept);
    expect(st.SpoolBytes).toBeLessThanOrEqual(1024 * 1024);
    expect(log.find(/spool: full/).length).toBeGreaterThanOrEqual(1);
    await rx.up();
    const again = new OtlpExporter(config(dir, { max_in_flight: 1 }, 1), { logger: capture().logger, ...FAST });
    await rx.waitFor(() => arrived(sent).length === kept, 5000, "the kept batches");
    await again.shutdown(1000);
    expect(arrived(sent).map((s) => s.spanId)).toEqual(sent.slice(14 - kept).map((s) => s.spanId));
  });

  test("torn, corrupt and foreign spool files are skipped with a log line; the good ones are sent", async () => {
    const dir = newDir();
    await rx.down();
    const ex = new OtlpExporter(config(dir, { max_queue_spans: 1 }), { logger: capture().logger, ...FAST });
    const sent = Array.from({ length: 20 }, () => makeSpan());
    for (const s of sent) ex.export(s);
    await ex.shutdown(200);
    const files = spoolFiles(dir);
    expect(files.length).toBe(4);
    truncateSync(join(dir, files[0]!), 40); // torn (power loss)
    const bad = readFileSync(join(dir, files[2]!));
    bad[bad.length - 3]! ^= 0xff; // corrupt body
    writeFileSync(join(dir, files[2]!), bad);
    writeFileSync(join(dir, "0000000000000001.otlp"), "garbage that is not a spool file");
    writeFileSync(join(dir, ".0000000000000002.otlp.tmp"), "half-written");
    mkdirSync(join(dir, "unrelated"));
    await rx.up();
    const log = capture();
    const again = new OtlpExporter(config(dir), { logger: log.logger, ...FAST });
    const good = [...sent.slice(5, 10), ...sent.slice(15, 20)];
    await rx.waitFor(() => arrived(good).length === 10, 5000, "the good batches");
    await again.shutdown(1000);
    expect(arrived(sent).length).toBe(10);
    const skipped = log.find(/corrupt or torn/);
    const reasons = skipped.map((l) => String(l.reason)).sort();
    expect(reasons.length).toBe(3);
    expect(reasons[0]).toBe("bad magic");
    expect(reasons[1]).toBe("checksum mismatch");
    expect(reasons[2]).toMatch(/^torn file: 40 bytes, header says \d+$/);
    expect(again.stats().SpoolFilesCorrupt).toBe(3);
    expect(again.stats().SpansDropped).toBe(10);
    expect(existsSync(join(dir, ".0000000000000002.otlp.tmp"))).toBe(false);
    expect(spoolFiles(dir)).toEqual([]);
  });

  test("spool disabled (max_size_mb: 0): overflow is dropped and counted, no files", async () => {
    const dir = join(newDir(), "never-created");
    await rx.down();
    const ex = new OtlpExporter(config(dir, { max_queue_spans: 5 }, 0), { logger: capture().logger, ...FAST });
    for (let i = 0; i < 20; i++) ex.export(makeSpan());
    await ex.shutdown(200);
    expect(ex.stats().SpansDropped).toBe(20);
    expect(ex.stats().SpansSpooled).toBe(0);
    expect(existsSync(dir)).toBe(false);
    await rx.up();
  });
});
