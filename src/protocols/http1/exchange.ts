/**
 * Pairs the requests and responses of one HTTP/1.x connection into exchanges. One
 * Http1Connection per captured connection; it owns a request parser and a response parser.
 *
 * Matching is by order (HTTP/1.x has no ids; pipelined requests are answered in order):
 * - A request gets a slot when its head is complete, so an early response (sent before the
 *   request body finished, e.g. 413/401) still pairs with it; the exchange is emitted once both the
 *   request and its response are complete.
 * - 1xx interim responses (100 Continue, 103 Early Hints) are not matched. 101, and 2xx to
 *   CONNECT, end parsing: `upgraded` turns true and the caller stops feeding. A request asking for
 *   an upgrade pauses the request parser until its response says whether the switch happened.
 * - The response parser learns each request's method (HEAD responses carry no body, CONNECT 2xx
 *   is a tunnel).
 * - A response with no pending request is reported with onResponseError and dropped.
 * - At most MAX_PENDING_REQUESTS requests wait for responses; on overflow the oldest is emitted
 *   unanswered (partial) and counted with onRequestError.
 *
 * After capture loss or a parse error that made a parser resynchronise, whole messages may be
 * missing and order alone would pair them wrongly. Until the queue drains, two timestamp rules
 * then apply (a response cannot start before its request started):
 * - request side lost: a response that started before the oldest waiting request started belongs
 *   to a lost request; it is dropped (onResponseError).
 * - response side lost: a response answers the newest waiting request that started before it;
 *   older waiting requests are emitted unanswered. (Assumes no pipelining across the loss.)
 * Exchanges touched by such a loss are marked partial.
 */
import { Http1Parser, type HttpMessage } from "./parser.ts";

export interface HttpExchange {
  request: HttpMessage;
  response: HttpMessage | undefined; // undefined when the connection closed before a response
  partial: boolean;                  // request.partial || response?.partial || something unmatched
}

export interface ExchangeOptions {
  bodyMaxSize: number;
  keepBody: (contentType: string | undefined) => boolean;
  onExchange: (x: HttpExchange) => void;
  onRequestError: (reason: string) => void;   // caller counts ReqParsingErrors
  onResponseError: (reason: string) => void;  // caller counts ResParsingErrors
  /**
   * An upgrade was accepted (101, CONNECT 2xx). Returning sinks hands the bytes after the switch
   * (per direction, including the rest of the current chunk) to another protocol, and the
   * exchange that asked for the switch is not emitted: it is that protocol's first exchange
   * (h2c: stream 1). Returning undefined stops parsing as for a tunnel.
   */
  onUpgrade?: (request: HttpMessage, response: HttpMessage) => UpgradeSinks | undefined;
}

export interface UpgradeSinks {
  request: (bytes: Uint8Array, tsNs: bigint) => void;
  response: (bytes: Uint8Array, tsNs: bigint) => void;
}

export const MAX_PENDING_REQUESTS = 64;

const NO_REQUEST = "response without a pending request";

interface Slot {
  request: HttpMessage;
  done: boolean;                    // request complete
  response: HttpMessage | undefined;
  abandoned: boolean;               // its response was judged lost
  suspect: boolean;                 // pairing may be wrong because of a loss
  handedOff: boolean;               // became another protocol's first exchange
}

export class Http1Connection {
  private readonly opts: ExchangeOptions;
  private readonly req: Http1Parser;
  private readonly res: Http1Parser;
  private slots: Slot[] = [];
  private isUpgraded = false;
  private closed = false;
  private requestLoss = false;      // requests may be missing (until the queue drains)
  private responseLoss = false;     // responses may be missing (until the queue drains)
  private suspectNext = false;      // the next request slot follows a request-side loss

  constructor(opts: ExchangeOptions) {
    this.opts = opts;
    this.req = new Http1Parser("request", {
      bodyMaxSize: opts.bodyMaxSize,
      keepBody: opts.keepBody,
      onHeaders: (m) => this.requestHead(m),
      onMessage: (m) => this.requestDone(m),
      onError: (reason) => { this.noteRequestLoss(false); opts.onRequestError(reason); },
      onMalformed: (m) => this.requestMalformed(m),
    });
    this.res = new Http1Parser("response", {
      bodyMaxSize: opts.bodyMaxSize,
      keepBody: opts.keepBody,
      onMessage: (m) => this.responseDone(m),
      onError: (reason) => { this.noteResponseLoss(false); opts.onResponseError(reason); },
      requestMethod: () => this.awaiting()?.request.method,
    });
  }

  /** After 101 / CONNECT 2xx (or an HTTP/2 prior-knowledge preface): the caller stops feeding. */
  get upgraded(): boolean { return this.isUpgraded; }

  /** Bytes of the request direction. */
  request(chunk: Uint8Array, tsNs: bigint): void {
    if (this.closed || this.isUpgraded) return;
    this.req.push(chunk, tsNs);
    if (this.req.http2) this.isUpgraded = true;
  }

  /** Bytes of the response direction. */
  response(chunk: Uint8Array, tsNs: bigint): void {
    if (this.closed || this.isUpgraded) return;
    this.res.push(chunk, tsNs);
  }

  /**
   * Uncaptured bytes (see Http1Parser.gap). A gap the parser cannot place inside a body (it has to
   * resynchronise afterwards) may have swallowed whole messages, lost or cut alike: pairing is
   * then tainted.
   */
  gap(dir: "request" | "response", n: number, tsNs: bigint, lost: boolean): void {
    if (this.closed || this.isUpgraded) return;
    const parser = dir === "request" ? this.req : this.res;
    parser.gap(n, tsNs, lost);
    if (!parser.resyncing) return;
    if (dir === "request") this.noteRequestLoss(true);
    else this.noteResponseLoss(true);
  }

  /**
   * Connection closed: close-delimited responses complete, unfinished messages are emitted
   * partial, and every request still waiting is emitted (response undefined when none came).
   */
  close(tsNs: bigint): void {
    if (this.closed) return;
    this.closed = true;
    this.res.end(tsNs);
    this.req.end(tsNs);
    const left = this.slots;
    this.slots = [];
    for (const s of left) this.emit(s);
  }

  // ------------------------------------------------------------------ pairing

  private requestHead(m: HttpMessage): void {
    if (this.slots.length >= MAX_PENDING_REQUESTS) this.evictOldest();
    this.slots.push({ request: m, done: false, response: undefined, abandoned: false, suspect: this.suspectNext, handedOff: false });
    this.suspectNext = false;
  }

  /** A malformed request with a method and target: it takes a slot (a 400 pairs with it). */
  private requestMalformed(m: HttpMessage): void {
    if (this.slotOf(m) === undefined) this.requestHead(m);
    this.requestDone(m);
  }

  private requestDone(m: HttpMessage): void {
    const slot = this.slotOf(m);
    if (slot === undefined) return; // evicted while its body was still arriving
    slot.done = true;
    this.settleUpgrade(slot);
    this.flush();
  }

  private responseDone(m: HttpMessage): void {
    if (m.status >= 100 && m.status < 200 && m.status !== 101) return; // interim response
    const slot = this.requestLoss || this.responseLoss ? this.realign(m) : this.awaiting() ?? NO_REQUEST;
    if (typeof slot === "string") {
      this.opts.onResponseError(slot);
      return;
    }
    slot.response = m;
    this.settleUpgrade(slot);
    this.flush();
  }

  /** An upgrade/CONNECT request paused the request parser; its response decides what follows. */
  private settleUpgrade(slot: Slot): void {
    const res = slot.response;
    if (res === undefined) return;
    if (res.upgrade) {
      this.isUpgraded = true;
      const sinks = this.opts.onUpgrade?.(slot.request, res);
      if (sinks) {
        slot.handedOff = true;
        this.req.handOver(sinks.request);
        this.res.handOver(sinks.response);
      } else {
        this.req.stop();
        this.res.stop();
      }
    } else if (slot.done && slot.request.upgrade) {
      this.req.resume();
    }
  }

  /** Emits finished exchanges in request order. */
  private flush(): void {
    const slots = this.slots;
    let k = 0;
    while (k < slots.length && slots[k].done && (slots[k].response !== undefined || slots[k].abandoned)) k++;
    if (k === 0) return;
    const ready = slots.splice(0, k);
    if (slots.length === 0) this.requestLoss = this.responseLoss = false;
    for (const s of ready) this.emit(s);
  }

  private emit(s: Slot): void {
    if (s.handedOff) return;
    const response = s.response;
    this.opts.onExchange({
      request: s.request,
      response,
      partial: s.request.partial || response === undefined || response.partial || s.suspect,
    });
  }

  private awaiting(): Slot | undefined {
    for (const s of this.slots) if (s.response === undefined && !s.abandoned) return s;
    return undefined;
  }

  private slotOf(m: HttpMessage): Slot | undefined {
    for (let k = this.slots.length - 1; k >= 0; k--) if (this.slots[k].request === m) return this.slots[k];
    return undefined;
  }

  private evictOldest(): void {
    const oldest = this.slots.shift();
    if (oldest === undefined) return;
    this.opts.onRequestError(`more than ${MAX_PENDING_REQUESTS} requests waiting for a response`);
    oldest.abandoned = true;
    this.emit(oldest);
  }

  // ------------------------------------------------------------------ loss handling

  /**
   * Requests may be missing from now on. Lost capture also taints the next request's exchange;
   * a parse error does not (the malformed request is already counted).
   */
  private noteRequestLoss(captureLoss: boolean): void {
    this.requestLoss = true;
    if (captureLoss) this.suspectNext = true;
  }

  /** Responses may be missing from now on; lost capture taints every request still waiting. */
  private noteResponseLoss(captureLoss: boolean): void {
    this.responseLoss = true;
    if (captureLoss) for (const s of this.slots) if (s.response === undefined) s.suspect = true;
  }

  /**
   * Picks the slot a response answers when messages may be missing (rules in the file header);
   * a string says why the response is dropped.
   */
  private realign(m: HttpMessage): Slot | string {
    const waiting = this.slots.filter((s) => s.response === undefined && !s.abandoned);
    if (waiting.length === 0) return NO_REQUEST;
    if (this.requestLoss && m.firstByteNs < waiting[0].request.firstByteNs) {
      return "response started before the oldest waiting request (its request was lost)";
    }
    if (!this.responseLoss) return waiting[0];
    let pick = 0;
    for (let k = 1; k < waiting.length; k++) if (waiting[k].request.firstByteNs <= m.firstByteNs) pick = k;
    for (let k = 0; k < pick; k++) waiting[k].abandoned = waiting[k].suspect = true;
    if (pick > 0) waiting[pick].suspect = true;
    return waiting[pick];
  }
}

/**
 * Body capture filter for ParserOptions.keepBody / ExchangeOptions.keepBody: true when the media
 * type (Content-Type before any ';' parameters) contains one of `allowed` as a case-insensitive
 * substring ("json", "x-www-form-urlencoded", "xml", "graphql", "text"). No Content-Type: false.
 */
export function contentTypeAllowed(allowed: string[]): (ct: string | undefined) => boolean {
  const needles = allowed.map((a) => a.trim().toLowerCase()).filter((a) => a !== "");
  const match = (ct: string): boolean => {
    const semi = ct.indexOf(";");
    const media = (semi < 0 ? ct : ct.slice(0, semi)).trim().toLowerCase();
    if (media === "") return false;
    for (const n of needles) if (media.includes(n)) return true;
    return false;
  };
  // Content-Type values repeat heavily; a small memo avoids re-normalising them per message.
  const memo = new Map<string, boolean>();
  return (ct) => {
    if (ct === undefined) return false;
    let hit = memo.get(ct);
    if (hit === undefined) {
      if (memo.size >= 256) memo.clear();
      hit = match(ct);
      memo.set(ct, hit);
    }
    return hit;
  };
}
