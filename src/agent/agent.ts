/**
 * The running agent: kernel tracer + pipeline + sink, the drain loop that moves records from the
 * ring buffer into the pipeline, housekeeping and the stats log line. Used by both `run` and
 * `capture`.
 */
import { hostname } from "node:os";
import { KernelTracer, type KernelCounters } from "../kernel/tracer.ts";
import { Pipeline } from "./pipeline.ts";
import { SocketClassifier } from "../selection/modes.ts";
import { Selector } from "../selection/selector.ts";
import { compileRules } from "../selection/rules.ts";
import type { Target } from "../config/config.ts";
import { MonoClock } from "./clock.ts";
import { BEHIND_LOW_FILL, MemoryGuard, OverheadBudget, selfUsage, SHED_REASON_TEXT, type ShedReason } from "./budget.ts";

/** The log line's words when shedding for a reason ends. */
const SHED_STOP_TEXT: Record<ShedReason, string> = {
  budget: "back under the overhead budget",
  behind: "keeping up with the kernel's events again",
  rate_limit: "under every target's max_spans_per_second",
};
import { GcPacer } from "./gc-pacer.ts";
import { Http2Session } from "../protocols/http2/session.ts";
import type { SessionEnv } from "../protocols/session.ts";
import type { SessionInit } from "../stream/connections.ts";
import { ROLE_CLIENT, ROLE_SERVER } from "../kernel/event-layout.ts";
import { releaseStartupPages } from "./startup-pages.ts";
import { log } from "../log/log.ts";
import type { Config } from "../config/config.ts";
import type { SpanSink } from "../spans/span.ts";
import { TlsCapture } from "../kernel/tls/manager.ts";
import type { TlsHooks } from "./pipeline.ts";
import { FILL_SHARE, nextPollMs, POLL_FALLBACK_MS } from "./poll-interval.ts";

export interface AgentOptions {
  cfg: Config;
  /** targets from the command line (capture --pid/--exe/--port), ahead of the config's */
  extraTargets?: Target[];
  sink: SpanSink;
  btfCustomPath?: string;
  btfSource?: string;
  /** every raw record is handed here before the pipeline sees it (capture --record); the view
   * is only valid during the call */
  record?: (rec: Uint8Array) => void;
}

/** records per slice of a drain: the event loop (exporter I/O, the GC pacer's check) runs between
 * slices */
const DRAIN_BATCH = 2048;

/** The ring buffer's size; the one the agent started with is the ring's (a reload's new size takes
 * effect at the next restart). */
const ringBytesOf = (cfg: Config): number => cfg.bpf.ringbuf_size_mb * 1024 * 1024;

export class Agent {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private gcTimer: ReturnType<typeof setInterval> | undefined;
  private rescanTimer: ReturnType<typeof setInterval> | undefined;
  private budgetTimer: ReturnType<typeof setInterval> | undefined;
  private tickTimer: ReturnType<typeof setInterval> | undefined;
  budget!: OverheadBudget;
  readonly gcPacer = new GcPacer();
  /** the budget's collections also restart the pacer's count from what they leave */
  readonly memoryGuard = new MemoryGuard(() => this.gcPacer.collectFull());
  private stopped = false;
  /** the most bytes seen waiting in the ring buffer (KprobeEventMaxQueueSizeTillNow) */
  queueHighWater = 0;
  /** the kernel's wakeup pipe while it is read (startWakeups); undefined: fixed short polls */
  private wakeReader: { cancel(): Promise<void> } | undefined;
  /** when the last wake's drain ended, and the bytes found waiting at the start of this wake */
  private lastDrainAt = performance.now();
  private wakeBytes = -1;
  /** drains started by a forced wakeup from the kernel (RingWakeups) */
  private ringWakeups = 0;
  readonly startedAt = Date.now();

  selector!: Selector;
  /** TLS plaintext capture and its coverage report */
  tls!: TlsCapture;
  private cfg: Config;

  private constructor(
    readonly kernel: KernelTracer,
    readonly pipeline: Pipeline,
    private readonly opts: AgentOptions,
    private readonly clock: MonoClock,
  ) {
    this.cfg = opts.cfg;
  }

  static async start(opts: AgentOptions): Promise<Agent> {
    const { cfg } = opts;
    const ringBytes = ringBytesOf(cfg);
    const kernel = await KernelTracer.start({
      ringbufBytes: ringBytes,
      // the reader sleeps until the ring would be this full (poll-interval.ts); a burst that fills
      // it sooner wakes the reader from the kernel
      ringWakeAtBytes: ringBytes * FILL_SHARE,
      enableTracepoints: cfg.enable_tracepoints,
      buffer: cfg.bpf.buffer,
      threadState: cfg.bpf.thread_state,
      perfPages: cfg.perfmap_queue_size,
      maxActiveRetProbe: cfg.max_active_ret_probe,
      maxCapturePerCall: cfg.bpf.max_capture_bytes_per_call,
      btfCustomPath: opts.btfCustomPath,
      captureAllMode: 0,
      notifyAllExec: false,
    });
    const clock = new MonoClock();
    const budget = Agent.makeBudget(cfg);
    const tls = new TlsCapture(kernel, Agent.tlsOptions(cfg));
    const classifier = new SocketClassifier();
    let agent: Agent | undefined;
    const pipeline = new Pipeline(
      {
        ...Agent.pipelineSettings(cfg, clock),
        modeOf: (tgid) => kernel.pidMode(tgid) ?? 0,
        classify: (m) => (classifier.isListeningPort(m.localPort) ? ROLE_SERVER : ROLE_CLIENT),
        ignore: (tgid, fd, connId) => kernel.ignoreConn(tgid, fd, connId),
        readmit: (tgid, fd, connId) => kernel.readmitConn(tgid, fd, connId),
        onProcessEvent: (e) => {
          if (!agent) return e.mode !== 0;
          if (e.kind === "exec") return agent.selector.onExec(e);
          if (e.kind === "fork") {
            agent.selector.onFork(e);
            if (e.mode) tls.addProcess(e.tgid, e.comm);
          } else {
            agent.selector.onExit(e);
            tls.removeProcess(e.tgid);
          }
          return true;
        },
        onListen: (e) => agent?.selector.onListen(e),
        tls: Agent.tlsHooks(tls),
        budget,
      },
      opts.sink,
    );
    agent = new Agent(kernel, pipeline, opts, clock);
    agent.budget = budget;
    agent.tls = tls;
    agent.selector = new Selector(kernel, pipeline.procs);
    tls.start();
    agent.selector.listener = { selected: (pid, comm) => tls.addProcess(pid, comm), deselected: (pid) => tls.removeProcess(pid) };
    agent.selector.apply(compileRules(cfg, opts.extraTargets));
    log.info("capture started", {
      attachMode: kernel.attachMode,
      buffer: kernel.buffer,
      probes: kernel.attached.length,
      skippedProbes: kernel.skipped,
      libbpf: kernel.libbpfVersion,
      btf: opts.btfSource ?? "kernel",
      btfPath: opts.btfCustomPath ?? "/sys/kernel/btf/vmlinux",
      selected: agent.selector.selected().length,
    });
    agent.startWakeups();
    agent.loop();
    agent.sweepTimer = setInterval(() => {
      pipeline.sweep();
      clock.refresh();
    }, 30_000);
    if (cfg.stats_interval > 0) agent.statsTimer = setInterval(() => agent!.logStats(), cfg.stats_interval);
    // Under load the pipeline makes short-lived garbage fast and JSC's heuristics let the heap
    // grow to several times the live set: an asynchronous collection every second, a full one
    // when the heap has grown well past what the last full one left (gc-pacer.ts).
    agent.gcTimer = setInterval(() => agent!.gcPacer.tick(), 1000);
    agent.scheduleRescan();
    agent.scheduleTick();
    const usage = selfUsage(() => kernel.bpfRunTimeNs());
    agent.budgetTimer = setInterval(() => {
      budget.sample(agent!.memoryGuard.check(usage(), agent!.cfg.budget.memory_mb));
      pipeline.applySampling();
      pipeline.readmit();
    }, 1000);
    return agent;
  }

  /** TLS capture: discovery options from the config (docs/tls.md §6). */
  private static tlsOptions(cfg: Config) {
    return {
      enabled: cfg.enable_uprobes,
      libsslPrefixes: cfg.libssl_prefixes,
      exclusionRules: cfg.uprobe_attach_exclusion_rules.map((r) => ({ exe: r.exe, cmdline: r.cmdline })),
      customSslAddress: cfg.custom_ssl_address.map((c) => ({ binary: c.binary!, sslRead: c.ssl_read!, sslWrite: c.ssl_write!, sslFree: c.ssl_free })),
    };
  }

  /** The pipeline's view of TLS capture; coverage changes become one log line per process. */
  private static tlsHooks(tls: TlsCapture): TlsHooks {
    const say = (line: string | undefined, pid: number) => {
      if (line) log.info(line, { Pid: pid });
    };
    return {
      library: (tgid) => tls.library(tgid),
      flagged: (tgid, comm, id) => say(tls.coverage.tlsConnection(tgid, comm, BigInt(id)), tgid),
      plaintext: (tgid, comm, id, inferred) => say(tls.coverage.plaintext(tgid, comm, BigInt(id), inferred), tgid),
      closed: (tgid, id) => say(tls.coverage.closed(tgid, BigInt(id)), tgid),
      mapped: (e) => tls.mapped(e.tgid, e.dev, e.ino),
    };
  }

  private static pipelineSettings(cfg: Config, clock: MonoClock) {
    const h2 = cfg.http2;
    return {
      protocols: cfg.http2_data_capture_enabled
        ? {
            http2: (env: SessionEnv, init: SessionInit) => new Http2Session(env, {
              midStream: init.midstream, handoff: init.handoff,
              streamMaxAgeNs: BigInt(h2.stream_max_age) * 1_000_000n, maxStreams: h2.max_streams_per_connection,
            }),
          }
        : {},
      bodyMaxSize: cfg.data_capture.body_max_size_bytes,
      allowedContentTypes: cfg.data_capture.allowed_content_types,
      span: {
        hostName: hostname(),
        serviceName: cfg.service_name,
        environment: cfg.environment,
        customAttributes: cfg.custom_span_attributes,
        toWallNs: clock.toWallNs,
      },
    };
  }

  /**
   * Applies a new config without detaching probes: selection rules, capture limits, span
   * settings and, when given, a new sink. Open connections and in-flight exchanges are kept.
   */
  reload(cfg: Config, sink?: SpanSink): void {
    if (cfg.bpf.ringbuf_size_mb !== this.cfg.bpf.ringbuf_size_mb || cfg.bpf.buffer !== this.cfg.bpf.buffer || cfg.bpf.thread_state !== this.cfg.bpf.thread_state) {
      log.warn("bpf.ringbuf_size_mb, bpf.buffer and bpf.thread_state take effect at the next restart");
    }
    this.cfg = cfg;
    this.kernel.setMaxCapturePerCall(cfg.bpf.max_capture_bytes_per_call);
    this.budget.setLimits({ cpuPercent: cfg.budget.cpu_percent, memoryMb: cfg.budget.memory_mb });
    this.pipeline.update(Agent.pipelineSettings(cfg, this.clock), sink);
    if (sink) (this.opts as { sink: SpanSink }).sink = sink;
    this.selector.apply(compileRules(cfg, this.opts.extraTargets));
    clearInterval(this.statsTimer);
    if (cfg.stats_interval > 0) this.statsTimer = setInterval(() => this.logStats(), cfg.stats_interval);
    this.scheduleRescan();
    this.scheduleTick();
    log.info("config reloaded", { file: cfg.source, selected: this.selector.selected().length });
  }

  /** The overhead budget from the config; with no budget and no rate limit it admits everything. */
  private static makeBudget(cfg: Config): OverheadBudget {
    return new OverheadBudget({ cpuPercent: cfg.budget.cpu_percent, memoryMb: cfg.budget.memory_mb }, (ev, ratio, detail, reason) => {
      if (ev === "stop") log.info(`${SHED_STOP_TEXT[reason]}: capturing every connection`, detail);
      else if (reason === "rate_limit") log.info(`${SHED_REASON_TEXT[reason]}: shedding connections`, detail);
      else log.warn(`${SHED_REASON_TEXT[reason]}: shedding connections`, { samplingRatio: ratio, ...detail, ...(reason === "budget" ? { budget: cfg.budget } : {}) });
    });
  }

  /** Session ticks often enough that a stream is emitted within a few seconds of its max age. */
  private scheduleTick(): void {
    clearInterval(this.tickTimer);
    const every = Math.max(250, Math.min(5000, Math.floor(this.cfg.http2.stream_max_age / 2)));
    this.tickTimer = setInterval(() => this.pipeline.tick(), every);
  }

  /** proc_fs_scan_period_in_sec: a periodic /proc rescan as a safety net (0 = off). */
  private scheduleRescan(): void {
    clearInterval(this.rescanTimer);
    const s = this.cfg.proc_fs_scan_period_in_sec;
    if (s > 0) this.rescanTimer = setInterval(() => this.selector.rescan(), s * 1000);
  }

  /**
   * Gives back the executable's pages only the start used (startup-pages.ts). The command calls it
   * once everything it starts is up (admin endpoint, readiness): paging out and faulting back in
   * takes tens of ms, which must not delay what tests and systemd wait for.
   */
  releaseStartupPages(): void {
    const r = releaseStartupPages();
    if (r.released) log.info("startup pages of the executable released", { mappedKb: r.mappedKb, residentKbBefore: r.residentKbBefore, residentKbAfter: r.residentKbAfter });
    else log.debug("startup pages of the executable kept", { reason: r.reason });
  }

  get currentConfig(): Config {
    return this.cfg;
  }

  get sink(): SpanSink {
    return this.opts.sink;
  }

  private onRecord = (buf: Uint8Array, at: number, len: number): void => {
    if (this.opts.record) this.opts.record(buf.subarray(at, at + len));
    this.pipeline.handleAt(buf, at, len);
  };

  /**
   * Drains until the ring is empty (in batches, yielding between them), then sleeps: as long as
   * the arrival rate allows with kernel wakeups (poll-interval.ts), POLL_FALLBACK_MS without. A
   * forced wakeup from the kernel runs it at once.
   */
  private loop = (): void => {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const pending = this.kernel.source.pending();
    if (pending > this.queueHighWater) this.queueHighWater = pending;
    if (this.wakeBytes < 0) this.wakeBytes = pending;
    // falling behind the kernel (OverheadBudget.behind): with perf buffers `pending` is what was
    // read out already, not how full the kernel's buffers are
    if (this.kernel.buffer === "ringbuf") {
      const fill = pending / ringBytesOf(this.opts.cfg);
      if (this.budget.behind(fill, performance.now(), fill >= BEHIND_LOW_FILL ? this.kernel.lostRecords() : NaN)) this.pipeline.applySampling();
    }
    let n: number;
    try {
      n = this.kernel.source.drain(this.onRecord, DRAIN_BATCH);
    } catch (e) {
      // Handler errors are counted by the reader (HandlerErrors); this is a fault of the reader itself.
      log.error("event handling failed", { error: String((e as Error)?.stack ?? e) });
      n = DRAIN_BATCH;
    }
    if (n > 0) this.gcPacer.poll();
    if (n >= DRAIN_BATCH) {
      this.timer = setTimeout(this.loop, 0);
      return;
    }
    const now = performance.now();
    const ms = this.wakeReader ? nextPollMs(this.wakeBytes, now - this.lastDrainAt, ringBytesOf(this.opts.cfg)) : POLL_FALLBACK_MS;
    this.lastDrainAt = now;
    this.wakeBytes = -1;
    this.timer = setTimeout(this.loop, ms);
  };

  /** Reads the kernel's wakeup pipe, when it has one, and drains at each byte. */
  private startWakeups(): void {
    const fd = this.kernel.wakeupFd();
    if (fd === undefined) return;
    const reader = Bun.file(fd).stream().getReader();
    this.wakeReader = reader;
    void (async () => {
      try {
        for (;;) {
          const { done } = await reader.read();
          if (done || this.stopped) return;
          this.ringWakeups++;
          this.loop();
        }
      } catch (e) {
        if (this.stopped) return;
        log.warn("reading the ring buffer's wakeups failed; polling the ring every few ms instead", { error: String(e) });
        this.wakeReader = undefined;
      }
    })();
  }

  /** Drains whatever is in the ring right now (used before shutdown and by tests). */
  drainNow(): void {
    while (this.kernel.source.drain(this.onRecord, DRAIN_BATCH) > 0) {
      /* keep going */
    }
  }

  /** Kernel counters as read just before the BPF maps were closed (set by stop()). */
  private finalKernelCounters: KernelCounters | undefined;

  /** The kernel's counters; after stop(), their last values (the maps are gone then). */
  kernelCounters(): KernelCounters {
    return this.finalKernelCounters ?? this.kernel.counters();
  }

  stats(): Record<string, number> {
    const k = this.kernelCounters();
    return {
      ...this.pipeline.stats(),
      EventLost: k.lost,
      KernelEventsEmitted: k.events,
      TruncatedBytes: k.truncatedBytes,
      KprobeEventMaxQueueSizeTillNow: this.queueHighWater,
      RingWakeups: this.ringWakeups,
      TotalEventsDroppedAtEventQueueLimit: k.lost + k.activeFull + k.connFull,
      TlsCiphertextBytesNotCopied: k.tlsSkippedBytes,
      ...this.tls.stats(),
      NoCopyBytes: k.noCopyBytes,
      TlsGoShortWrites: k.tlsGoShortWrites,
      TlsGoCopyUnmatched: k.tlsGoCopyUnmatched,
      TlsCallsUntracked: k.tlsCallsUntracked,
      PeekCallsSkipped: k.peekSkipped,
      MmsgOverflow: k.mmsgOverflow,
      SocketsClosedByKernel: k.sockClosed,
      ...this.selector.stats(),
      HandlerErrors: this.kernel.source.handlerErrors ?? 0,
      RingCorruptRecords: this.kernel.source.corruptRecords ?? 0,
      SamplingRatio: this.budget.ratio,
      BudgetCollections: this.memoryGuard.collections,
      ...this.gcPacer.stats(),
      ShedRequestsEstimated: Math.round(this.budget.total.estimatedRequests),
      FallingBehind: this.budget.fallingBehind,
      ...this.opts.sink.stats(),
    };
  }

  logStats(): void {
    log.info("stats", this.stats());
    const probes = this.kernelCounters().probes;
    log.info("probe stat", Object.fromEntries(Object.entries(probes).filter(([, v]) => v[0] || v[1])));
  }

  async stop(timeoutMs: number): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.statsTimer);
    clearInterval(this.sweepTimer);
    clearInterval(this.gcTimer);
    clearInterval(this.rescanTimer);
    // the budget's sample reads the BPF programs' run time: not once the object is closed
    clearInterval(this.budgetTimer);
    clearInterval(this.tickTimer);
    // the wakeup pipe is closed with the kernel object below: stop reading it first
    const cancelled = this.wakeReader?.cancel().catch(() => {});
    this.drainNow();
    this.pipeline.flushAll();
    this.finalKernelCounters = this.kernel.counters();
    this.tls.stop(!this.kernel.closeInBackground);
    await cancelled;
    this.kernel.close();
    await this.opts.sink.shutdown(timeoutMs);
  }
}
