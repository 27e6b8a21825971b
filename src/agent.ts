/**
 * The running agent: kernel tracer + pipeline + sink, the drain loop that moves records from the
 * ring buffer into the pipeline, housekeeping and the stats log line. Used by both `run` and
 * `capture`.
 */
import { hostname } from "node:os";
import { KernelTracer, type KernelCounters } from "./kernel-tracer.ts";
import { Pipeline } from "./pipeline.ts";
import { applySelection, SocketClassifier, type SelectionSpec } from "./selection.ts";
import { MonoClock } from "./clock.ts";
import { ROLE_CLIENT, ROLE_SERVER } from "./event-layout.ts";
import { log } from "./log.ts";
import type { Config } from "./config.ts";
import type { SpanSink } from "./span.ts";
import { appendFrame } from "./event-source.ts";

export interface AgentOptions {
  cfg: Config;
  selection: SelectionSpec;
  sink: SpanSink;
  btfCustomPath?: string;
  /** raw records are appended here (capture --record) */
  record?: (frame: Uint8Array) => void;
}

const DRAIN_BATCH = 4096;
const POLL_MS = 10;

export class Agent {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private stopped = false;
  /** the most bytes seen waiting in the ring buffer (KprobeEventMaxQueueSizeTillNow) */
  queueHighWater = 0;
  readonly startedAt = Date.now();

  private constructor(
    readonly kernel: KernelTracer,
    readonly pipeline: Pipeline,
    private readonly opts: AgentOptions,
    private readonly clock: MonoClock,
  ) {}

  static async start(opts: AgentOptions): Promise<Agent> {
    const { cfg } = opts;
    const kernel = await KernelTracer.start({
      ringbufBytes: cfg.bpf.ringbuf_size_mb * 1024 * 1024,
      maxCapturePerCall: cfg.bpf.max_capture_bytes_per_call,
      btfCustomPath: opts.btfCustomPath,
      captureAllMode: 0,
      notifyAllExec: false,
    });
    const clock = new MonoClock();
    const classifier = new SocketClassifier();
    const modes = new Map<number, number>();
    const pipeline = new Pipeline(
      {
        bodyMaxSize: cfg.data_capture.body_max_size_bytes,
        allowedContentTypes: cfg.data_capture.allowed_content_types,
        span: {
          hostName: hostname(),
          serviceName: cfg.service_name,
          environment: cfg.environment,
          customAttributes: cfg.custom_span_attributes,
          toWallNs: clock.toWallNs,
        },
        modeOf: (tgid) => modes.get(tgid) ?? kernel.pids().get(tgid) ?? 0,
        classify: (m) => (classifier.isListeningPort(m.localPort) ? ROLE_SERVER : ROLE_CLIENT),
        ignore: (tgid, fd) => kernel.ignoreConn(tgid, fd),
      },
      opts.sink,
    );
    const agent = new Agent(kernel, pipeline, opts, clock);
    const sel = applySelection(kernel, opts.selection);
    for (const [pid, mode] of sel.pids) modes.set(pid, mode);
    log.info("capture started", {
      attachMode: "tracepoints",
      probes: kernel.attached.length,
      skippedProbes: kernel.skipped,
      libbpf: kernel.libbpfVersion,
      btf: opts.btfCustomPath ?? "kernel",
      selectedPids: [...sel.pids.keys()],
      exe: opts.selection.exe,
      mode: opts.selection.mode,
    });
    agent.loop();
    agent.sweepTimer = setInterval(() => {
      pipeline.sweep();
      clock.refresh();
    }, 30_000);
    if (cfg.stats_interval > 0) agent.statsTimer = setInterval(() => agent.logStats(), cfg.stats_interval);
    return agent;
  }

  private onRecord = (rec: Uint8Array): void => {
    if (this.opts.record) this.opts.record(appendFrame(rec));
    this.pipeline.handle(rec);
  };

  /** Drains until the ring is empty, then polls again after POLL_MS. */
  private loop = (): void => {
    if (this.stopped) return;
    const pending = this.kernel.source.pending();
    if (pending > this.queueHighWater) this.queueHighWater = pending;
    let n: number;
    try {
      n = this.kernel.source.drain(this.onRecord, DRAIN_BATCH);
    } catch (e) {
      // A bug in a handler must not stop capture; the record is skipped.
      log.error("event handling failed", { error: String((e as Error)?.stack ?? e) });
      n = DRAIN_BATCH;
    }
    this.timer = n >= DRAIN_BATCH ? setTimeout(this.loop, 0) : setTimeout(this.loop, POLL_MS);
  };

  /** Drains whatever is in the ring right now (used before shutdown and by tests). */
  drainNow(): void {
    while (this.kernel.source.drain(this.onRecord, DRAIN_BATCH) > 0) {
      /* keep going */
    }
  }

  kernelCounters(): KernelCounters {
    return this.kernel.counters();
  }

  stats(): Record<string, number> {
    const k = this.kernel.counters();
    return {
      ...this.pipeline.stats(),
      EventLost: k.lost,
      KernelEventsEmitted: k.events,
      TruncatedBytes: k.truncatedBytes,
      KprobeEventMaxQueueSizeTillNow: this.queueHighWater,
      TotalEventsDroppedAtEventQueueLimit: k.lost + k.activeFull + k.connFull,
      ...this.opts.sink.stats(),
    };
  }

  logStats(): void {
    log.info("stats", this.stats());
    const probes = this.kernel.counters().probes;
    log.info("probe stat", Object.fromEntries(Object.entries(probes).filter(([, v]) => v[0] || v[1])));
  }

  async stop(timeoutMs: number): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.statsTimer);
    clearInterval(this.sweepTimer);
    this.drainNow();
    this.kernel.close();
    await this.opts.sink.shutdown(timeoutMs);
  }
}
