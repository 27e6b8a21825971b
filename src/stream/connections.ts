/**
 * Per-connection state in user space: who the peers are, which direction carries requests, the
 * next expected byte position of each direction (to detect lost or uncaptured bytes), and the
 * HTTP/1 exchange matcher fed in stream order. Bounded by count (oldest evicted) and idle time.
 */
import { Http1Connection, type HttpExchange } from "../protocols/http1/exchange.ts";
import { DIR_RECV, DIR_SEND, ROLE_CLIENT } from "../kernel/event-layout.ts";
import type { ConnectionMeta } from "./meta.ts";

export type { ConnectionMeta };

export interface ConnectionHooks {
  bodyMaxSize: number;
  keepBody: (contentType: string | undefined) => boolean;
  onExchange: (x: HttpExchange, conn: Connection) => void;
  onRequestError: (reason: string) => void;
  onResponseError: (reason: string) => void;
}

export class Connection {
  /** next expected stream position per DIR_* */
  readonly next = [0, 0];
  lastActivityMs = Date.now();
  gapBytes = 0;
  readonly http: Http1Connection;

  constructor(readonly meta: ConnectionMeta, hooks: ConnectionHooks) {
    this.http = new Http1Connection({
      bodyMaxSize: hooks.bodyMaxSize,
      keepBody: hooks.keepBody,
      onExchange: (x) => hooks.onExchange(x, this),
      onRequestError: hooks.onRequestError,
      onResponseError: hooks.onResponseError,
    });
  }

  /** Which HTTP direction a socket direction carries. */
  isRequestDir(dir: number): boolean {
    return this.meta.role === ROLE_CLIENT ? dir === DIR_SEND : dir === DIR_RECV;
  }

  /**
   * Feeds bytes that start at stream position `pos`. Bytes before the expected position were
   * already seen and are dropped; a jump ahead means events were lost and becomes a gap.
   * Returns the number of lost bytes detected.
   */
  feed(dir: number, pos: number, data: Uint8Array, tsNs: bigint): number {
    this.lastActivityMs = Date.now();
    let lost = 0;
    const exp = this.next[dir]!;
    if (pos > exp) {
      lost = pos - exp;
      this.gap(dir, lost, tsNs, true);
    } else if (pos < exp) {
      const skip = exp - pos;
      if (skip >= data.length) return 0;
      data = data.subarray(skip);
    }
    if (data.length === 0) return lost;
    this.next[dir] = Math.max(pos, exp) + data.length;
    if (this.http.upgraded) return lost;
    if (this.isRequestDir(dir)) this.http.request(data, tsNs);
    else this.http.response(data, tsNs);
    return lost;
  }

  /** `n` bytes at the expected position were not captured (lost=false: cut by the capture cap). */
  gap(dir: number, n: number, tsNs: bigint, lost: boolean): void {
    if (n <= 0) return;
    this.next[dir]! += n;
    if (lost) this.gapBytes += n;
    if (this.http.upgraded) return;
    this.http.gap(this.isRequestDir(dir) ? "request" : "response", n, tsNs, lost);
  }

  /** Closes with the kernel's final positions; bytes never delivered become lost gaps. */
  close(finalRecv: number, finalSent: number, tsNs: bigint): number {
    let lost = 0;
    const finals = [finalRecv, finalSent];
    for (const dir of [DIR_RECV, DIR_SEND]) {
      const missing = finals[dir]! - this.next[dir]!;
      if (missing > 0) {
        lost += missing;
        this.gap(dir, missing, tsNs, true);
      }
    }
    if (!this.http.upgraded) this.http.close(tsNs);
    return lost;
  }
}

export class ConnectionTable {
  private conns = new Map<number, Connection>();
  evicted = 0;

  constructor(
    private readonly maxConnections = 16_384,
    private readonly idleMs = 300_000,
  ) {}

  get(id: number): Connection | undefined {
    return this.conns.get(id);
  }

  add(c: Connection): void {
    this.conns.set(c.meta.id, c);
    if (this.conns.size > this.maxConnections) {
      // Map iterates in insertion order: the first entry is the oldest connection.
      const oldest = this.conns.keys().next().value as number;
      this.conns.delete(oldest);
      this.evicted++;
    }
  }

  delete(id: number): void {
    this.conns.delete(id);
  }

  /** Forgets connections idle for longer than the idle timeout (their close was never seen). */
  sweep(nowMs = Date.now()): number {
    let n = 0;
    for (const [id, c] of this.conns) {
      if (nowMs - c.lastActivityMs > this.idleMs) {
        this.conns.delete(id);
        n++;
      }
    }
    this.evicted += n;
    return n;
  }

  get size(): number {
    return this.conns.size;
  }
}

