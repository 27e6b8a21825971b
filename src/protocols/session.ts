/**
 * The protocol seam. A connection's application bytes (socket payload, or TLS plaintext for a
 * TLS connection) go to exactly one ProtocolSession at a time, chosen by the detector
 * (detect.ts) from the connection's first bytes. A session turns bytes into Exchanges; the span
 * builder (spans/builder.ts) writes the shared part of every span (process, peers, resource,
 * trace context, custom attributes) and asks the exchange for the protocol's own attributes.
 *
 * Contracts:
 * - Bytes arrive per sender in stream order, contiguous with what came before from that sender;
 *   what is missing between them is announced with gap() first. The byte views are only valid
 *   during the call: a session copies what it keeps.
 * - `callEnd` is true on the last chunk of one syscall (or TLS call): protocols that must
 *   resynchronise after a gap (HTTP/2 frame headers) may only do so at such a boundary.
 * - A session never throws. Malformed input is reported through env.error and counted; what it
 *   cannot know is flagged on the exchange, never guessed.
 * - Timestamps are CLOCK_MONOTONIC nanoseconds as carried by kernel events.
 */
import type { Attributes } from "../spans/span.ts";

/** Which endpoint of the connection sent the bytes. */
export type Sender = "client" | "server";

export type ProtocolName = "http1" | "http2";

export interface ProtocolSession {
  readonly protocol: ProtocolName;
  data(from: Sender, bytes: Uint8Array, tsNs: bigint, callEnd: boolean): void;
  /** `n` bytes from `from` were not seen here. lost: capture loss (ring overflow, attached late);
   * otherwise cut on purpose (per-call capture cap, sendfile), which is not an error. */
  gap(from: Sender, n: number, tsNs: bigint, lost: boolean): void;
  /** The connection ended (close, socket gone, process gone): emit what is pending, flagged. */
  close(tsNs: bigint): void;
  /** Housekeeping at most every few seconds: long-lived streams past their age are emitted. */
  tick?(nowNs: bigint): void;
}

/** What a session is handed when another session switches to it (HTTP/1 101 → h2c). */
export interface Handoff {
  /** The upgrade request, which becomes stream 1 of the new protocol (h2c). */
  upgradeRequest?: {
    method: string;
    target: string;
    headers: [string, string][];
    startNs: bigint;
    endNs: bigint;
  };
  /** Decoded HTTP2-Settings header payload of the upgrade request (SETTINGS frame payload). */
  settings?: Uint8Array;
}

/** What a session may use; provided per connection by the pipeline. */
export interface SessionEnv {
  /** Bytes of a body kept at most (data_capture.body_max_size_bytes). */
  readonly bodyMaxSize: number;
  /** Whether a body with this Content-Type is kept as text (data_capture.allowed_content_types). */
  keepBody(contentType: string | undefined): boolean;
  /** A finished exchange. */
  emit(x: Exchange): void;
  /** Malformed input from `from` (counted as ReqParsingErrors / ResParsingErrors). */
  error(from: Sender, reason: string): void;
  /** A named protocol counter for the stats line (e.g. "Http2UnknownHpackIndex"). */
  count(name: string, n?: number): void;
  /** Replaces this connection's session with one of `protocol`; bytes after the switch go to the
   * returned session (the caller feeds the rest of the current chunk to it). */
  handoff(protocol: ProtocolName, init: Handoff): ProtocolSession;
}

/** The protocol-neutral result of one request/response (or one HTTP/2 stream). */
export interface Exchange {
  readonly protocol: ProtocolName;
  /** First request byte, last response byte (or last request byte when no response came). */
  readonly startNs: bigint;
  readonly endNs: bigint;
  /** Something about this exchange is not known for certain (loss, parse trouble, cut off). */
  readonly partial: boolean;
  /** No response was seen before the connection or stream ended. */
  readonly responseMissing: boolean;
  /** Span name per the semantic conventions ("GET /users", "pkg.Service/Method"). */
  readonly name: string;
  /** "host[:port]" the request was addressed to (Host, :authority, absolute-form target). */
  readonly authority: string | undefined;
  /** The request's W3C traceparent header, when it carried one. */
  readonly traceparent: string | undefined;
  /** Whether the span is an error per the conventions of this protocol; `client`: the traced
   * process is the client. */
  isError(client: boolean): boolean;
  /** Writes the protocol's own attributes (method, url.*, status, headers, bodies, flags). */
  writeAttributes(attrs: Attributes, client: boolean): void;
}
