/**
 * The OTLP/HTTP span exporter (SpanSink). Spans are batched (max_batch_spans or max_batch_delay),
 * each batch encoded once and numbered (`seq`). Batches wait in a bounded memory queue; past
 * max_queue_spans the oldest go to the on-disk spool. Sending always takes the lowest seq first,
 * from the spool or the memory queue, with at most max_in_flight requests.
 *
 * A retryable failure keeps its batch in its slot and retries it with backoff (or Retry-After);
 * while any batch waits for a retry no new batch is started, so a down collector sees one probe at
 * a time and everything else queues, then spools. Each batch is in exactly one place (memory queue,
 * a request, or the spool), so it is sent once; a spooled batch's file is deleted only after the
 * collector accepted it (a crash in between may send it again: at-least-once across crashes).
 * See docs/exporter.md.
 */
import type { Config } from "../../config/config.ts";
import { log as defaultLog, type Logger } from "../../log/log.ts";
import type { Span, SpanSink } from "../../spans/span.ts";
import { asGzip, compress, OpenBatch, type Compression, type EncodedBatch } from "./batch.ts";
import { isLoopbackHost } from "./endpoint.ts";
import { DEFAULT_BACKOFF, retryDelay, type BackoffPolicy } from "./retry.ts";
import { sendBatch, type SendOutcome } from "./send.ts";
import { settingsFromConfig, type OtlpSettings } from "./settings.ts";
import { Spool, type SpoolEntry } from "./spool.ts";
import { newCounters, type OtlpCounters } from "./stats.ts";
import { Transport } from "./transport.ts";
import { encodeMetricsProto } from "./metrics-encode.ts";
import type { RedSnapshot } from "../../metrics/red.ts";

export interface OtlpExporterOptions {
  /** default: the process logger */
  logger?: Logger;
  /** retry timing; tests use short intervals */
  backoff?: Partial<BackoffPolicy>;
  random?: () => number;
}

interface Flight {
  batch: EncodedBatch;
  spoolEntry?: SpoolEntry;
  attempt: number;
  abort?: AbortController;
  retryTimer?: ReturnType<typeof setTimeout>;
  retryAt: number;
  abandoned: boolean;
  /** the status with which the collector refused this batch as zstd, before it went as gzip */
  zstdStatus?: number;
}

type RetryOutcome = Extract<SendOutcome, { type: "retry" }>;

export class OtlpExporter implements SpanSink {
  private s: OtlpSettings;
  private transport: Transport;
  private readonly spool: Spool;
  private readonly log: Logger;
  private readonly backoff: BackoffPolicy;
  private readonly random: () => number;
  private readonly c: OtlpCounters = newCounters();
  private open: OpenBatch;
  private openTimer: ReturnType<typeof setTimeout> | undefined;
  private queue: EncodedBatch[] = [];
  private queueSpans = 0;
  private readonly flights = new Set<Flight>();
  private waiting = 0;
  private seq: number;
  /** reason last logged; "" = healthy or reset by update() */
  private failureKey = "";
  private failing = false;
  /** the collector refused a zstd body and took the same batch as gzip (reset by a reload
   * that changes the compression) */
  private zstdRefused = false;
  private noSpoolDrops = 0;
  private metricBatches = { enqueued: 0, sent: 0, dropped: 0 };
  private closing = false;
  private closed = false;
  private deadline = 0;
  private wakeShutdown: (() => void) | undefined;
  private shutdownPromise: Promise<void> | undefined;

  /** Throws TracerError for a bad endpoint, unreadable TLS files or an unusable spool dir. */
  constructor(cfg: Config, opts: OtlpExporterOptions = {}) {
    this.log = opts.logger ?? defaultLog;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.random = opts.random ?? Math.random;
    this.s = settingsFromConfig(cfg);
    this.open = this.newOpenBatch();
    this.warnIfPlaintext();
    this.spool = new Spool(this.s.spoolDir, this.s.spoolMaxBytes, this.log, {
      dropped: (n) => { this.c.SpansDropped += n; },
      corrupt: () => { this.c.SpoolFilesCorrupt++; },
    });
    this.spool.open();
    this.seq = Math.max(this.spool.maxSeq(), Date.now() * 1000) + 1;
    this.transport = this.newTransport();
    this.log.info("otlp exporter ready", {
      endpoint: this.s.endpoint.origin + this.s.endpoint.path, encoding: this.s.encoding, compression: this.s.compression,
      spool: this.spool.enabled ? this.s.spoolDir : "disabled",
    });
    this.pump();
  }

  /** Queues one span; never throws, never blocks. */
  export(span: Span): void {
    if (this.closed) {
      this.c.SpansDropped++;
      return;
    }
    try {
      this.open.add(span);
    } catch (e) {
      this.c.SpansDropped++;
      this.log.error("otlp exporter: cannot encode a span, dropped", { error: String(e), name: span.name });
      return;
    }
    if (this.open.count >= this.s.maxBatchSpans) this.seal();
    else if (!this.openTimer && !this.closing) {
      this.openTimer = setTimeout(() => this.seal(), this.s.maxBatchDelayMs);
      this.openTimer.unref?.();
    }
  }

  /**
   * Queues the RED metrics as one ExportMetricsServiceRequest (protobuf, gzipped like spans) to
   * POST <endpoint>/v1/metrics, through the same queue, retries and spool as span batches; an
   * older metrics batch still in the memory queue is replaced (cumulative values). Never throws.
   */
  exportMetrics(snap: RedSnapshot): void {
    if (this.closed) {
      this.metricBatches.dropped++;
      return;
    }
    try {
      const { body, points } = encodeMetricsProto(snap);
      if (points === 0) return;
      const compression = this.compression();
      const packed = compress(body, compression);
      // Metrics are cumulative: a newer snapshot supersedes one still waiting in memory, so a
      // collector that is down does not make them pile up.
      this.queue = this.queue.filter((b) => b.signal !== "metrics");
      this.queue.push({ seq: this.seq++, spans: 0, body: packed, encoding: "protobuf", compression, createdMs: Date.now(), signal: "metrics" });
      this.metricBatches.enqueued++;
      this.enforceQueueBound();
      this.pump();
    } catch (e) {
      this.metricBatches.dropped++;
      this.log.error("otlp exporter: cannot encode metrics, dropped", { error: String(e) });
    }
  }

  /** Counters and gauges; see OtlpCounters and docs/exporter.md. */
  stats(): Record<string, number> {
    let flying = 0;
    for (const f of this.flights) if (!f.spoolEntry) flying += f.batch.spans;
    return {
      ...this.c,
      SpansQueued: this.open.count + this.queueSpans + flying,
      SpoolSpans: this.spool.spans,
      SpoolBytes: this.spool.totalBytes,
      InFlightRequests: this.flights.size - this.waiting,
      MetricBatchesEnqueued: this.metricBatches.enqueued,
      MetricBatchesSent: this.metricBatches.sent,
      MetricBatchesDropped: this.metricBatches.dropped,
    };
  }

  /**
   * Applies a reloaded config (SIGHUP): endpoint, headers, limits, and the CA/cert/key files are
   * read again and the connection pool rebuilt. Throws TracerError (and changes nothing) when the
   * new settings are unusable. Batches waiting for a retry are retried at once.
   */
  update(cfg: Config): void {
    if (this.closing) return;
    const next = settingsFromConfig(cfg);
    if (next.spoolDir !== this.s.spoolDir) {
      this.log.warn("spool.path changed: takes effect after a restart", { current: this.s.spoolDir, configured: next.spoolDir });
      next.spoolDir = this.s.spoolDir;
    }
    const old = this.transport;
    // spans already in the open batch were encoded with the old settings: they go as they are
    if (next.encoding !== this.s.encoding || next.compression !== this.s.compression || next.fallbackService !== this.s.fallbackService) {
      this.sealNow();
      this.open = this.newOpenBatch(next);
    }
    // another compression setting or another collector: zstd is tried again as configured
    if (next.compression !== this.s.compression || next.endpoint.origin !== this.s.endpoint.origin) this.zstdRefused = false;
    this.s = next;
    this.warnIfPlaintext();
    this.spool.setMaxBytes(next.spoolMaxBytes);
    this.transport = this.newTransport();
    void old.close();
    this.failureKey = "";
    this.log.info("otlp exporter settings reloaded", { endpoint: next.endpoint.origin + next.endpoint.path, tlsFiles: next.tlsFiles });
    for (const f of this.flights) if (f.retryTimer) this.retryNow(f);
    if (this.open.count >= this.s.maxBatchSpans) this.seal();
    this.enforceQueueBound();
    this.pump();
  }

  /** Alias of update() for the reload path that only re-reads the TLS files. */
  reloadTls(cfg: Config): void {
    this.update(cfg);
  }

  /**
   * Flushes what is queued until `timeoutMs`, then spools the rest (requests still open are
   * aborted and their batches spooled) and closes the connections. Resolves, never rejects.
   */
  shutdown(timeoutMs: number): Promise<void> {
    this.shutdownPromise ??= this.runShutdown(timeoutMs);
    return this.shutdownPromise;
  }

  private async runShutdown(timeoutMs: number): Promise<void> {
    this.closing = true;
    this.deadline = Date.now() + timeoutMs;
    this.seal();
    if (this.spool.head() || this.waiting > 0) this.spoolQueue();
    this.pump();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, timeoutMs));
      this.wakeShutdown = () => {
        clearTimeout(timer);
        resolve();
      };
      this.checkDrained();
    });
    this.wakeShutdown = undefined;
    await this.finishShutdown();
  }

  private async finishShutdown(): Promise<void> {
    this.closed = true;
    this.sealNow();
    const flights = [...this.flights].sort((a, b) => a.batch.seq - b.batch.seq);
    this.flights.clear();
    this.waiting = 0;
    for (const f of flights) {
      f.abandoned = true;
      if (f.retryTimer) clearTimeout(f.retryTimer);
      f.abort?.abort(new Error("exporter shutting down"));
      if (f.spoolEntry) f.spoolEntry.inFlight = false;
      else this.toSpool(f.batch);
    }
    this.spoolQueue();
    await this.spool.flushWrites();
    await this.transport.destroy();
    this.log.info("otlp exporter stopped", { ...this.stats() });
  }

  private checkDrained(): void {
    if (!this.wakeShutdown) return;
    const idle = this.flights.size === 0;
    const empty = this.queue.length === 0 && this.open.count === 0;
    const retryTooLate = [...this.flights].some((f) => f.retryTimer && f.retryAt > this.deadline);
    if ((idle && empty) || retryTooLate || (idle && !this.canDispatch())) this.wakeShutdown();
  }

  private canDispatch(): boolean {
    const e = this.spool.head();
    const m = this.queue[0];
    return m !== undefined && !(e && e.seq < m.seq);
  }

  private newOpenBatch(s = this.s): OpenBatch {
    return new OpenBatch({ encoding: s.encoding, compression: s.compression, fallbackService: s.fallbackService });
  }

  /** How batches are compressed when sealed: as configured, except gzip for zstd once the
   * collector refused a zstd body and took the same batch as gzip. */
  private compression(): Compression {
    return this.s.compression === "zstd" && this.zstdRefused ? "gzip" : this.s.compression;
  }

  private newTransport(): Transport {
    return new Transport(this.s.endpoint, this.s.tls, this.s.maxInFlight, this.s.requestTimeoutMs);
  }

  private warnIfPlaintext(): void {
    const ep = this.s.endpoint;
    if (!ep.secure && !isLoopbackHost(ep.hostname)) {
      this.log.warn("otlp exporter sends spans in plain http (agent_config.secure: false) to a non-loopback host", { endpoint: ep.origin });
    }
  }

  private seal(): void {
    try {
      this.sealNow();
      this.pump();
    } catch (e) {
      this.log.error("otlp exporter: internal error while batching", { error: String(e) });
    }
  }

  private sealNow(): void {
    if (this.openTimer) clearTimeout(this.openTimer);
    this.openTimer = undefined;
    const n = this.open.count;
    if (n === 0) return;
    let batch: EncodedBatch;
    try {
      batch = this.open.seal(this.seq++, this.compression());
    } catch (e) {
      this.open = this.newOpenBatch();
      this.c.SpansDropped += n;
      this.log.error("otlp exporter: cannot encode batch, dropped", { error: String(e), spans: n });
      return;
    }
    this.queue.push(batch);
    this.queueSpans += batch.spans;
    if (this.closed) return;
    this.enforceQueueBound();
  }

  private enforceQueueBound(): void {
    while (this.queueSpans > this.s.maxQueueSpans && this.queue.length > 0) this.toSpool(this.shiftQueue());
  }

  private shiftQueue(): EncodedBatch {
    const b = this.queue.shift()!;
    this.queueSpans -= b.spans;
    return b;
  }

  private spoolQueue(): void {
    while (this.queue.length > 0) this.toSpool(this.shiftQueue());
  }

  private toSpool(b: EncodedBatch): void {
    if (this.spool.append(b)) {
      this.c.SpansSpooled += b.spans;
      return;
    }
    this.c.SpansDropped += b.spans;
    if (!this.spool.enabled && this.noSpoolDrops++ % 100 === 0) {
      this.log.warn("otlp exporter: queue full and spool disabled (spool.max_size_mb: 0), batch dropped", { spans: b.spans, drops: this.noSpoolDrops });
    }
  }

  private pump(): void {
    if (this.closed) return;
    while (this.flights.size < this.s.maxInFlight && this.waiting === 0) {
      const f = this.takeNext();
      if (!f) break;
      this.flights.add(f);
      void this.attempt(f);
    }
    this.checkDrained();
  }

  /** The batch with the lowest seq, from the spool or the memory queue. */
  private takeNext(): Flight | undefined {
    for (;;) {
      const e = this.spool.head();
      const m = this.queue[0];
      if (e && (!m || e.seq < m.seq)) {
        if (this.closing) return undefined; // spooled batches stay on disk for the next start
        const batch = this.spool.read(e);
        if (!batch) continue;
        e.inFlight = true;
        return { batch, spoolEntry: e, attempt: 0, retryAt: 0, abandoned: false };
      }
      if (!m) return undefined;
      return { batch: this.shiftQueue(), attempt: 0, retryAt: 0, abandoned: false };
    }
  }

  private async attempt(f: Flight): Promise<void> {
    // batches compressed before the collector refused zstd go as gzip too
    if (this.zstdRefused && f.batch.compression === "zstd") f.batch = asGzip(f.batch);
    f.abort = new AbortController();
    const t0 = performance.now();
    let outcome: SendOutcome;
    try {
      outcome = await sendBatch(this.transport, this.s, f.batch, f.abort);
    } catch (e) {
      outcome = { type: "retry", failure: { kind: "network", code: "INTERNAL", message: String(e) } };
    }
    if (f.abandoned) return;
    this.c.LastExportLatencyMs = Math.round(performance.now() - t0);
    if (outcome.type === "ok") this.onOk(f, outcome.partial);
    else if (outcome.type === "reject") this.onReject(f, outcome.status, outcome.message);
    else this.onRetry(f, outcome);
  }

  private onOk(f: Flight, partial: { rejectedSpans: number; errorMessage: string } | undefined): void {
    if (f.zstdStatus !== undefined && !this.zstdRefused) {
      this.zstdRefused = true;
      this.log.warn("the collector refused a zstd-compressed batch and took it as gzip: sending gzip from now on (agent_config.reporting.compression)", {
        endpoint: this.s.endpoint.origin, status: f.zstdStatus,
      });
    }
    const rejected = Math.min(Math.max(0, partial?.rejectedSpans ?? 0), f.batch.spans);
    this.c.ExportRequestsOk++;
    if (f.batch.signal === "metrics") this.metricBatches.sent++;
    this.c.TotalRequestsSent += f.batch.spans - rejected;
    this.c.SpansRejected += rejected;
    if (partial && (rejected > 0 || partial.errorMessage)) {
      this.log.warn("collector accepted the batch partially", { rejectedSpans: rejected, spans: f.batch.spans, message: partial.errorMessage });
    }
    if (this.failing) this.log.info("otlp export recovered", { endpoint: this.s.endpoint.origin });
    this.failing = false;
    this.failureKey = "";
    this.finish(f);
  }

  private onReject(f: Flight, status: number, message: string): void {
    if (f.batch.compression === "zstd" && (status === 415 || status === 400)) {
      // A collector without zstd answers 415, or 400 when it hands the body on undecoded and it
      // fails to parse as a request. Which one it meant shows when the same batch goes as gzip:
      // only its success switches the exporter to gzip (onOk); a 400 about the data itself
      // comes back again and drops the batch below.
      this.c.ZstdRefused++;
      this.c.ExportErrorsHttp4xx++;
      f.zstdStatus = status;
      f.batch = asGzip(f.batch);
      void this.attempt(f);
      return;
    }
    if (status >= 500) this.c.ExportErrorsHttp5xx++;
    else this.c.ExportErrorsHttp4xx++;
    this.c.SpansDropped += f.batch.spans;
    this.log.error("collector refused a batch; not retried, dropped", { status, spans: f.batch.spans, response: message, endpoint: this.s.endpoint.origin });
    this.finish(f);
  }

  private onRetry(f: Flight, o: RetryOutcome): void {
    this.countFailure(o);
    this.c.ExportRetries++;
    const delay = retryDelay(f.attempt++, o.retryAfterMs, this.backoff, this.random);
    this.logFailure(o, delay);
    f.retryAt = Date.now() + delay;
    this.waiting++;
    f.retryTimer = setTimeout(() => this.retryNow(f), delay);
    f.retryTimer.unref?.();
    this.checkDrained();
  }

  private retryNow(f: Flight): void {
    if (!f.retryTimer || f.abandoned) return;
    clearTimeout(f.retryTimer);
    f.retryTimer = undefined;
    this.waiting--;
    void this.attempt(f);
  }

  private countFailure(o: RetryOutcome): void {
    const k = o.failure.kind;
    if (k === "tls") this.c.ExportErrorsTls++;
    else if (k === "http") {
      if ((o.status ?? 0) >= 500) this.c.ExportErrorsHttp5xx++;
      else this.c.ExportErrorsHttp4xx++;
    } else this.c.ExportErrorsNetwork++;
  }

  /** One line per change of reason, not per attempt. */
  private logFailure(o: RetryOutcome, delayMs: number): void {
    this.failing = true;
    const key = `${o.failure.kind}:${o.failure.code}:${o.failure.kind === "tls" ? o.failure.message : ""}`;
    if (key === this.failureKey) return;
    this.failureKey = key;
    const fields = {
      endpoint: this.s.endpoint.origin, kind: o.failure.kind, code: o.failure.code, reason: o.failure.message,
      retryInMs: delayMs, ...(o.failure.kind === "tls" ? { tlsFiles: this.s.tlsFiles } : {}),
    };
    const what = o.failure.kind === "tls" ? `TLS error talking to the collector: ${o.failure.code}` : `otlp export failed: ${o.failure.code}`;
    if (o.failure.kind === "tls") this.log.error(`${what}; retrying`, fields);
    else this.log.warn(`${what}; retrying`, fields);
  }

  private finish(f: Flight): void {
    this.flights.delete(f);
    if (f.spoolEntry) this.spool.remove(f.spoolEntry);
    this.pump();
  }
}
