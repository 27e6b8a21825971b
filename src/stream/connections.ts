/**
 * Per-connection state in user space: who the peers are, which socket direction each endpoint
 * sends on, the next expected byte position per data layer (socket payload, TLS plaintext) and
 * direction — to detect lost or uncaptured bytes — and the protocol session the application bytes
 * go to. Bounded by count (oldest evicted) and idle time.
 *
 * Application bytes are the socket payload, until the connection turns out to be TLS (the
 * detector sees a TLS record, or TLS plaintext arrives from uprobes): from then on they are the
 * TLS layer's, and socket bytes only advance positions.
 *
 * The protocol is chosen by the detector (protocols/detect.ts) on the first bytes of a syscall.
 * A connection seen from its start (accept/connect) is decided by its first bytes; one first seen
 * in the middle (open before capture started, or after a loss) may start inside a message, so it
 * gets up to DETECT_TRIES syscall starts per direction before it is called unsupported.
 */
import { DIR_RECV, DIR_SEND, LAYER_SOCKET, LAYER_TLS, ROLE_CLIENT } from "../kernel/event-layout.ts";
import { detect, startsWithClientPreface } from "../protocols/detect.ts";
import type { Handoff, ProtocolName, ProtocolSession, Sender } from "../protocols/session.ts";
import type { ConnectionMeta } from "./meta.ts";

export type { ConnectionMeta };

export { LAYER_SOCKET, LAYER_TLS };

/** Syscall starts per direction a mid-stream connection may try before it is unsupported. */
const DETECT_TRIES = 8;
/** Bytes held per direction while the detector wants more. */
const DETECT_HOLD_MAX = 8192;

export interface ConnectionHooks {
  /** A session for `protocol` on this connection; undefined when that protocol is not captured. */
  createSession(protocol: ProtocolName, conn: Connection, init: SessionInit): ProtocolSession | undefined;
  /** The application bytes are none of the supported protocols (or a disabled one): the caller
   * stops paying for the connection (kernel stops copying) and drops it. */
  unsupported(conn: Connection, reason: string): void;
  /** The socket carries TLS records: its plaintext can only come from the TLS layer. */
  tlsDetected?(conn: Connection): void;
}

/** How a session starts: after a hand-off, or on a connection first seen mid-stream. */
export interface SessionInit {
  handoff?: Handoff;
  midstream: boolean;
}

interface Pending {
  from: Sender;
  bytes: Uint8Array;
  tsNs: bigint;
  callEnd: boolean;
}

export class Connection {
  /** next expected stream position per layer, per DIR_* */
  readonly next: [number, number][] = [[0, 0], [0, 0]];
  lastActivityMs = Date.now();
  gapBytes = 0;
  /** where application bytes come from (LAYER_*) */
  appLayer = LAYER_SOCKET;
  session: ProtocolSession | undefined;
  /** the connection was dropped as unsupported: everything after is ignored */
  done = false;
  private readonly atCallStart = [true, true];
  private readonly tries = [0, 0];
  private held: Pending[] = [];
  private heldBytes = 0;
  private midstream: boolean;

  constructor(readonly meta: ConnectionMeta, private readonly hooks: ConnectionHooks, opts: { midstream?: boolean } = {}) {
    this.midstream = opts.midstream ?? false;
  }

  /** Which endpoint sends on a socket direction. */
  sender(dir: number): Sender {
    return (this.meta.role === ROLE_CLIENT) === (dir === DIR_SEND) ? "client" : "server";
  }

  /**
   * Feeds bytes of `layer` that start at stream position `pos`. Bytes before the expected
   * position were already seen and are dropped; a jump ahead means events were lost and becomes a
   * gap. `callEnd`: this chunk ends its syscall. Returns the number of lost bytes detected.
   */
  feed(layer: number, dir: number, pos: number, data: Uint8Array, tsNs: bigint, callEnd: boolean): number {
    this.lastActivityMs = Date.now();
    const next = this.next[layer]!;
    let lost = 0;
    const exp = next[dir]!;
    if (pos > exp) {
      lost = pos - exp;
      this.gap(layer, dir, lost, tsNs, true);
    } else if (pos < exp) {
      const skip = exp - pos;
      if (skip >= data.length) return 0;
      data = data.subarray(skip);
    }
    if (data.length > 0) {
      next[dir] = Math.max(pos, exp) + data.length;
      if (layer === LAYER_TLS && this.appLayer !== LAYER_TLS) this.becomeTls();
      if (layer === this.appLayer && !this.done) this.deliver(dir, data, tsNs, callEnd);
    }
    if (callEnd) this.atCallStart[dir] = true;
    return lost;
  }

  /** `n` bytes of `layer` at the expected position were not captured (lost=false: cut by the
   * capture cap or not copyable, e.g. sendfile). */
  gap(layer: number, dir: number, n: number, tsNs: bigint, lost: boolean): void {
    if (n <= 0) return;
    this.next[layer]![dir]! += n;
    if (layer !== this.appLayer || this.done) return;
    if (lost) this.gapBytes += n;
    if (this.session) {
      this.session.gap(this.sender(dir), n, tsNs, lost);
      return;
    }
    // Still detecting: whatever was held for this direction is no longer contiguous.
    this.dropHeld(dir);
    this.midstream = true;
  }

  /** Closes with the kernel's final positions per layer; bytes never delivered become lost gaps. */
  close(finals: [number, number][], tsNs: bigint): number {
    let lost = 0;
    for (let layer = 0; layer < finals.length; layer++) {
      for (const dir of [DIR_RECV, DIR_SEND]) {
        const missing = finals[layer]![dir]! - this.next[layer]![dir]!;
        if (missing > 0) {
          if (layer === this.appLayer) lost += missing;
          this.gap(layer, dir, missing, tsNs, true);
        }
      }
    }
    this.session?.close(tsNs);
    return lost;
  }

  /** Replaces the session (a protocol switch such as HTTP/1 → h2c). */
  handoff(protocol: ProtocolName, init: Handoff): ProtocolSession | undefined {
    const next = this.hooks.createSession(protocol, this, { handoff: init, midstream: false });
    this.session = next;
    if (!next) this.giveUp(`${protocol} is not captured`);
    return next;
  }

  /** The kernel found a TLS record at the socket's first bytes (DATA_FLAG_TLS) and copies none
   * of its payload from now on: as if the detector had seen it. */
  /** The socket carries TLS records (the kernel's DATA_FLAG_TLS, or the detector): from now on
   * the application bytes are the TLS layer's. */
  markTls(): void {
    if (this.appLayer !== LAYER_SOCKET || this.done) return;
    this.becomeTls();
    this.hooks.tlsDetected?.(this);
  }

  private becomeTls(): void {
    this.appLayer = LAYER_TLS;
    this.meta.tls = true;
    this.session = undefined;
    this.held = [];
    this.heldBytes = 0;
    this.tries[0] = this.tries[1] = 0;
  }

  private deliver(dir: number, data: Uint8Array, tsNs: bigint, callEnd: boolean): void {
    const from = this.sender(dir);
    if (this.session) {
      this.session.data(from, data, tsNs, callEnd);
      return;
    }
    const startsCall = this.atCallStart[dir]!;
    this.atCallStart[dir] = false;
    const held = this.heldFor(dir);
    if (held === 0 && !startsCall) return; // mid-call bytes cannot start a message
    const probe = held === 0 ? data : this.concatHeld(dir, data);
    const verdict = detect(probe, this.meta.role === 0 ? undefined : from, this.midstream ? { callEnd } : undefined);
    if (verdict === "more" && this.heldBytes + data.length <= DETECT_HOLD_MAX) {
      this.held.push({ from, bytes: data.slice(), tsNs, callEnd });
      this.heldBytes += data.length;
      return;
    }
    if (verdict === "tls" && this.appLayer === LAYER_SOCKET) {
      this.markTls();
      return;
    }
    if (verdict === "http1" || verdict === "http2") {
      // the client preface is the HTTP/2 connection's start, wherever we began watching
      if (this.midstream && verdict === "http2" && from === "client" && startsWithClientPreface(probe)) this.midstream = false;
      this.session = this.hooks.createSession(verdict, this, { midstream: this.midstream });
      if (!this.session) {
        this.giveUp(`${verdict} is not captured`);
        return;
      }
      const pending = this.held;
      this.held = [];
      this.heldBytes = 0;
      for (const p of pending) this.session.data(p.from, p.bytes, p.tsNs, p.callEnd);
      this.session.data(from, data, tsNs, callEnd);
      return;
    }
    this.dropHeld(dir);
    if (this.midstream && ++this.tries[dir]! < DETECT_TRIES) return;
    this.giveUp(verdict === "tls" ? "TLS inside TLS" : "not a supported protocol");
  }

  private giveUp(reason: string): void {
    this.done = true;
    this.held = [];
    this.heldBytes = 0;
    this.hooks.unsupported(this, reason);
  }

  private heldFor(dir: number): number {
    const from = this.sender(dir);
    let n = 0;
    for (const p of this.held) if (p.from === from) n += p.bytes.length;
    return n;
  }

  private concatHeld(dir: number, data: Uint8Array): Uint8Array {
    const from = this.sender(dir);
    const out = new Uint8Array(this.heldFor(dir) + data.length);
    let o = 0;
    for (const p of this.held) if (p.from === from) { out.set(p.bytes, o); o += p.bytes.length; }
    out.set(data, o);
    return out;
  }

  private dropHeld(dir: number): void {
    const from = this.sender(dir);
    this.held = this.held.filter((p) => p.from !== from);
    this.heldBytes = 0;
    for (const p of this.held) this.heldBytes += p.bytes.length;
  }
}

export class ConnectionTable {
  private conns = new Map<number, Connection>();
  evicted = 0;

  /** `onDrop` sees every connection dropped without a close event (evicted or idle), so what
   * it still holds can be emitted flagged instead of vanishing. */
  constructor(
    private readonly maxConnections = 16_384,
    private readonly idleMs = 300_000,
    private readonly onDrop: (c: Connection) => void = () => {},
  ) {}

  get(id: number): Connection | undefined {
    return this.conns.get(id);
  }

  add(c: Connection): void {
    this.conns.set(c.meta.id, c);
    if (this.conns.size > this.maxConnections) {
      // Map iterates in insertion order: the first entry is the oldest connection.
      const oldest = this.conns.values().next().value as Connection;
      this.conns.delete(oldest.meta.id);
      this.evicted++;
      this.onDrop(oldest);
    }
  }

  delete(id: number): void {
    this.conns.delete(id);
  }

  /** Every connection (for housekeeping that must visit them all). */
  values(): IterableIterator<Connection> {
    return this.conns.values();
  }

  /** Forgets connections idle for longer than the idle timeout (their close was never seen). */
  sweep(nowMs = Date.now()): number {
    let n = 0;
    for (const [id, c] of this.conns) {
      if (nowMs - c.lastActivityMs > this.idleMs) {
        this.conns.delete(id);
        n++;
        this.onDrop(c);
      }
    }
    this.evicted += n;
    return n;
  }

  get size(): number {
    return this.conns.size;
  }
}
