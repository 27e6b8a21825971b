/**
 * Records in, spans out: decodes each ring-buffer record, keeps the connection and process
 * tables, reassembles each direction by stream position, and hands finished exchanges to the
 * span builder and the sink. Never throws on input: everything odd is counted.
 */
import { decodeEventAt, type ConnEvent, type DataEvent, type ProcEvent, type TlsMapEvent } from "../kernel/event-decoder.ts";
import { Connection, ConnectionTable, type ConnectionMeta, type SessionInit } from "../stream/connections.ts";
import { contentTypeAllowed } from "../protocols/http1/exchange.ts";
import { Http1Session } from "../protocols/http1/session.ts";
import type { OverheadBudget } from "./budget.ts";
import type { Exchange, ProtocolName, ProtocolSession, SessionEnv } from "../protocols/session.ts";
import { ProcessRegistry } from "../selection/process-registry.ts";
import { buildSpan, type SpanContext } from "../spans/builder.ts";
import {
  AF_UNIX, DATA_FLAG_LAST, DATA_FLAG_TLS, DATA_FLAG_TLS_INFERRED, DIR_RECV, DIR_SEND, LAYER_SOCKET, LAYER_TLS, MODE_EGRESS, MODE_INGRESS, ROLE_CLIENT, ROLE_SERVER,
  ROLE_UNKNOWN, SYS_COUNT,
} from "../kernel/event-layout.ts";
import type { SpanSink } from "../spans/span.ts";
import { clockNs } from "../kernel/libbpf-ffi.ts";

/** Now on the kernel's clock (CLOCK_MONOTONIC, what bpf_ktime_get_ns and so every event's tsNs
 * use). Not process.hrtime: Bun's counts from process start, so ages computed against event
 * timestamps were negative (streams never reached http2.stream_max_age) and close times fell
 * before the exchanges they closed. */
const monoNow = (): bigint => clockNs(1);

/** Shed connections remembered for re-admission (Pipeline.readmit), and how many of those shed
 * at their open may join them a second. */
const SHED_REMEMBERED = 8192;
const SHED_REMEMBERED_PER_S = 1000;

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
  /** connections whose first bytes were none of the supported protocols: payload no longer copied */
  UnsupportedProtocolConnections = 0;
  /** connections that turned out to carry TLS records */
  TlsConnections = 0;
  /** per-thread streams of TLS plaintext that came without a known connection (conn_id 0) */
  TlsConnectionless = 0;
  /** connections left to the kernel to skip by the overhead budget or a rate limit */
  ShedConnections = 0;
  /** shed connections still open captured again as the ratio recovered (from their next message) */
  ReadmittedConnections = 0;
  /** connections dropped without a close event (table full, idle): their pending exchanges are emitted flagged */
  ConnectionsEndedWithoutClose = 0;
}

export interface PipelineOptions {
  bodyMaxSize: number;
  allowedContentTypes: string[];
  span: SpanContext;
  /** capture mode of a process (MODE_*), for connections whose role the kernel could not tell */
  modeOf: (tgid: number) => number;
  /** decides the role of a socket that existed before capture started */
  classify: (meta: ConnectionMeta) => number;
  /**
   * asks the kernel to stop sending data for connection `connId` (open on `fd` of `tgid`), which
   * nobody wants; nothing when that fd is another connection's by now (closed and reused)
   */
  ignore?: (tgid: number, fd: number, connId: number) => void;
  /** undoes `ignore` for a shed connection: the kernel copies its bytes again; returns its next
   * stream positions [socket recv, socket send, TLS recv, TLS send], or undefined when it is gone */
  readmit?: (tgid: number, fd: number, connId: number) => number[] | undefined;
  maxConnections?: number;
  /** process lifecycle events (selection follows them); for exec, returns whether the process
   * is captured, so that the registry only describes captured processes */
  onProcessEvent?: (e: ProcEvent) => boolean | void;
  /** a process started listening (only sent while port rules exist) */
  onListen?: (e: ConnEvent) => void;
  /** the overhead budget and rate limits: decides at a connection's open whether it is captured */
  budget?: OverheadBudget;
  /** TLS uprobes: library names for spans, coverage bookkeeping, late library loads */
  tls?: TlsHooks;
  /** sessions of protocols beyond HTTP/1 (HTTP/2); undefined: that protocol is not captured */
  protocols?: Partial<Record<Exclude<ProtocolName, "http1">, (env: SessionEnv, init: SessionInit) => ProtocolSession>>;
}

/** What the TLS capture (src/kernel/tls/manager.ts) learns from the event stream. */
export interface TlsHooks {
  /** the TLS library a process's plaintext comes from ("openssl", "go", …) */
  library(tgid: number): string | undefined;
  /** the kernel flagged connection `connId` as TLS (ciphertext on the socket) */
  flagged(tgid: number, comm: string, connId: number): void;
  /** TLS-layer plaintext arrived on `connId` (0: no connection known) */
  plaintext(tgid: number, comm: string, connId: number, inferred: boolean): void;
  closed(tgid: number, connId: number): void;
  /** EV_TLS_MAP_EXEC: a probed process mapped an executable file not classified yet */
  mapped(e: TlsMapEvent): void;
}

/** HTTP request methods (and the HTTP/2 preface) that open a request: which side a
 * connection-less plaintext stream is on. */
const REQUEST_START = /^(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE|PRI) /;

export class Pipeline {
  readonly counters = new PipelineCounters();
  readonly conns: ConnectionTable;
  readonly procs = new ProcessRegistry();
  /** protocol counters named by the sessions (SessionEnv.count) */
  readonly protocolCounters: Record<string, number> = {};
  private keepBody: (ct: string | undefined) => boolean;

  constructor(private opts: PipelineOptions, private sink: SpanSink) {
    // A connection dropped without its close (table full, idle past the timeout) still ends
    // its session: waiting requests become spans flagged ebpf.response.missing / partial.
    this.conns = new ConnectionTable(opts.maxConnections, undefined, (c) => {
      this.counters.ConnectionsEndedWithoutClose++;
      c.session?.close(monoNow());
    });
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
    this.handleAt(rec, 0, rec.length);
  }

  /** Handles the record at [at, at + len) of `buf` (EventSource's RecordHandler); nothing of `buf` is kept. */
  handleAt(buf: Uint8Array, at: number, len: number): void {
    const e = decodeEventAt(buf, at, len);
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
      case "tlsmap":
        this.counters.ControlEventReceived++;
        this.opts.tls?.mapped(e);
        break;
      default: {
        this.counters.ProcessEventReceived++;
        const captured = this.opts.onProcessEvent?.(e);
        if (e.kind !== "exec" || e.mode !== 0 || captured) this.procs.onEvent(e);
        if (e.kind === "exit") this.endUnixConnections(e.tgid);
      }
    }
  }

  private onOpen(e: ConnEvent): void {
    const meta: ConnectionMeta = {
      id: e.connId, tgid: e.tgid, fd: e.fd, role: e.role, family: e.family,
      localAddr: e.localAddr, localPort: e.localPort, remoteAddr: e.remoteAddr, remotePort: e.remotePort, comm: e.comm, spans: 0,
    };
    if (meta.role === ROLE_UNKNOWN && meta.family === AF_UNIX) {
      // A Unix socket nobody accepted or connected while we watched: a socketpair or inherited
      // stdio (e.g. a pipe-like stdout), not an API connection.
      this.counters.IgnoredSockets++;
      this.opts.ignore?.(e.tgid, e.fd, e.connId);
      return;
    }
    if (meta.role === ROLE_UNKNOWN) {
      meta.role = this.opts.classify(meta);
      const mode = this.opts.modeOf(e.tgid);
      const wanted = meta.role === ROLE_SERVER ? mode & MODE_INGRESS : mode & MODE_EGRESS;
      if (mode && !wanted) {
        this.counters.FilteredByMode++;
        this.opts.ignore?.(e.tgid, e.fd, e.connId);
        return;
      }
    }
    const proc = this.procs.get(e.tgid, e.comm);
    const budget = this.opts.budget;
    if (budget) {
      budget.setRateLimit(e.tgid, proc.maxSpansPerSecond);
      const ratio = budget.admit(e.tgid);
      if (ratio === 0) {
        // Shed whole connections, not events: the kernel skips this one until it is re-admitted.
        this.counters.ShedConnections++;
        this.opts.ignore?.(e.tgid, e.fd, e.connId);
        // remembered for re-admission up to a number a second: under a churn of short
        // connections (thousands shed a second) re-admission finds them closed anyway, and
        // keeping each one's meta alive until then cost the agent ~2.5 % of a core at 16k/s
        if (this.rememberTokens > 0) {
          this.rememberTokens--;
          this.rememberShed(meta, budget.ratioFor(e.tgid));
        }
        return;
      }
      meta.samplingRatio = ratio;
      if (ratio < 1) this.lowered = true;
    }
    // Sockets first seen on data (no accept/connect while we watched) may start mid-message.
    this.conns.add(new Connection(meta, this.hooks, { midstream: e.syscall >= SYS_COUNT }));
  }

  /** How connections reach protocols and report back. */
  private readonly hooks = {
    createSession: (protocol: ProtocolName, c: Connection, init: SessionInit): ProtocolSession | undefined => {
      const env = this.envFor(c);
      if (protocol === "http1") return new Http1Session(env);
      return this.opts.protocols?.[protocol]?.(env, init);
    },
    unsupported: (c: Connection): void => {
      this.counters.UnsupportedProtocolConnections++;
      this.opts.ignore?.(c.meta.tgid, c.meta.fd, c.meta.id);
      this.conns.delete(c.meta.id);
    },
    tlsDetected: (): void => {
      this.counters.TlsConnections++;
    },
  };

  private envFor(c: Connection): SessionEnv {
    return {
      bodyMaxSize: this.opts.bodyMaxSize,
      keepBody: this.keepBody,
      emit: (x) => this.onExchange(x, c),
      error: (from) => {
        if (from === "client") this.counters.ReqParsingErrors++;
        else this.counters.ResParsingErrors++;
      },
      count: (name, n = 1) => {
        this.protocolCounters[name] = (this.protocolCounters[name] ?? 0) + n;
      },
      handoff: (protocol, init) => c.handoff(protocol, init) ?? NULL_SESSION,
    };
  }

  private onData(e: DataEvent): void {
    let c = this.conns.get(e.connId);
    let pos = e.pos;
    if (!c && e.connId === 0 && e.layer === LAYER_TLS) {
      // TLS plaintext with no connection known: its own per-thread stream, never dropped.
      c = this.connlessTls(e);
      pos = c.next[LAYER_TLS]![e.dir & 1]!;
    }
    if (!c) {
      this.counters.TotalEventsDroppedAtParsing++;
      return;
    }
    const ts = BigInt(Math.round(e.tsNs));
    const last = (e.flags & DATA_FLAG_LAST) !== 0;
    if (e.flags & DATA_FLAG_TLS) {
      c.markTls();
      this.opts.tls?.flagged(c.meta.tgid, c.meta.comm, c.meta.id);
    }
    if (e.layer === LAYER_TLS) this.noteTlsData(c, e);
    this.counters.LostBytes += c.feed(e.layer, e.dir, pos, e.data, ts, last);
    if (last && e.skipped > 0) c.gap(e.layer, e.dir, e.skipped, ts, false);
  }

  private onClose(e: ConnEvent): void {
    const c = this.conns.get(e.connId);
    if (!c) return;
    this.opts.tls?.closed(c.meta.tgid, c.meta.id);
    this.counters.LostBytes += c.close([[e.recv, e.sent], [e.tlsRecv, e.tlsSent]], BigInt(Math.round(e.tsNs)));
    this.conns.delete(e.connId);
  }

  /** TLS-layer bytes on `c`: its library and correlation for spans, and the coverage report. */
  private noteTlsData(c: Connection, e: DataEvent): void {
    const m = c.meta;
    if (e.flags & DATA_FLAG_LAST) {
      const inferred = e.connId === 0 || (e.flags & DATA_FLAG_TLS_INFERRED) !== 0;
      const was = m.tlsCorrelation;
      if (e.connId === 0) m.tlsCorrelation = "none";
      else if (!inferred) m.tlsCorrelation = "exact";
      else if (was !== "exact") m.tlsCorrelation = "inferred";
      // The report changes only when the connection's correlation does (its first plaintext, and
      // inferred → exact): telling it of every record cost ~10 % of the agent's CPU under HTTPS
      // load (a report line rebuilt per record).
      if (m.tlsCorrelation !== was) this.opts.tls?.plaintext(m.tgid, m.comm, e.connId, inferred);
    }
    m.tlsLibrary ??= this.opts.tls?.library(m.tgid);
  }

  /**
   * The stream of TLS plaintext that came without a connection (conn_id 0), one per thread: its
   * side is read from the first bytes (a request received: server), and it has no peer addresses.
   */
  private connlessTls(e: DataEvent): Connection {
    const id = -(e.tgid * 4194304 + (e.tid % 4194304));
    let c = this.conns.get(id);
    if (c) return c;
    const head = String.fromCharCode(...e.data.subarray(0, 8));
    const isRequest = REQUEST_START.test(head);
    const role = isRequest === (e.dir === DIR_RECV) ? ROLE_SERVER : ROLE_CLIENT;
    this.counters.TlsConnectionless++;
    const proc = this.procs.get(e.tgid);
    c = new Connection({
      id, tgid: e.tgid, fd: e.fd, role, family: 0, localAddr: "", localPort: 0, remoteAddr: "", remotePort: 0, spans: 0,
      comm: proc.name,
    }, this.hooks, { midstream: !isRequest && !head.startsWith("HTTP/") });
    this.conns.add(c);
    return c;
  }

  private onExchange(x: Exchange, c: Connection): void {
    this.counters.TotalRequestsParsed++;
    const proc = this.procs.get(c.meta.tgid, c.meta.comm);
    const span = buildSpan(x, c.meta, proc, this.opts.span);
    if (x.partial) this.counters.PartialSpans++;
    this.counters.SpansEmitted++;
    this.opts.budget?.spanEmitted(c.meta.tgid, c.meta.samplingRatio ?? 1);
    this.sink.export(span);
  }

  /**
   * Makes the open connections follow the ratios in force. When a ratio fell, they are shed too
   * (keep-alive ones never reopen), so that the share still captured follows it. Connections are
   * dropped whole; what an exchange in flight had is emitted flagged partial. Which ones stay is
   * decided by a stride per process, not a coin per connection: of n connections admitted at
   * ratio `had`, the nearest whole number to n·now/had stays: with a few long-lived connections
   * (16 keep-alive clients) a coin per connection could shed every one of them at a ratio of 0.3.
   * When a ratio rose, a connection kept while it was low stands for fewer unseen ones: its spans
   * carry the ratio now in force, which the estimate of shed requests uses. Shed connections come
   * back as the ratio recovers (readmit()).
   */
  applySampling(): void {
    const budget = this.opts.budget;
    // Nothing to do while every ratio is 1 and every connection is captured at 1 (the common
    // case): no walk over the connections.
    if (!budget || (!budget.shedding && !this.lowered)) return;
    let low = false;
    // per process: the stride, the count expected to stay (sum of now/had) and those kept
    const per = new Map<number, { acc: number; expected: number; kept: Connection[] }>();
    for (const c of [...this.conns.values()]) {
      const had = c.meta.samplingRatio ?? 1;
      const now = budget.ratioFor(c.meta.tgid);
      if (now >= had * 0.8) {
        if (now > had) c.meta.samplingRatio = now;
        if (c.meta.samplingRatio! < 1) low = true;
        continue;
      }
      let p = per.get(c.meta.tgid);
      if (!p) per.set(c.meta.tgid, p = { acc: 0.5, expected: 0, kept: [] }); // from one half: n·now/had rounded, not rounded down
      p.expected += now / had;
      p.acc += now / had;
      if (p.acc >= 1) {
        p.acc -= 1;
        p.kept.push(c);
        continue;
      }
      this.counters.ShedConnections++;
      budget.shedOpen(c.meta.tgid);
      this.opts.ignore?.(c.meta.tgid, c.meta.fd, c.meta.id);
      this.conns.delete(c.meta.id);
      c.session?.close(monoNow());
      this.rememberShed(c.meta, now);
    }
    // The kept ones stand for all: their spans carry the share actually kept (4 of 16 at 0.225:
    // 0.25), so that the estimate of shed requests (1/ratio each) adds up to what the connections
    // carried, however the count kept was rounded.
    for (const [tgid, p] of per) {
      if (p.kept.length === 0) continue;
      const r = Math.min(1, (budget.ratioFor(tgid) * p.kept.length) / p.expected);
      for (const c of p.kept) c.meta.samplingRatio = r;
      if (r < 1) low = true;
    }
    this.lowered = low;
  }

  /** Shed connections that may still be open, by id, with the ratio in force when they were shed
   * or when readmit() last passed over them. Bounded: when full the older half is dropped (those
   * are never re-admitted). The kernel announces no close for a connection it ignores: an entry
   * goes when readmit() finds its connection gone. */
  private shed = new Map<number, { meta: ConnectionMeta; atRatio: number }>();
  /** connections shed at their open that may still be remembered this second (readmit() refills) */
  private rememberTokens = SHED_REMEMBERED_PER_S;

  private rememberShed(meta: ConnectionMeta, ratio: number): void {
    if (!this.opts.readmit) return;
    // Full: the newer half is kept, in one pass. Not the oldest entry deleted per insertion: a
    // Map used as a queue that way made every first-key lookup walk the deleted entries ahead of
    // it (~3 % of a core at 16k connections shed a second).
    if (this.shed.size >= SHED_REMEMBERED) this.shed = new Map([...this.shed].slice(SHED_REMEMBERED / 2));
    this.shed.set(meta.id, { meta, atRatio: ratio });
  }

  /** Some connection may be captured at a ratio below 1 (applySampling has something to raise). */
  private lowered = false;

  /**
   * After the budget raised a ratio: shed connections that are still open are captured again, so
   * that the share captured follows the ratio up as applySampling() made it follow it down (keep-
   * alive connections never reopen: without this, a connection shed in one overloaded second
   * would stay unseen for its whole life). Of the connections shed at ratio r0, now that it is
   * r1, the share (r1 - r0) / (1 - r0) comes back, chosen by a stride per process; all of them at
   * 1. A re-admitted connection goes on from the kernel's stream positions as one first seen
   * mid-stream: its protocol is found again at a syscall start, and an exchange under way when it
   * came back is not made up.
   */
  readmit(): void {
    const budget = this.opts.budget;
    const readmit = this.opts.readmit;
    if (!budget || !readmit) return;
    this.rememberTokens = SHED_REMEMBERED_PER_S;
    if (this.shed.size === 0) return;
    const strides = new Map<number, number>();
    // entries are deleted as the walk goes: a Map's iteration allows that
    for (const [id, s] of this.shed) {
      const tgid = s.meta.tgid;
      const now = budget.ratioFor(tgid);
      if (now <= s.atRatio) {
        // fallen since: what is captured now is the share `now`, whatever it was when this one went
        s.atRatio = now;
        continue;
      }
      const share = now >= 1 ? 1 : (now - s.atRatio) / (1 - s.atRatio);
      const acc = (strides.get(tgid) ?? 0.5) + share;
      if (acc < 1) {
        strides.set(tgid, acc);
        s.atRatio = now;
        continue;
      }
      strides.set(tgid, acc - 1);
      this.shed.delete(id);
      const pos = readmit(tgid, s.meta.fd, id);
      if (!pos) continue; // closed while shed, or its process is gone
      const c = new Connection({ ...s.meta, samplingRatio: now }, this.hooks, { midstream: true });
      c.next[LAYER_SOCKET]![DIR_RECV] = pos[0]!;
      c.next[LAYER_SOCKET]![DIR_SEND] = pos[1]!;
      c.next[LAYER_TLS]![DIR_RECV] = pos[2]!;
      c.next[LAYER_TLS]![DIR_SEND] = pos[3]!;
      this.conns.add(c);
      this.counters.ReadmittedConnections++;
      if (now < 1) this.lowered = true;
    }
  }

  /** Sessions' own housekeeping (long-lived HTTP/2 streams past http2.stream_max_age). */
  tick(): void {
    const now = monoNow();
    for (const c of this.conns.values()) c.session?.tick?.(now);
  }

  /**
   * A process exited: its Unix-socket connections end here (TCP ones end by the kernel's socket
   * state event). What they held is emitted flagged, as for a close with no final positions.
   * A Unix socket shared with a child that lives on would be ended early: rare, and flagged.
   */
  private endUnixConnections(tgid: number): void {
    const now = monoNow();
    for (const c of [...this.conns.values()]) {
      if (c.meta.tgid !== tgid || c.meta.family !== AF_UNIX) continue;
      this.conns.delete(c.meta.id);
      this.counters.ConnectionsEndedWithoutClose++;
      c.session?.close(now);
    }
  }

  /** Shutdown: every open connection's session emits what it holds (flagged), nothing vanishes. */
  flushAll(): void {
    const now = monoNow();
    for (const c of this.conns.values()) c.session?.close(now);
  }

  /** Periodic housekeeping: idle connections, exited processes, long-lived streams. */
  sweep(): void {
    this.tick();
    this.conns.sweep();
    this.procs.sweep();
  }

  stats(): Record<string, number> {
    return { ...this.counters, ...this.protocolCounters, OpenConnections: this.conns.size, EvictedConnections: this.conns.evicted, TrackedProcesses: this.procs.size };
  }
}


/** Stands in after a hand-off to a protocol that is not captured: bytes are dropped. */
const NULL_SESSION: ProtocolSession = {
  protocol: "http1",
  data() {},
  gap() {},
  close() {},
};
