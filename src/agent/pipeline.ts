/**
 * Records in, spans out: decodes each ring-buffer record, keeps the connection and process
 * tables, reassembles each direction by stream position, and hands finished exchanges to the
 * span builder and the sink. Never throws on input: everything odd is counted.
 */
import { decodeEvent, type ConnEvent, type DataEvent, type ProcEvent } from "../kernel/event-decoder.ts";
import { Connection, ConnectionTable, type ConnectionMeta } from "../stream/connections.ts";
import { contentTypeAllowed, type HttpExchange } from "../protocols/http1/exchange.ts";
import { ProcessRegistry } from "../selection/process-registry.ts";
import { buildSpan, type SpanContext } from "../spans/builder.ts";
import { AF_UNIX, DATA_FLAG_LAST, MODE_EGRESS, MODE_INGRESS, ROLE_SERVER, ROLE_UNKNOWN } from "../kernel/event-layout.ts";
import type { SpanSink } from "../spans/span.ts";

/** Counters with the reference tracer's names (see docs/operations.md). */
export class PipelineCounters {
  ControlEventReceived = 0;
  DataEventReceived = 0;
  ProcessEventReceived = 0;
  TotalRequestsParsed = 0;
  ReqParsingErrors = 0;
  ResParsingErrors = 0;
  /** records we could not decode */
  DecodeErrors = 0;
  /** data events for connections we never saw open, or after an upgrade */
  TotalEventsDroppedAtParsing = 0;
  /** stream bytes that never reached user space (ring full): spans across them are partial */
  LostBytes = 0;
  PartialSpans = 0;
  SpansEmitted = 0;
  /** exchanges filtered out because the process's mode excludes their direction */
  FilteredByMode = 0;
  /** first-seen Unix sockets (socketpairs, inherited stdio) left alone */
  IgnoredSockets = 0;
}

export interface PipelineOptions {
  bodyMaxSize: number;
  allowedContentTypes: string[];
  span: SpanContext;
  /** capture mode of a process (MODE_*), for connections whose role the kernel could not tell */
  modeOf: (tgid: number) => number;
  /** decides the role of a socket that existed before capture started */
  classify: (meta: ConnectionMeta) => number;
  /** asks the kernel to stop sending data for a connection nobody wants */
  ignore?: (tgid: number, fd: number) => void;
  maxConnections?: number;
  /** process lifecycle events (selection follows them); for exec, returns whether the process
   * is captured, so that the registry only describes captured processes */
  onProcessEvent?: (e: ProcEvent) => boolean | void;
  /** a process started listening (only sent while port rules exist) */
  onListen?: (e: ConnEvent) => void;
}

export class Pipeline {
  readonly counters = new PipelineCounters();
  readonly conns: ConnectionTable;
  readonly procs = new ProcessRegistry();
  private keepBody: (ct: string | undefined) => boolean;

  constructor(private opts: PipelineOptions, private sink: SpanSink) {
    this.conns = new ConnectionTable(opts.maxConnections);
    this.keepBody = contentTypeAllowed(opts.allowedContentTypes);
  }

  /** Takes new settings (reload) without touching open connections or in-flight exchanges:
   * body limits apply to connections opened from now on. */
  update(opts: Partial<PipelineOptions>, sink?: SpanSink): void {
    this.opts = { ...this.opts, ...opts };
    if (opts.allowedContentTypes) this.keepBody = contentTypeAllowed(opts.allowedContentTypes);
    if (sink) this.sink = sink;
  }

  /** Handles one record. The record view must not be kept. */
  handle(rec: Uint8Array): void {
    const e = decodeEvent(rec);
    if (!e) {
      this.counters.DecodeErrors++;
      return;
    }
    switch (e.kind) {
      case "data":
        this.counters.DataEventReceived++;
        this.onData(e);
        break;
      case "open":
        this.counters.ControlEventReceived++;
        this.onOpen(e);
        break;
      case "close":
        this.counters.ControlEventReceived++;
        this.onClose(e);
        break;
      case "listen":
        this.counters.ControlEventReceived++;
        this.opts.onListen?.(e);
        break;
      default: {
        this.counters.ProcessEventReceived++;
        const captured = this.opts.onProcessEvent?.(e);
        if (e.kind !== "exec" || e.mode !== 0 || captured) this.procs.onEvent(e);
      }
    }
  }

  private onOpen(e: ConnEvent): void {
    const meta: ConnectionMeta = {
      id: e.connId, tgid: e.tgid, fd: e.fd, role: e.role, family: e.family,
      localAddr: e.localAddr, localPort: e.localPort, remoteAddr: e.remoteAddr, remotePort: e.remotePort, comm: e.comm,
    };
    if (meta.role === ROLE_UNKNOWN && meta.family === AF_UNIX) {
      // A Unix socket nobody accepted or connected while we watched: a socketpair or inherited
      // stdio (e.g. a pipe-like stdout), not an API connection.
      this.counters.IgnoredSockets++;
      this.opts.ignore?.(e.tgid, e.fd);
      return;
    }
    if (meta.role === ROLE_UNKNOWN) {
      meta.role = this.opts.classify(meta);
      const mode = this.opts.modeOf(e.tgid);
      const wanted = meta.role === ROLE_SERVER ? mode & MODE_INGRESS : mode & MODE_EGRESS;
      if (mode && !wanted) {
        this.counters.FilteredByMode++;
        this.opts.ignore?.(e.tgid, e.fd);
        return;
      }
    }
    this.procs.get(e.tgid, e.comm);
    this.conns.add(
      new Connection(meta, {
        bodyMaxSize: this.opts.bodyMaxSize,
        keepBody: this.keepBody,
        onExchange: (x, c) => this.onExchange(x, c),
        onRequestError: () => this.counters.ReqParsingErrors++,
        onResponseError: () => this.counters.ResParsingErrors++,
      }),
    );
  }

  private onData(e: DataEvent): void {
    const c = this.conns.get(e.connId);
    if (!c) {
      this.counters.TotalEventsDroppedAtParsing++;
      return;
    }
    const ts = BigInt(Math.round(e.tsNs));
    this.counters.LostBytes += c.feed(e.dir, e.pos, e.data, ts);
    if (e.flags & DATA_FLAG_LAST && e.skipped > 0) c.gap(e.dir, e.skipped, ts, false);
  }

  private onClose(e: ConnEvent): void {
    const c = this.conns.get(e.connId);
    if (!c) return;
    this.counters.LostBytes += c.close(e.recv, e.sent, BigInt(Math.round(e.tsNs)));
    this.conns.delete(e.connId);
  }

  private onExchange(x: HttpExchange, c: Connection): void {
    this.counters.TotalRequestsParsed++;
    const proc = this.procs.get(c.meta.tgid, c.meta.comm);
    const span = buildSpan(x, c.meta, proc, this.opts.span);
    if (x.partial) this.counters.PartialSpans++;
    this.counters.SpansEmitted++;
    this.sink.export(span);
  }

  /** Periodic housekeeping: idle connections and exited processes. */
  sweep(): void {
    this.conns.sweep();
    this.procs.sweep();
  }

  stats(): Record<string, number> {
    return { ...this.counters, OpenConnections: this.conns.size, EvictedConnections: this.conns.evicted, TrackedProcesses: this.procs.size };
  }
}

